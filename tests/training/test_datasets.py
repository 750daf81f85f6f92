"""Users' datasets: each format with a bad row, the column guesser, the methods a mapping feeds, the content
hash, the fixed split, and runs trained on a mapped Parquet file."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.training.conftest import FAST, MemorySink
from training.config import ConfigError, from_dict
from training.tasks import DatasetError, DatasetSpec, DatasetTask, get_task, guess_mapping, methods_for
from training.tasks.dataset import content_hash, read_rows

ROWS = [{"question": f"What is {a} times 3?", "solution": f"{a} * 3 = {3 * a}", "good": f"#### {3 * a}",
         "bad": f"#### {3 * a + 1}", "answer": 3 * a, "topic": "maths"} for a in range(30)]
MAPPING = {"prompt": "question", "completion": "solution", "chosen": "good", "rejected": "bad", "answer": "answer"}


def write_jsonl(path, rows, blank_after=None):
    lines = [json.dumps(r) for r in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv(path, text):
    path.write_text(text)
    return path


def load(path, mapping=None, **kw):
    return DatasetTask({"path": str(path), "mapping": mapping or {}, **kw})


def test_jsonl_with_a_guessed_mapping(tmp_path):
    task = load(write_jsonl(tmp_path / "d.jsonl", ROWS))
    assert task.mapping == {"prompt": "question", "completion": "solution", "chosen": "good", "rejected": "bad",
                            "answer": "answer"}
    assert task.methods() == ("sft", "dpo", "reward", "ppo", "grpo", "rloo")
    ex = task.examples()[4]
    assert ex.prompt == "What is 4 times 3?" and ex.reference == "4 * 3 = 12" and ex.rejected == "#### 13"
    assert ex.columns == {"topic": "maths", "reference": "4 * 3 = 12", "answer": "12"}  # extras go to rewards
    assert task.sft_rows() and task.dpo_rows() and task.rl_rows()[0]["topic"] == "maths"


@pytest.mark.parametrize(("lines", "line", "row", "column", "reason"), [
    (['{"prompt": "a", "answer": "1"}', "", '{"prompt": "b", "answer": "2"'], 3, 1, None, "not valid JSON"),
    (['{"prompt": "a", "answer": "1"}', "[1, 2]"], 2, 1, None, "must be a JSON object"),
    (['{"prompt": "a", "answer": "1"}', '{"prompt": "b"}'], 2, 1, "answer", "is missing"),
    (['{"prompt": "a", "answer": "1"}', "", "", '{"prompt": "  ", "answer": "2"}'], 4, 1, "prompt", "is empty"),
    (['{"prompt": "a", "answer": null}'], 1, 0, "answer", "must be text, got null"),
    (['{"prompt": ["x"], "answer": "1"}'], 1, 0, "prompt", "must be text, got list"),
])
def test_bad_jsonl_rows_name_line_row_and_column(tmp_path, lines, line, row, column, reason):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DatasetError) as err:
        load(path, {"prompt": "prompt", "answer": "answer"})
    e = err.value
    assert (e.line, e.row, e.column) == (line, row, column) and reason in e.reason
    assert str(e).startswith(f"dataset: line {line}, row {row}")


def test_csv_loads_and_a_bad_row_names_its_line(tmp_path):
    good = write_csv(tmp_path / "ok.csv", 'prompt,answer,note\n"two\nlines",4,x\nb,5,y\n')
    task = load(good)
    assert task.mapping == {"prompt": "prompt", "answer": "answer"}
    assert [ex.columns["answer"] for ex in task.examples()] == ["4", "5"]
    assert task.methods() == ("ppo", "grpo", "rloo")
    ragged = write_csv(tmp_path / "bad.csv", 'prompt,answer\n"two\nlines",4\nb,5,extra\n')
    with pytest.raises(DatasetError, match=r"line 4, row 1: has 3 fields; the header has 2"):
        load(ragged)
    empty = write_csv(tmp_path / "empty.csv", "prompt,answer\na,1\n,2\n")
    with pytest.raises(DatasetError, match=r"line 3, row 1, column 'prompt': prompt is empty"):
        load(empty)
    with pytest.raises(DatasetError, match="repeated column"):
        load(write_csv(tmp_path / "dup.csv", "prompt,prompt\na,b\n"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("prompt,answer\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load(latin)


def test_parquet_loads_and_a_bad_row_names_row_and_column(tmp_path):
    task = load(write_parquet(tmp_path / "d.parquet", ROWS), MAPPING)
    assert len(task.examples()) == 30 and task.examples()[0].columns["answer"] == "0"
    rows = [dict(r) for r in ROWS]
    rows[7]["good"] = None
    with pytest.raises(DatasetError) as err:
        load(write_parquet(tmp_path / "bad.parquet", rows), MAPPING)
    assert (err.value.row, err.value.column, err.value.line) == (7, "good", None)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load(tmp_path / "broken.parquet")


def test_saved_folders_and_splits(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert len(load(tmp_path / "one").examples()) == 30
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:10]),
                          "test": datasets.Dataset.from_list(ROWS[10:])}).save_to_disk(str(tmp_path / "dict"))
    assert len(load(tmp_path / "dict", split="test").examples()) == 20
    with pytest.raises(DatasetError, match="no split 'dev'; the dataset has train, test"):
        load(tmp_path / "dict", split="dev")


def test_missing_sources_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no such file or folder"):
        load("./nowhere")


@pytest.mark.parametrize(("columns", "want"), [
    (["question", "answer"], {"prompt": "question", "answer": "answer"}),
    (["Instruction", "Output", "id"], {"prompt": "Instruction", "completion": "Output"}),
    (["prompt", "chosen", "rejected"], {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
    (["messages", "prompt"], {"messages": "messages"}),
    (["problem", "solution", "final_answer"], {"prompt": "problem", "completion": "solution",
                                               "answer": "final_answer"}),
    (["text"], {}),
])
def test_guesser(columns, want):
    assert guess_mapping(columns) == want


def test_methods_a_mapping_feeds():
    assert methods_for({"prompt": "p"}) == ("ppo", "grpo", "rloo")
    assert methods_for({"prompt": "p", "completion": "c"}) == ("sft", "ppo", "grpo", "rloo")
    assert methods_for({"messages": "m"}) == ("sft", "ppo", "grpo", "rloo")
    assert methods_for({"prompt": "p", "chosen": "c", "rejected": "r"}) == ("dpo", "reward", "ppo", "grpo", "rloo")
    assert methods_for({"completion": "c"}) == ()


def test_messages_end_with_the_completion(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}]
    task = load(write_jsonl(tmp_path / "m.jsonl", [{"messages": conv}, {"messages": conv[:2]}]))
    first, second = task.examples()
    assert first.chat() == conv[:2] and first.reference == "Hello." and second.reference == ""
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": conv}, {"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(DatasetError, match=r"row 1, column 'messages': message 0 must be"):
        load(bad)


def test_hash_is_the_content_whatever_the_file(tmp_path):
    a = load(write_jsonl(tmp_path / "a.jsonl", ROWS), MAPPING)
    b = load(write_parquet(tmp_path / "b.parquet", ROWS), MAPPING)
    assert a.hash == b.hash == content_hash(ROWS) and len(a.hash) == 64
    changed = [dict(r) for r in ROWS]
    changed[3]["topic"] = "Maths"
    assert content_hash(changed) != a.hash
    assert content_hash(ROWS[::-1]) != a.hash
    assert a.summary()["hash"] == a.hash and a.summary()["rows"] == 30


def test_split_is_fixed_by_the_data_alone(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    train, held = load(path, MAPPING).split()
    again = load(path, MAPPING).split()
    assert [e.prompt for e in again[1]] == [e.prompt for e in held]
    assert len(held) == 6 and not {e.prompt for e in train} & {e.prompt for e in held}
    shuffled = load(write_jsonl(tmp_path / "b.jsonl", ROWS[::-1]), MAPPING).split()
    assert [e.prompt for e in shuffled[1]] == [e.prompt for e in held]  # row order does not matter
    assert len(load(path, MAPPING, eval_fraction=0.5).split()[1]) == 15


@pytest.mark.parametrize(("dataset", "fragment"), [
    ({"path": "x.jsonl", "mapping": {"question": "q"}}, "unknown role 'question'"),
    ({"path": "x.jsonl", "mapping": {"prompt": "q", "answer": "q"}}, "mapped to two roles"),
    ({"path": "x.jsonl", "columns": {}}, "unknown key 'columns'"),
    ({"path": ""}, "path: name a file"),
    ({"path": "x.jsonl", "eval_fraction": 1.0}, "eval_fraction: must be between"),
])
def test_bad_dataset_specs_in_configs(dataset, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict({"method": "sft", "dataset": dataset})
    assert err.value.key == "dataset" and fragment in str(err.value)
    assert DatasetSpec  # the spec class is public for the web app's form


def test_word_problems_task():
    task = get_task("word_problems")
    train, held = task.split()
    assert len(train) == 320 and len(held) == 80
    ex = held[0]
    assert ex.reference.endswith(f"#### {ex.columns['answer']}") and "=" in ex.reference
    cols = {"answer": [e.columns["answer"] for e in held]}
    assert task.gold_reward([e.reference for e in held], cols)[0] == [1.0] * 80
    assert task.gold_reward([e.rejected for e in held], cols)[0] == [0.0] * 80
    assert [e.prompt for e in get_task("word_problems").examples()] == [e.prompt for e in task.examples()]


@pytest.fixture(scope="module")
def parquet_path(tmp_path_factory):
    rows = [{"q": r["question"], "demo": r["solution"], "yes": r["good"], "no": r["bad"], "gold": r["answer"]}
            for r in ROWS]
    return write_parquet(tmp_path_factory.mktemp("pq") / "data.parquet", rows)


@pytest.mark.parametrize("method", ["sft", "dpo", "grpo", "ppo", "reward"])
def test_a_mapped_parquet_dataset_trains(tmp_path, tiny_path, parquet_path, method):
    mapping = {"prompt": "q", "completion": "demo", "chosen": "yes", "rejected": "no", "answer": "gold"}
    extra = {"grpo": {"num_generations": 4, "batch_size": 8, "reward": "numeric_match"},
             "ppo": {"reward": "numeric_match"}}.get(method, {})
    cfg = from_dict({"method": method, **FAST, "max_steps": 2, **extra, "gold_reward": "numeric_match",
                     "dataset": {"path": str(parquet_path), "mapping": mapping}})
    sink = MemorySink()
    assert run_cfg(cfg, sink, tmp_path).step == 2
    summary = json.loads((tmp_path / "dataset.json").read_text())
    assert summary["hash"] == content_hash(read_rows(DatasetSpec(path=str(parquet_path))).rows)
    assert summary["eval"] == 6
    if method == "reward":  # held-out pairwise accuracy on the dataset's pairs
        assert {"eval/accuracy", "eval/margin"} <= sink.keys()
        return
    assert "eval/reward" in sink.keys()
    assert {s.prompt for s in sink.samples} <= {r["question"] for r in ROWS}


def test_a_method_the_mapping_cannot_feed_is_refused(tmp_path, parquet_path):
    cfg = from_dict({"method": "dpo", **FAST, "dataset": {"path": str(parquet_path), "mapping": {"prompt": "q"}}})
    with pytest.raises(DatasetError, match=r"dpo needs chosen and rejected; .* feeds only ppo, grpo, rloo"):
        run_cfg(cfg, MemorySink(), tmp_path)


def run_cfg(cfg, sink, out):
    from training.runner import run

    return run(cfg, sink, out)
