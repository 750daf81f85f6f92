import json

import pytest

from training.tasks import BUILTIN_TASKS, JSONLError, JSONLTask, get_task, parse_jsonl


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_builtin_tasks_are_complete_and_eval_is_held_out(name):
    task = BUILTIN_TASKS[name]
    train, held = task.split()
    assert train and held
    assert not {ex.prompt for ex in train} & {ex.prompt for ex in held}
    assert task.sft_rows() and task.dpo_rows() and task.rl_rows()
    # the split is fixed: a second call gives the same eval prompts in the same order
    assert [ex.prompt for ex in task.split()[1]] == [ex.prompt for ex in held]
    refs = [ex.reference for ex in held]
    rejected = [ex.rejected for ex in held]
    cols = {k: [ex.columns[k] for ex in held] for k in held[0].columns}
    good, _ = task.gold_reward(refs, cols)
    bad, _ = task.gold_reward(rejected, cols)
    assert sum(good) / len(good) > sum(bad) / len(bad)


def test_arithmetic_reward_credits_the_right_sum():
    reward = get_task("arithmetic").reward_fn()
    assert reward(["7", "The answer is 7", "8", "", [{"role": "assistant", "content": "7"}]], answer=["7"] * 5) == [
        1.0, 1.0, 0.4, 0.0, 1.0]


def test_sentiment_reward_is_vader_compound():
    reward = get_task("sentiment").reward_fn()
    pos, neg = reward(["I love it, wonderful!", "Awful and terrible."])
    assert pos > 0.5 and neg < -0.5


def test_format_reward_components():
    task = get_task("format")
    total, parts = task.gold_reward(['{"country": "Peru", "capital": "Lima"}', '{"city": "Lima"}', "Lima"],
                                    {"country": ["Peru"] * 3})
    assert parts["json_shape"] == [1.0, 0.5, 0.0]
    assert parts["country_echo"] == [1.0, 0.0, 0.0]
    assert total == [1.0, 0.25, 0.0]


def test_jsonl_loads_all_three_shapes(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "chosen": "d", "rejected": "e"},
            {"prompt": "f", "answer": "g"}]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    task = get_task(str(path))
    assert isinstance(task, JSONLTask) and len(task.examples()) == 3
    assert task.gold_reward(["g"], {"reference": ["g"]})[0] == [1.0]


@pytest.mark.parametrize(("text", "line", "reason"), [
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "b"', 2, "not valid JSON"),
    ('{"prompt": "a", "completion": "b"}\n\n["x"]', 3, "must be a JSON object"),
    ('{"prompt": "a", "answer": 3}', 1, "'answer' must be a string"),
    ('{"prompt": "a", "chosen": "b"}', 1, "expected one of"),
    ('{"prompt": " ", "completion": "b"}', 1, "'prompt' is empty"),
    ("", 1, "no rows"),
])
def test_bad_jsonl_lines_are_rejected_with_their_number(text, line, reason):
    with pytest.raises(JSONLError) as err:
        parse_jsonl(text)
    assert err.value.line == line
    assert reason in err.value.reason
    assert str(err.value).startswith(f"line {line}:")
