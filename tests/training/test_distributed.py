"""One run on two processes through the CLI (`accelerate launch`, 2 CPU processes joined with gloo), and the
pieces of training/distributed.py that a single process can check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import FAST, MemorySink
from training import distributed
from training.config import from_dict

ROOT = Path(__file__).resolve().parents[2]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def no_duplicates(rows: list[dict]) -> bool:
    seen = [(r["step"], k) for r in rows for k in r if k not in ("step", "time")]
    return len(seen) == len(set(seen))


@pytest.mark.parametrize("method", ["sft", "ppo"])
def test_cli_trains_on_two_processes_logs_once_and_resumes(tmp_path, tiny_path, method):
    config = {"method": method, **FAST, "max_steps": 4, "checkpoint_every": 2, "num_processes": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "training", "run", str(path), "--out", str(out)]
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = metrics(out)
    assert no_duplicates(rows)
    assert sorted({r["step"] for r in rows if "eval/kl" in r}) == [0, 2, 4]
    assert sorted(r["step"] for r in rows if any(k.startswith("train/loss") for k in r)) == [1, 2, 3, 4]
    assert (out / "model" / "config.json").is_file() and (out / "checkpoints" / "checkpoint-4").is_dir()
    if method == "ppo":  # each process's random state is kept, for an exact resume
        assert {p.name for p in (out / "checkpoints" / "checkpoint-4").glob("rng_state_*.pt")} == {
            "rng_state_0.pt", "rng_state_1.pt"}
    path.write_text(json.dumps({**config, "max_steps": 6}))  # two more steps: resumed from checkpoint-4
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = metrics(out)
    assert no_duplicates(rows)
    assert sorted(r["step"] for r in rows if any(k.startswith("train/loss") for k in r)) == [1, 2, 3, 4, 5, 6]


def test_a_single_process_run_refuses_a_config_for_several(tmp_path):
    from training.runner import run

    with pytest.raises(ValueError, match="asks for 2 processes"):
        run(from_dict({"method": "sft", **FAST, "num_processes": 2}), MemorySink(), tmp_path)


def test_rank_sink_in_one_process_is_the_sink():
    sink = MemorySink(stop_at=1)
    ranked = distributed.RankSink(sink)
    ranked.log_metrics(1, {"a": 1.0})
    assert sink.metrics == [(1, {"a": 1.0})] and ranked.attempt == "local"
    assert distributed.broadcast(5) == 5 and distributed.mean({"x": 2.0}) == {"x": 2.0}


def test_launch_command():
    cmd = distributed.launch_command(4, ["webapp.workers.rank", "7", "2", "/tmp/r"])
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[cmd.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" in cmd and cmd[-5:] == ["-m", "webapp.workers.rank", "7", "2", "/tmp/r"]
    cmd = distributed.launch_command(8, ["training.distributed", "c.json", "out"], config_file="/etc/ptlab/fsdp.yaml")
    assert "--multi_gpu" not in cmd and cmd[cmd.index("--config_file") + 1] == "/etc/ptlab/fsdp.yaml"


def test_ppo_processes_must_split_the_minibatches():
    from training.config import ConfigError

    with pytest.raises(ConfigError) as e:
        from_dict({"method": "ppo", "batch_size": 8, "num_minibatches": 4, "num_processes": 4})
    assert e.value.key == "num_processes"
    assert from_dict({"method": "ppo", "batch_size": 8, "num_minibatches": 2, "num_processes": 2}).num_processes == 2
