import math
import sys
import textwrap

import pytest

from training.rewards import SignalError, build, describe, plugins
from training.rewards.verifiers import extract_number

CHAT = [{"role": "assistant", "content": "The answer is 12."}]


def score(spec, completions, **columns):
    return build(spec)(completions, **columns)


@pytest.mark.parametrize(("text", "how", "want"), [
    ("so 3 + 4 = 7", "auto", 7.0),
    ("first 2, then #### 1,234 and 9 later", "auto", 1234.0),
    ("#### 5 but \\boxed{6}", "auto", 6.0),
    ("\\boxed{ -2.5 }", "boxed", -2.5),
    ("no digits here", "auto", None),
    ("", "last", None),
    ("#### 7", "boxed", None),
    ("costs .5 dollars", "last", 0.5),
])
def test_extract_number(text, how, want):
    assert extract_number(text, how) == want


def test_numeric_match_with_tolerance_and_malformed_outputs():
    comps = ["#### 42", "The answer is 41.9", "\\boxed{42}", "forty-two", "", "4 2", CHAT, "42" * 200]
    answers = ["42", "42", "#### 42", "42", "42", "42", 12, "42"]
    assert score("numeric_match", comps, answer=answers) == [1, 0, 1, 0, 0, 0, 1, 0]
    assert score({"kind": "numeric_match", "tolerance": 0.15}, comps[:2], answer=answers[:2]) == [1, 1]
    assert score({"kind": "numeric_match", "relative_tolerance": 0.01}, ["99.5"], answer=["100"]) == [1.0]
    assert score({"kind": "numeric_match", "extract": "hash"}, ["42", "#### 42"], answer=["42", "42"]) == [0, 1]


def test_numeric_match_names_a_bad_answer_row_and_a_missing_column():
    with pytest.raises(SignalError, match=r"row 1: column 'answer' holds no number"):
        score("numeric_match", ["1", "2"], answer=["1", "n/a"])
    with pytest.raises(SignalError, match=r"needs the column 'answer'; the data passes: reference"):
        score("numeric_match", ["1"], reference=["1"])


def test_exact_match():
    comps = ["Paris", "  paris. ", "Paris, France", "", [{"role": "assistant", "content": "PARIS"}]]
    assert score("exact_match", comps, answer=["Paris"] * 5) == [1, 1, 0, 0, 1]
    assert score({"kind": "exact_match", "normalize": False}, comps[:2], answer=["Paris"] * 2) == [1, 0]


def test_regex_match_compares_the_group_or_only_finds():
    comps = ["Answer: Blue", "answer: blue.", "Answer: red", "no answer", "Answer:"]
    assert score("regex_match", comps, answer=["blue"] * 5) == [1, 1, 0, 0, 0]
    assert score({"kind": "regex_match", "pattern": r"\d+", "column": ""}, ["a1", "b"]) == [1, 0]
    with pytest.raises(SignalError, match="pattern: not a valid regular expression"):
        build({"kind": "regex_match", "pattern": "(unclosed"})


def test_format_needs_the_whole_completion_to_match():
    spec = {"kind": "format", "pattern": r"<think>.*</think>\s*Answer: \d+"}
    comps = ["<think>2+2</think>\nAnswer: 4", "  <think>\nx\n</think>Answer: 4  ", "Answer: 4",
             "<think>x</think> Answer: 4 and more", ""]
    assert score(spec, comps) == [1, 1, 0, 0, 0]


def test_length_target():
    spec = {"kind": "length", "target": 4, "slack": 1}
    assert score(spec, ["a b c d", "a b c", "a b", "", "a b c d e f g h i j"]) == [1, 1, 0.75, 0.25, 0]
    assert score({"kind": "length", "target": 5, "unit": "chars"}, ["abcde", "abcdefghij"]) == [1, 0]
    with pytest.raises(SignalError, match="target: must be between 1"):
        build({"kind": "length", "target": 0})


def test_valid_json():
    comps = ['{"a": 1}', "[1, 2]", "```json\n{\"a\": 2}\n```", "{'a': 1}", "", '{"a": 1', "1e999999", "null"]
    assert score("valid_json", comps) == [1, 1, 1, 0, 0, 0, 1, 1]
    assert score({"kind": "valid_json", "keys": ["a"]}, comps[:4]) == [1, 0, 1, 0]
    assert score({"kind": "valid_json", "require_object": True, "allow_fences": False}, comps[:3]) == [1, 0, 0]
    with pytest.raises(SignalError, match="keys: must be a list"):
        build({"kind": "valid_json", "keys": "a"})


def test_multiple_choice():
    comps = ["B", "it is a cat: (B)", "The answer is C.", "Answer: D", "A or B?", "I pick B. Answer: C", "Because", "", "Bob"]
    assert score("multiple_choice", comps, answer=["B", "B", "C", "D", "A", "C", "B", "B", "B"]) == [
        1, 1, 1, 1, 0, 1, 0, 0, 0]
    with pytest.raises(SignalError, match="letters"):
        build({"kind": "multiple_choice", "letters": "AAB"})


def test_token_f1():
    got = score("token_f1", ["the cat sat", "cat", "", "dog"], reference=["The cat sat."] * 4)
    assert got[0] == 1.0 and got[1] == pytest.approx(0.5) and got[2:] == [0.0, 0.0]


def test_sentiment_is_vader_and_can_be_negated():
    pos, neg = score("sentiment", ["I love it, wonderful!", "Awful and terrible."])
    assert pos > 0.5 and neg < -0.5
    assert score({"kind": "sentiment", "positive": False}, ["I love it, wonderful!"])[0] == -pos


def test_weighted_sum():
    spec = {"kind": "weighted_sum", "name": "mix",
            "signals": [{"kind": "numeric_match"}, {"kind": "format", "pattern": r"#### \d+"}], "weights": [0.8, 0.2]}
    s = build(spec)
    assert s.__name__ == "mix"
    got = s(["#### 5", "5", "#### 6", "x"], answer=["5"] * 4)
    assert got == pytest.approx([1.0, 0.8, 0.2, 0.0])
    assert build({"kind": "weighted_sum", "signals": ["format", "length"]})._weights == [0.5, 0.5]
    with pytest.raises(SignalError, match="weights: has 1 weights for 2 signals"):
        build({"kind": "weighted_sum", "signals": ["format", "length"], "weights": [1]})
    with pytest.raises(SignalError, match="signals: signal 1: kind: unknown signal 'nope'"):
        build({"kind": "weighted_sum", "signals": ["format", "nope"]})


@pytest.mark.parametrize(("spec", "key", "fragment"), [
    ("nope", "kind", "unknown signal 'nope'"),
    (3, "kind", "a kind or an object"),
    ({"kind": "exact_match", "colum": "x"}, "colum", "unknown parameter of exact_match"),
    ({"kind": "numeric_match", "tolerance": "1"}, "tolerance", "must be a number"),
    ({"kind": "numeric_match", "extract": "first"}, "extract", "must be one of auto, boxed"),
    ({"kind": "format", "name": "a b"}, "name", "letters, digits"),
    ({"kind": "reward_model"}, "path", "name the reward model"),
    ({"kind": "judge", "template": "no placeholder"}, "template", "{completion}"),
    ({"kind": "judge", "scores": ["1"]}, "scores", "at least two"),
    ({"kind": "pairwise_judge", "template": "{first} only"}, "template", "{second}"),
    ({"kind": "pairwise_judge", "label_second": "A"}, "label_second", "different"),
])
def test_bad_specs_name_the_parameter(spec, key, fragment):
    with pytest.raises(SignalError) as err:
        build(spec)
    assert err.value.key == key and fragment in str(err.value)


def test_every_signal_is_described_with_help_for_each_parameter():
    kinds = {d["kind"]: d for d in describe()}
    assert {"exact_match", "numeric_match", "regex_match", "format", "length", "valid_json", "multiple_choice",
            "token_f1", "sentiment", "weighted_sum", "reward_model", "judge", "pairwise_judge", "task"} <= set(kinds)
    for d in kinds.values():
        assert d["description"] and all(p["help"] for p in d["params"])


def test_every_verifier_returns_floats_in_range_on_odd_input():
    odd = ["", " ", "\x00", "💥" * 50, "{" * 1000, "#### ", "\\boxed{}", [{"role": "assistant", "content": ""}]]
    cols = {"answer": ["1"] * len(odd), "reference": ["x"] * len(odd)}
    for kind in ("exact_match", "numeric_match", "regex_match", "format", "length", "valid_json", "multiple_choice",
                 "token_f1", "sentiment"):
        out = score(kind, odd, **cols)
        assert len(out) == len(odd) and all(isinstance(v, float) and math.isfinite(v) and -1 <= v <= 1 for v in out)


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """A distribution installed in a temporary folder: a module and a dist-info with two entry points."""
    (tmp_path / "ptlab_test_plugin.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from training.fields import opt
        from training.rewards import Signal

        def shouting(completions, *, bonus=0.5, **_):
            """Rewards capital letters."""
            return [bonus if str(c).isupper() else 0.0 for c in completions]

        @dataclass
        class Echo(Signal):
            description = "1 when the completion repeats the column."
            column: str = opt("answer", "Column to echo.")

            def __call__(self, completions, **columns):
                return [float(c == w) for c, w in zip(completions, columns[self.column])]
    '''))
    info = tmp_path / "ptlab_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ptlab-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[ptlab.rewards]\nshouting = ptlab_test_plugin:shouting\necho = ptlab_test_plugin:Echo\n"
        "numeric_match = ptlab_test_plugin:shouting\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.cache_clear()
    yield
    plugins.cache_clear()
    sys.modules.pop("ptlab_test_plugin", None)


def test_entry_point_plugins_are_listed_with_their_parameters_and_reward(plugin_on_path):
    listed = {d["kind"]: d for d in describe()}
    assert listed["shouting"]["plugin"] and listed["shouting"]["description"] == "Rewards capital letters."
    assert [(p["name"], p["default"]) for p in listed["shouting"]["params"]] == [("bonus", 0.5)]
    assert [p["name"] for p in listed["echo"]["params"]] == ["column"]
    assert not listed["numeric_match"]["plugin"]  # a plugin never replaces a built-in
    assert build({"kind": "shouting", "bonus": 2})(["HEY", "hey"]) == [2, 0]
    assert build("echo")(["a", "b"], answer=["a", "c"]) == [1, 0]
    with pytest.raises(SignalError, match="bonus: must be a number"):
        build({"kind": "shouting", "bonus": "lots"})


def test_cli_lists_signals(capsys):
    from training.__main__ import main

    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    assert "numeric_match" in out and "tolerance" in out and "pairwise_judge" in out


def test_a_plugin_rewards_a_run(plugin_on_path, tmp_path, tiny_path):
    from tests.training.conftest import FAST, MemorySink
    from training.config import from_dict
    from training.runner import run

    cfg = from_dict({"method": "grpo", **FAST, "max_steps": 1, "num_generations": 4, "batch_size": 8,
                     "reward": {"kind": "shouting", "bonus": 1.0}, "monitors": ["echo"]})
    sink = MemorySink()
    assert run(cfg, sink, tmp_path).step == 1
    assert {"train/rewards/shouting/mean", "eval/proxy_reward", "eval/reward/echo"} <= sink.keys()
