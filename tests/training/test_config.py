import json

import pytest

from training.config import CONFIG_CLASSES, ConfigError, GRPOConfig, from_dict, load


def test_defaults_for_every_method_are_valid():
    for method in CONFIG_CLASSES:
        cfg = from_dict({"method": method})
        assert cfg.method == method and cfg.model == "tiny" and cfg.max_steps >= 1


def test_every_field_has_help_text():
    for cls in CONFIG_CLASSES.values():
        for spec in cls.field_specs():
            assert spec["help"], f"{cls.__name__}.{spec['name']} has no help"


@pytest.mark.parametrize(("data", "key", "fragment"), [
    ({"method": "nope"}, "method", "must be one of sft, dpo, ppo, grpo, rloo"),
    ({"method": "sft", "learning_rat": 0.1}, "learning_rat", "unknown key"),
    ({"method": "dpo", "beta": "high"}, "beta", "must be a number"),
    ({"method": "sft", "max_steps": 0}, "max_steps", "between 1 and"),
    ({"method": "sft", "max_steps": 2.5}, "max_steps", "must be an integer"),
    ({"method": "sft", "lora": 1}, "lora", "true or false"),
    ({"method": "dpo", "loss_type": "magic"}, "loss_type", "sigmoid, ipo, hinge"),
    ({"method": "grpo", "batch_size": 6, "num_generations": 4}, "batch_size", "divisible by num_generations"),
    ({"method": "ppo", "batch_size": 6, "num_minibatches": 4}, "num_minibatches", "must divide batch_size"),
    ({"method": "sft", "task": "/nowhere/data.jsonl"}, "task", "no such JSONL file"),
])
def test_bad_values_name_the_key(data, key, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert err.value.key == key
    assert fragment in str(err.value)


def test_ints_are_accepted_for_floats_and_roundtrip(tmp_path):
    cfg = from_dict({"method": "grpo", "beta": 0, "learning_rate": 1})
    assert isinstance(cfg, GRPOConfig) and cfg.beta == 0
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert load(path) == cfg
    assert json.loads(cfg.to_json())["method"] == "grpo"


def test_invalid_json_file_names_the_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"method": "sft",\n "seed": }')
    with pytest.raises(ConfigError, match="line 2"):
        load(path)


def test_eval_task_names_where_the_evaluation_draws_from(tmp_path):
    """A later round's DPO run trains on vote pairs and is evaluated on its experiment's prompts."""
    from training.tasks import eval_task_for, get_task

    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "bb"}) + "\n" for i in range(10)))
    cfg = from_dict({"method": "dpo", "dataset": {"path": str(path)}, "eval_task": "arithmetic"})
    measured = eval_task_for(cfg)
    assert measured.name == get_task("arithmetic").name
    assert [e.prompt for e in measured.eval_examples(4)] == [e.prompt for e in get_task("arithmetic").eval_examples(4)]
    assert eval_task_for(from_dict({"method": "dpo"})) is None
    with pytest.raises(ConfigError, match="eval_task"):
        from_dict({"method": "dpo", "eval_task": {"path": ""}})
