"""End to end through the API: the command-line client launches an experiment on the live server (real
HTTP, a token), a real Celery worker trains the tiny model from a real Redis broker, the client follows
it with its progress bar until done, fetches the metrics and downloads the JSON report.
The services are test_integration's fixtures."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from test_integration import (  # noqa: F401  (fixtures)
    artifact_root,
    broker,
    enqueued,
    queue,
    redis_url,
    worker,
)

from ptlab_client import Client
from ptlab_client.__main__ import main
from webapp.api.models import ApiToken
from webapp.experiments.models import Experiment, Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_launch_follow_metrics_report_through_the_api(live_server, worker, queue, django_user_model, tmp_path,  # noqa: F811
                                                      capsys):
    user = django_user_model.objects.create_user("cli", password="pw-cli-12345")
    _, token = ApiToken.issue(user, "e2e")
    spec = {"name": "via the API", "task": "arithmetic", "methods": ["sft", "grpo"], "max_steps": 4,
            "eval_every": 2, "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4, "queue": queue,
            "hyperparams": {"sft": {"max_steps": 4}, "grpo": {"num_generations": 2, "batch_size": 2}}}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(spec))
    base = ["--url", live_server.url, "--token", token, "--interval", "0.5"]

    code = main([*base, "launch", str(path), "--follow"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    exp = Experiment.objects.get(name="via the API", owner=user)
    assert f"created experiment {exp.pk} with 2 runs" in out
    assert "100.0%" in err and "runs 2/2 done" in err  # the progress bar's last frame
    assert set(exp.runs.values_list("state", flat=True)) == {Run.State.SUCCEEDED}

    assert main([*base, "status", str(exp.pk)]) == 0
    assert "succeeded" in capsys.readouterr().out

    client = Client(live_server.url, token)
    sft = exp.runs.get(method="sft")
    points = list(client.metrics(sft.pk, ["eval/reward"], page_size=2))  # follows the pages
    assert [p["step"] for p in points] == [0, 2, 4]
    assert main([*base, "metrics", str(sft.pk), "--names", "eval/reward,eval/kl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "name,step,value" and len(lines) == 1 + 6 and lines[1].startswith("eval/kl,0,")

    if apps.is_installed("webapp.reports"):
        out_file = tmp_path / "report.json"
        assert main([*base, "report", str(exp.pk), "--out", str(out_file)]) == 0
        doc = json.loads(out_file.read_text())
        assert doc["experiment"]["name"] == "via the API" and len(doc["runs"]) == 2

    assert main(["--url", live_server.url, "--token", "wrong", "status", str(exp.pk)]) == 1
    assert "401" in capsys.readouterr().err
