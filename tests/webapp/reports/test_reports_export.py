"""Report exports: access, CSV row counts against the database, JSON round trip (export, import,
export again: the same document apart from ids), import by command and by upload, Markdown, escaping."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from tests.webapp.reports_fixtures import XSS, make_report_experiment
from webapp.experiments.models import Experiment, Metric, Sample
from webapp.ratings.models import Vote
from webapp.reports import formats
from webapp.reports.importing import ReportError, do_import_report
from webapp.reports.jobs import do_run_import_job
from webapp.reports.models import ImportJob
from webapp.reports.report import build_report

pytestmark = pytest.mark.django_db
TEXT_FORMATS = ("html", "csv", "votes.csv", "json", "md")


@pytest.fixture
def carol(db):
    return User.objects.create_user("carol", password="pw-carol-123")


@pytest.fixture
def exp(alice, carol):
    return make_report_experiment(alice, [alice, carol], steps=40, votes=30)


def get(client, exp, fmt, **params):
    return client.get(reverse("reports:export", args=[exp.pk, fmt]), params)


def without_ids(doc):
    """The document with `id` fields and the export time left out (what may differ after a round trip)."""
    if isinstance(doc, dict):
        return {k: without_ids(v) for k, v in doc.items() if k not in ("id", "exported_at")}
    if isinstance(doc, list):
        return [without_ids(v) for v in doc]
    return doc


# --- access -------------------------------------------------------------------------------------------


def test_login_required_and_other_users_get_404(client, exp, bob):
    for fmt in TEXT_FORMATS:
        response = get(client, exp, fmt)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(bob)
    for fmt in (*TEXT_FORMATS, "pdf"):
        assert get(client, exp, fmt).status_code == 404, fmt
    assert client.get(reverse("reports:export", args=[exp.pk + 999, "json"])).status_code == 404
    assert client.get(reverse("reports:import")).status_code == 200


def test_shared_user_may_download_and_unknown_format_is_404(client, exp, bob):
    exp.shared_with.add(bob)
    client.force_login(bob)
    response = get(client, exp, "json")
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment;")
    assert get(client, exp, "exe").status_code == 404


def test_download_buttons_on_experiment_and_compare_pages(alice_client, exp):
    for url in (reverse("experiments:detail", args=[exp.pk]), reverse("compare:experiment", args=[exp.pk])):
        page = alice_client.get(url).content.decode()
        for fmt in ("html", "pdf", "csv", "votes.csv", "json", "md"):
            assert reverse("reports:export", args=[exp.pk, fmt]) in page, (url, fmt)


# --- CSV ----------------------------------------------------------------------------------------------


def test_metrics_csv_long_format_matches_the_database(alice_client, exp):
    rows = list(csv.DictReader(io.StringIO(get(alice_client, exp, "csv").content.decode())))
    assert list(rows[0]) == ["experiment", "run", "method", "seed", "step", "name", "value"]
    assert len(rows) == Metric.objects.filter(run__experiment=exp).count()
    for run in exp.runs.all():
        key = f"{run.method}-s{run.seed}"
        mine = [r for r in rows if r["run"] == key]
        assert len(mine) == run.metrics.count()
        assert {r["method"] for r in mine} == {run.method} and {r["seed"] for r in mine} == {str(run.seed)}
    last = Metric.objects.filter(run__experiment=exp, name="eval/reward").order_by("-step", "run_id").first()
    key = f"{last.run.method}-s{last.run.seed}"
    match = [r for r in rows if r["run"] == key and r["name"] == "eval/reward" and r["step"] == str(last.step)]
    assert len(match) == 1 and float(match[0]["value"]) == pytest.approx(last.value)
    assert {r["experiment"] for r in rows} == {exp.name}


def test_votes_csv_matches_the_database(alice_client, exp):
    rows = list(csv.DictReader(io.StringIO(get(alice_client, exp, "votes.csv").content.decode())))
    assert len(rows) == Vote.objects.filter(experiment=exp).count() > 0
    assert {r["rater"] for r in rows} == {"alice", "carol"}
    keys = {f"{r.method}-s{r.seed}" for r in exp.runs.all()} | {"base"}
    # A run contestant is "<run key>@<the step it showed>".
    assert all(r[side].partition("@")[0] in keys for r in rows for side in ("first", "second"))
    assert all(r["first"] < r["second"] for r in rows)
    assert {r["result"] for r in rows} <= {"first", "second", "tie", "both_bad"}


# --- JSON: round trip ----------------------------------------------------------------------------------


def from_elsewhere(doc: dict) -> dict:
    """The document as if exported by another installation: its raters are not users here (an import
    refuses votes in the name of this installation's users)."""
    return {**doc, "votes": [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]}


def test_json_round_trip_gives_the_same_document_apart_from_ids(alice_client, exp, bob):
    first = from_elsewhere(json.loads(get(alice_client, exp, "json").content))
    assert first["format"] == "ptlab-report" and first["version"] == 1
    assert len(first["runs"]) == 8 and first["votes"] and first["leaderboard"]["votes"] == len(first["votes"])
    assert sum(len(v) for v in first["samples"].values()) == Sample.objects.filter(run__experiment=exp).count()
    copy = do_import_report(first, bob)
    assert copy.owner == bob and copy.pk != exp.pk and copy.runs.count() == 8
    assert Metric.objects.filter(run__experiment=copy).count() == Metric.objects.filter(run__experiment=exp).count()
    assert not copy.runs.filter(state__in=["queued", "running"]).exists()
    again = build_report(copy)
    assert without_ids(again) == without_ids(first)
    assert again["experiment"]["id"] == copy.pk


def test_import_command_and_upload_page(alice_client, client, exp, bob, tmp_path):
    body = json.dumps(from_elsewhere(json.loads(get(alice_client, exp, "json").content))).encode()
    path = tmp_path / "report.json"
    path.write_bytes(body)
    out = io.StringIO()
    call_command("import_report", str(path), "--user", "bob", stdout=out)
    assert "Imported experiment" in out.getvalue()
    assert Experiment.objects.filter(owner=bob, name=exp.name).count() == 1

    client.force_login(bob)
    response = client.post(reverse("reports:import"), {"file": SimpleUploadedFile("r.json", body)})
    assert response.status_code == 302
    job = ImportJob.objects.get(owner=bob)
    assert response["Location"] == job.get_absolute_url() and job.state == "queued"
    assert Experiment.objects.filter(owner=bob, name=exp.name).count() == 1  # not in the request
    assert do_run_import_job(job.pk) == "done"
    assert Experiment.objects.filter(owner=bob, name=exp.name).count() == 2
    copy = Experiment.objects.filter(owner=bob).order_by("-id").first()
    page = client.get(job.get_absolute_url())
    assert page.status_code == 200 and copy.get_absolute_url() in page.content.decode()
    assert client.get(reverse("compare:experiment", args=[copy.pk])).status_code == 200
    # imported raters hold votes but cannot log in
    carol = User.objects.get(username="~carol-elsewhere")
    assert not carol.is_active and not carol.has_usable_password()

    for body, error in ((b'{"format": "other"}', "Not a ptlab report"), (b"not json", "Not a JSON file")):
        response = client.post(reverse("reports:import"), {"file": SimpleUploadedFile("r.json", body)})
        job = ImportJob.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])
        assert do_run_import_job(job.pk) == "failed"
        assert error in client.get(job.get_absolute_url()).content.decode()


def test_import_refuses_newer_versions_and_malformed_documents(bob, exp):
    doc = build_report(exp)
    with pytest.raises(ReportError, match="version"):
        do_import_report({**doc, "version": 99}, bob)
    with pytest.raises(ReportError):
        do_import_report({**doc, "runs": [{"key": "x"}]}, bob)
    assert not Experiment.objects.filter(owner=bob).exists()  # nothing half-imported


# --- Markdown and HTML content --------------------------------------------------------------------------


def test_markdown_summary_has_methods_and_leaderboard(alice_client, exp):
    text = get(alice_client, exp, "md").content.decode()
    for label in ("SFT", "DPO", "GRPO", "PPO", "Final eval/reward", "Human rating", "BT score", "Base model"):
        assert label in text
    doc = build_report(exp)
    summary = formats.report_summary(doc)
    assert summary["groups"][0]["cells"][0] in text


def test_html_is_self_contained_and_escapes_model_output(alice_client, exp):
    page = get(alice_client, exp, "html").content.decode()
    assert XSS not in page and "&lt;img src=x onerror=" in page and "Samples at step 40" in page
    assert "Report &lt;demo&gt;" in page and "Report <demo>" not in page
    assert formats.plotly_js() in page  # inlined
    ours = page.replace(formats.plotly_js(), "")
    for needle in ('src="http', "src='http", 'href="http', "<link ", "@import", "<script src"):
        assert needle not in ours
    assert "class=\"configs\"" in page and "Code revision" in page and "transformers" in page
    assert page.count('data-fig="') >= 6 and "fig-win-rate" in page
    assert 'class="differs"' in page  # method and seed differ between runs
    assert "Samples at step 20" in get(alice_client, exp, "html", step=25).content.decode()


# --- a comparison across experiments --------------------------------------------------------------------


def test_report_of_runs_from_several_experiments(alice_client, client, alice, exp, bob, make_experiment):
    from webapp.compare.demo import fill_experiment

    other = make_experiment(alice, name="Other <b>", methods=["sft", "dpo"])
    fill_experiment(other, steps=20, eval_every=10)
    picked = [*exp.runs.filter(seed=0, method__in=["sft", "dpo"]), *other.runs.all()]
    query = "run=" + ",".join(str(r.pk) for r in picked)
    page = alice_client.get(f"{reverse('compare:runs')}?{query}").content.decode()
    assert f"{reverse('reports:runs_export', args=['html'])}?{query}" in page

    doc = json.loads(alice_client.get(f"{reverse('reports:runs_export', args=['json'])}?{query}").content)
    assert len(doc["runs"]) == 4 and len({r["key"] for r in doc["runs"]}) == 4
    assert [e["name"] for e in doc["experiments"]] == [exp.name, other.name] and doc["votes"] == []
    assert {r["group_label"] for r in doc["runs"]} == {f"SFT · {exp.name}", f"DPO · {exp.name}",
                                                     f"SFT · {other.name}", f"DPO · {other.name}"}
    rows = list(csv.DictReader(io.StringIO(
        alice_client.get(f"{reverse('reports:runs_export', args=['csv'])}?{query}").content.decode())))
    assert len(rows) == Metric.objects.filter(run__in=picked).count()
    html_page = alice_client.get(f"{reverse('reports:runs_export', args=['html'])}?{query}").content.decode()
    assert "Other &lt;b&gt;" in html_page and "No human votes" in html_page
    assert alice_client.get(f"{reverse('reports:runs_export', args=['md'])}?{query}").status_code == 200
    copy = do_import_report(doc, bob)
    assert copy.runs.count() == 4 and copy.name.startswith("Comparison: ")

    client.force_login(bob)
    assert client.get(f"{reverse('reports:runs_export', args=['json'])}?{query}").status_code == 404
    assert client.get(reverse("reports:runs_export", args=["json"])).status_code == 404
