import pytest

from training.config import from_dict
from training.paths import local_paths, under_roots


@pytest.fixture
def tree(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for d in (allowed, other):
        d.mkdir()
        (d / "data.jsonl").write_text('{"prompt": "a", "answer": "1"}\n')
    (allowed / "sneaky").symlink_to(other)
    return allowed, other


def test_every_local_path_of_a_config_is_found(tree):
    allowed, _ = tree
    cfg = from_dict({"method": "ppo", "model": str(allowed), "task": str(allowed / "data.jsonl"),
                     "dataset": {"path": str(allowed / "data.jsonl")}, "gold_reward": {"kind": "judge", "model": "tiny"},
                     "reward": {"kind": "weighted_sum", "signals": [{"kind": "reward_model", "path": "/rm"}, "format"]},
                     "monitors": [{"kind": "pairwise_judge", "model": "./judge"}, {"kind": "judge", "model": "org/x"}]})
    assert [k for k, _ in local_paths(cfg)] == ["model", "task", "dataset", "reward", "monitors"]


def test_the_one_test_of_a_path_under_roots(tree):
    allowed, other = tree
    assert under_roots(str(allowed / "data.jsonl"), [allowed]) and under_roots(str(allowed), [allowed])
    assert under_roots(str(allowed / "missing.jsonl"), [allowed])  # existence is not its business
    for path in (str(other / "data.jsonl"), str(allowed / "sneaky" / "data.jsonl"),  # a symlink out of the root
                 f"{allowed}/../other/data.jsonl", "data.jsonl", "~/data.jsonl", f"{allowed}/\x00x", f"{allowed}x"):
        assert not under_roots(path, [allowed]), path
    assert not under_roots(str(allowed), [])


def test_a_hub_dataset_is_no_path(tree, monkeypatch):
    allowed, _ = tree
    monkeypatch.chdir(allowed.parent)
    cfg = from_dict({"method": "sft", "dataset": {"path": "allowed", "hub": True}})  # a folder of that name here
    assert local_paths(cfg) == []
    assert [k for k, _ in local_paths(from_dict({"method": "sft", "dataset": {"path": "allowed"}}))] == ["dataset"]
