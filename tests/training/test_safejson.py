"""Bounded JSON (training/safejson.py) and the JSONL reader built on it (issue 13)."""

from __future__ import annotations

import pytest

from training import safejson
from training.tasks import JSONLError, parse_jsonl


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ('{"a": ' * 40 + "1" + "}" * 40, "nested deeper than 32"),
    ("1" * 5000, "digits"),
    ("NaN", "not a JSON number"),
    ("1e999", "out of range"),
    ('{"a": "x\\u0000"}', "NUL"),
    ('["\\ud800"]', "surrogate"),
])
def test_hostile_json_is_a_value_error_with_its_path(text, message):
    with pytest.raises(safejson.JSONLimitError, match=message):
        safejson.loads(text)


def test_paths_and_text_checks_left_to_the_caller():
    with pytest.raises(safejson.JSONLimitError) as info:
        safejson.loads('{"runs": [{"key": "a"}, {"key": "b\\u0000"}]}')
    assert info.value.path == "$.runs[1].key"
    assert safejson.loads('{"name": "a\\u0000"}', text_checks=False) == {"name": "a\x00"}


def test_jsonl_bom_line_separator_and_row_limit():
    rows = parse_jsonl('\ufeff{"prompt": "a\u2028b", "completion": "c"}\r\n{"prompt": "d", "completion": "e"}\n')
    assert rows == [{"prompt": "a\u2028b", "completion": "c"}, {"prompt": "d", "completion": "e"}]
    with pytest.raises(JSONLError, match="too many rows"):
        parse_jsonl('{"prompt": "a", "completion": "c"}\n' * 3, max_rows=2)
    with pytest.raises(JSONLError, match="nested deeper"):
        parse_jsonl('{"prompt": ' + "[" * 5000 + "]" * 5000 + ', "completion": "c"}')
