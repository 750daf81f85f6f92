"""Signals in run configs: the training signal, the gold signal and monitors, through the real runner."""

import pytest

from tests.training.conftest import FAST, MemorySink
from training.config import ConfigError, from_dict
from training.runner import run


@pytest.mark.parametrize(("data", "key", "fragment"), [
    ({"method": "grpo", "reward": "nope"}, "reward", "unknown signal 'nope'"),
    ({"method": "ppo", "reward": {"kind": "numeric_match", "tolerance": -1}}, "reward", "tolerance: must be between"),
    ({"method": "grpo", "reward": "format", "reward_model": "/x"}, "reward", "not both"),
    ({"method": "sft", "gold_reward": {"kind": "judge", "template": "x"}}, "gold_reward", "template: must contain"),
    ({"method": "sft", "monitors": ["length", "length"]}, "monitors", "share a name"),
    ({"method": "sft", "monitors": ["length", 5]}, "monitors", "signal 1: kind:"),
    ({"method": "sft", "monitors": "length"}, "monitors", "must be a list"),
    ({"method": "sft", "reward": "format"}, "reward", "unknown key"),
])
def test_bad_signal_specs_name_the_config_key(data, key, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert err.value.key == key and fragment in str(err.value)


def test_json_text_from_forms_is_parsed():
    cfg = from_dict({"method": "grpo", "monitors": '["length", {"kind": "format", "name": "f"}]',
                     "reward": '{"kind": "numeric_match", "tolerance": 0.5}', "gold_reward": "exact_match"})
    assert cfg.monitors[1] == {"kind": "format", "name": "f"} and cfg.reward["tolerance"] == 0.5
    assert from_dict({"method": "sft", "monitors": "[]"}).monitors == []
    assert from_dict({"method": "sft", "monitors": ""}).monitors == []
    with pytest.raises(ConfigError, match="monitors: not valid JSON"):
        from_dict({"method": "sft", "monitors": "[length]"})


def test_defaults_keep_the_tasks_gold_reward():
    cfg = from_dict({"method": "grpo"})
    assert cfg.reward == "" and cfg.gold_reward == "" and cfg.monitors == []
    assert cfg.training_signal() == "task"
    assert from_dict({"method": "ppo", "reward_model": "/rm"}).training_signal() == {"kind": "reward_model",
                                                                                     "path": "/rm"}
    specs = {s["name"]: s for s in type(cfg).field_specs()}
    assert specs["monitors"]["default"] == [] and specs["reward"]["type"] == "a string or a JSON object"


def test_grpo_trains_on_one_signal_and_is_judged_by_another(tmp_path, tiny_path):
    cfg = from_dict({"method": "grpo", **FAST, "num_generations": 4, "batch_size": 8, "max_steps": 2,
                     "reward": {"kind": "length", "name": "short", "target": 3, "unit": "chars"},
                     "gold_reward": "numeric_match",
                     "monitors": ["valid_json", {"kind": "format", "name": "digits", "pattern": r"\d+"}]})
    sink = MemorySink()
    result = run(cfg, sink, tmp_path)
    assert result.step == 2
    keys = {"eval/reward", "eval/proxy_reward", "eval/reward/valid_json", "eval/reward/digits"}
    assert keys <= sink.keys()
    assert [s for s, _ in sink.series("eval/proxy_reward")] == [0, 2]
    assert all(0.0 <= v <= 1.0 for k in keys for _, v in sink.series(k))
    # samples carry the gold reward: numeric_match is 0 or 1
    assert {s.reward for s in sink.samples} <= {0.0, 1.0}
    assert "train/rewards/short/mean" in sink.keys()  # TRL logs the training signal by its name


def test_same_training_and_gold_signal_logs_no_proxy(tmp_path, tiny_path):
    cfg = from_dict({"method": "ppo", **FAST, "max_steps": 1, "reward": "numeric_match",
                     "gold_reward": "numeric_match"})
    sink = MemorySink()
    run(cfg, sink, tmp_path)
    assert "eval/reward" in sink.keys() and "eval/proxy_reward" not in sink.keys()


def test_a_trained_reward_model_rewards_ppo_judged_by_a_verifier(tmp_path, tiny_path):
    rm = run(from_dict({"method": "reward", **FAST, "max_steps": 2}), MemorySink(), tmp_path / "rm")
    cfg = from_dict({"method": "ppo", **FAST, "max_steps": 2, "gold_reward": "numeric_match",
                     "reward": {"kind": "reward_model", "name": "rm", "path": str(rm.model_dir)},
                     "monitors": [{"kind": "pairwise_judge", "model": str(tiny_path), "column": "answer"}]})
    sink = MemorySink()
    assert run(cfg, sink, tmp_path / "ppo").step == 2
    proxy = [v for _, v in sink.series("eval/proxy_reward")]
    assert len(proxy) == 2 and all(isinstance(v, float) for v in proxy)
    assert {v for _, v in sink.series("eval/reward")} <= {i / 6 for i in range(7)}  # 6 samples scored 0 or 1
    assert all(0 < v < 1 for _, v in sink.series("eval/reward/pairwise_judge"))
