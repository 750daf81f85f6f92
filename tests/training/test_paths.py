import pytest

from training.config import ConfigError, from_dict
from training.paths import check_paths, data_roots, local_paths


@pytest.fixture
def tree(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for d in (allowed, other):
        d.mkdir()
        (d / "data.jsonl").write_text('{"prompt": "a", "answer": "1"}\n')
    (allowed / "sneaky").symlink_to(other)
    return allowed, other


def test_roots_come_from_the_environment(monkeypatch, tree):
    allowed, other = tree
    monkeypatch.setenv("PTLAB_DATA_ROOTS", f"{allowed}:{other}/")
    assert data_roots() == [allowed.resolve(), other.resolve()]
    assert data_roots("") == []


def test_every_local_path_of_a_config_is_found(tree):
    allowed, _ = tree
    cfg = from_dict({"method": "ppo", "model": str(allowed), "task": str(allowed / "data.jsonl"),
                     "dataset": {"path": str(allowed / "data.jsonl")}, "gold_reward": {"kind": "judge", "model": "tiny"},
                     "reward": {"kind": "weighted_sum", "signals": [{"kind": "reward_model", "path": "/rm"}, "format"]},
                     "monitors": [{"kind": "pairwise_judge", "model": "./judge"}, {"kind": "judge", "model": "org/x"}]})
    assert [k for k, _ in local_paths(cfg)] == ["model", "task", "dataset", "reward", "monitors"]


def test_paths_outside_the_roots_are_refused(tree):
    allowed, other = tree
    roots = data_roots(str(allowed))
    check_paths(from_dict({"method": "sft", "dataset": str(allowed / "data.jsonl")}), roots)
    check_paths(from_dict({"method": "sft", "model": "tiny", "dataset": "org/hub-dataset"}), roots)
    for data in ({"method": "sft", "dataset": str(other / "data.jsonl")},
                 {"method": "sft", "dataset": str(allowed / "sneaky" / "data.jsonl")},  # a symlink out of the root
                 {"method": "sft", "dataset": str(allowed / ".." / "other" / "data.jsonl")},
                 {"method": "grpo", "reward": {"kind": "reward_model", "path": str(other)}}):
        with pytest.raises(ConfigError, match="outside the folders this server may read") as err:
            check_paths(from_dict(data), roots)
        assert err.value.key in ("dataset", "reward")
    with pytest.raises(ConfigError, match="none configured"):
        check_paths(from_dict({"method": "sft", "model": str(allowed)}), [])
