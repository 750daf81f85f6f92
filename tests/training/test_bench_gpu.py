"""bench/gpu.py, the GPU benchmark, runs end to end on the CPU (--smoke), so it is known to work before a GPU
is lent."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def test_gpu_bench_smoke(tmp_path, tiny_path):
    import gpu

    out = tmp_path / "figures.json"
    assert gpu.main(["--smoke", "--methods", "sft,grpo,ppo", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sft", "grpo", "ppo"}
    for r in rows.values():
        assert r["s_step"] > 0 and r["tokens_s"] > 0 and 0 < r["mfu"] and 0 < r["default_run_eval_share"] < 1
        assert 0 <= r["share_generation"] <= 1
    assert rows["sft"]["gen_tokens_s"] is None and rows["grpo"]["gen_tokens_s"] > 0
    assert rows["grpo"]["share_generation"] > 0
