"""The command-line client's pure parts: the progress bar, the status lines, the error text, and the
HTTP round trip against the app (Django's test server is not needed: urllib is pointed at a stub)."""

from __future__ import annotations

import io

import pytest

from ptlab_client.__main__ import follow, main, progress_bar, status_lines
from ptlab_client.client import ApiError


def run(state, step, total=4, reward=None):
    return {"id": 1, "label": "SFT seed 0", "state": state, "step": step, "total": total,
            "latest": {"reward": reward, "kl": None}, "error": ""}


def test_progress_bar():
    assert "0.0%" in progress_bar({"runs": [run("queued", 0), run("queued", 0)]})
    half = progress_bar({"runs": [run("succeeded", 4), run("running", 0)]})
    assert "50.0%" in half and "runs 1/2 done" in half and half.count("#") == 15
    almost = progress_bar({"runs": [run("running", 4)]})
    assert "100.0%" not in almost  # a run finishing its last evaluation is not done
    assert "100.0%" in progress_bar({"runs": [run("failed", 1)]})


def test_status_lines():
    lines = status_lines({"id": 3, "name": "x", "state": "running", "runs": [run("running", 2, reward=0.5)]})
    assert lines[0] == "experiment 3 'x': running" and "step 2/4" in lines[1] and "reward 0.500" in lines[1]


def test_follow_polls_until_done():
    frames = [{"runs": [run("running", 1)]}, {"runs": [run("running", 3)]}, {"runs": [run("succeeded", 4)]}]

    class Fake:
        def experiment(self, pk):
            return frames.pop(0)

    out = io.StringIO()
    exp = follow(Fake(), 1, interval=0, out=out)
    assert exp["runs"][0]["state"] == "succeeded" and out.getvalue().count("\n") == 3
    assert out.getvalue().splitlines()[-1].startswith("[" + "#" * 30 + "] 100.0%")


def test_api_error_text():
    e = ApiError(400, "validation_error", "The experiment is not valid.", {"max_steps": ["Too big."]})
    assert e.describe() == "error 400 (validation_error): The experiment is not valid.\n  max_steps: Too big."


def test_token_is_required(monkeypatch, capsys):
    monkeypatch.delenv("PTLAB_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["status", "1"])
    assert exit_.value.code == 2 and "--token" in capsys.readouterr().err


def test_unreachable_server_is_an_error(capsys):
    assert main(["--url", "http://127.0.0.1:9", "--token", "t", "status", "1"]) == 1
    assert "unreachable" in capsys.readouterr().err
