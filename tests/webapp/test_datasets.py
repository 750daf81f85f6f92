"""The datasets app: uploads in each format (a bad row refused with nothing saved), the size limit, server
paths under PTLAB_DATA_ROOTS only, the mapping form, the preview page, access."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from webapp.datasets.figures import length_info
from webapp.datasets.models import Dataset

ROWS = [{"question": f"What is {a} plus 1?", "response": f"{a + 1}", "final_answer": a + 1} for a in range(20)]


def jsonl(rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def upload(client, name, content, **extra):
    return client.post(reverse("datasets:new"), {"name": "mine", "split": "train",
                                                  "file": SimpleUploadedFile(name, content), **extra})


def files_under(root: Path) -> list[Path]:
    return [p for p in (root / "datasets").rglob("*") if p.is_file()] if (root / "datasets").exists() else []


def test_jsonl_upload_is_hashed_mapped_and_previewed(alice_client, alice, artifact_root):
    response = upload(alice_client, "data.jsonl", jsonl(ROWS))
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response.url == dataset.get_absolute_url()
    assert dataset.owner == alice and dataset.rows == 20 and dataset.train_rows + dataset.eval_rows == 20
    assert dataset.mapping == {"prompt": "question", "completion": "response", "answer": "final_answer"}
    assert len(dataset.content_hash) == 64 and Path(dataset.location()).is_file()
    assert dataset.spec()["path"].startswith(str(artifact_root))
    page = alice_client.get(dataset.get_absolute_url())
    html = page.content.decode()
    assert page.status_code == 200
    assert "&lt;|im_start|&gt;user\nWhat is 0 plus 1?" in html  # the chat template, escaped
    assert "sft, ppo, grpo, rloo" in html and 'id="length-figure"' in html and "rows are longer than" in html


def test_csv_and_parquet_uploads(alice_client, tmp_path):
    assert upload(alice_client, "d.csv", b"prompt,chosen,rejected\na,b,c\nd,e,f\n").status_code == 302
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert upload(alice_client, "d.parquet", path.read_bytes()).status_code == 302
    csv_ds, pq_ds = Dataset.objects.order_by("id")
    assert csv_ds.methods() == ("dpo", "reward", "ppo", "grpo", "rloo") and pq_ds.rows == 20


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", b'{"prompt": "a"}\n\n{"prompt": \n', "line 3, row 1: not valid JSON"),
    ("bad.csv", b"prompt,answer\na,1\nb,2,3\n", "line 3, row 1: has 3 fields"),
    ("bad.csv", b"prompt,answer\na,1\n,2\n", "line 3, row 1, column &#x27;prompt&#x27;: prompt is empty"),
    ("bad.parquet", b"PAR1 nope", "not a readable Parquet file"),
    ("data.txt", b"hello", "must end in .jsonl, .csv, .parquet"),
])
def test_bad_uploads_are_refused_and_nothing_is_saved(alice_client, artifact_root, name, content, message):
    response = upload(alice_client, name, content)
    assert response.status_code == 200 and message in response.content.decode()
    assert not Dataset.objects.exists() and files_under(artifact_root) == []


def test_the_size_limit_stops_an_upload(alice_client, settings, artifact_root):
    settings.PTLAB_MAX_DATASET_BYTES = 1000
    response = upload(alice_client, "big.jsonl", jsonl(ROWS * 10))
    assert "larger than 0 MB" in response.content.decode()
    assert not Dataset.objects.exists() and files_under(artifact_root) == []


def test_server_paths_only_under_the_data_roots(alice_client, tmp_path, settings):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir(), other.mkdir()
    (allowed / "d.jsonl").write_bytes(jsonl(ROWS))
    (other / "d.jsonl").write_bytes(jsonl(ROWS))
    settings.PTLAB_DATA_ROOTS = [allowed]
    url = reverse("datasets:new")
    answers = set()
    for path in (str(other / "d.jsonl"), str(other / "missing.jsonl"), f"{allowed}/../other/d.jsonl",
                 str(settings.ARTIFACT_ROOT / "datasets" / "x.jsonl")):
        refused = alice_client.post(url, {"name": "x", "split": "train", "path": path})
        html = refused.content.decode()
        assert "Not a file or folder this server may read" in html
        answers.add(html.split('id="field-path"')[1].split("</ul>")[0].replace(path, ""))
    assert len(answers) == 1 and not Dataset.objects.exists()  # the same answer whether the path exists or not
    ok = alice_client.post(url, {"name": "x", "split": "train", "path": str(allowed / "d.jsonl")})
    assert ok.status_code == 302 and Dataset.objects.get().source == "server"


def test_mapping_form_checks_the_whole_dataset(alice_client):
    rows = [{**r, "notes": "fine"} for r in ROWS] + [{"question": "x", "response": "y", "final_answer": 1, "notes": ""}]
    upload(alice_client, "d.jsonl", jsonl(rows))
    dataset = Dataset.objects.get()
    url = reverse("datasets:mapping", args=[dataset.pk])
    bad = alice_client.post(url, {"prompt": "question", "completion": "notes"})
    assert bad.status_code == 400 and "row 20, column &#x27;notes&#x27;: completion is empty" in bad.content.decode()
    dataset.refresh_from_db()
    assert dataset.mapping == {"prompt": "question", "completion": "response", "answer": "final_answer"}  # unchanged
    good = alice_client.post(url, {"prompt": "question", "answer": "final_answer"})
    assert good.status_code == 302
    dataset.refresh_from_db()
    assert dataset.mapping == {"prompt": "question", "answer": "final_answer"}
    assert dataset.methods() == ("ppo", "grpo", "rloo")
    twice = alice_client.post(url, {"prompt": "question", "answer": "question"})
    assert twice.status_code == 400 and "one role only" in twice.content.decode()


def test_other_users_see_only_what_is_shared(alice_client, alice, bob, client):
    upload(alice_client, "d.jsonl", jsonl(ROWS))
    dataset = Dataset.objects.get()
    client.force_login(bob)
    assert client.get(dataset.get_absolute_url()).status_code == 404
    assert "mine" not in client.get(reverse("datasets:list")).content.decode()
    dataset.shared_with.add(bob)
    assert client.get(dataset.get_absolute_url()).status_code == 200
    assert client.post(reverse("datasets:mapping", args=[dataset.pk]), {"prompt": "question"}).status_code == 404


def test_pages_need_a_login(client):
    assert client.get(reverse("datasets:list")).status_code == 302
    assert client.post(reverse("datasets:new"), {}).status_code == 302


def test_length_info():
    info = length_info([1, 5, 10, 10, 40], limit=9, bins=4)
    assert info["too_long"] == 3 and info["n"] == 5 and info["max"] == 40 and info["median"] == 10
    assert sum(info["counts"]) == 5 and info["edges"][0] == 0 and info["edges"][-1] > 40
    assert length_info([], 5)["counts"] == []


def saved(client) -> Dataset:
    upload(client, "d.jsonl", jsonl(ROWS))
    return Dataset.objects.get()


def test_an_experiment_names_a_saved_dataset_and_signals(alice_client, alice, enqueued):
    from tests.webapp.conftest import form_data
    from webapp.experiments.models import Experiment

    dataset = saved(alice_client)
    data = form_data(methods=["sft", "grpo"], rl_from_sft=None, saved_dataset=str(dataset.pk),
                     **{"grpo-reward": "numeric_match", "gold_reward": "numeric_match", "monitors-0": "length"})
    response = alice_client.post(reverse("experiments:new"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    exp = Experiment.objects.get()
    assert exp.saved_dataset == dataset and exp.task_label == "mine"
    grpo = exp.runs.get(method="grpo").config
    assert grpo["dataset"] == dataset.spec() and grpo["reward"] == "numeric_match"
    assert grpo["monitors"] == ["length"] and grpo["gold_reward"] == "numeric_match"
    assert exp.runs.get(method="sft").config["gold_reward"] == "numeric_match"  # one gold signal for every run
    assert "reward" not in exp.runs.get(method="sft").config
    # used: its mapping is now fixed
    refused = alice_client.post(reverse("datasets:mapping", args=[dataset.pk]), {"prompt": "question"})
    assert refused.status_code == 400 and "mapping is fixed" in refused.content.decode()


def test_the_form_refuses_methods_the_dataset_cannot_feed_and_paths_outside_the_roots(alice_client, tmp_path):
    from tests.webapp.conftest import form_data

    dataset = saved(alice_client)  # prompt, completion, answer: no pairs
    response = alice_client.post(reverse("experiments:new"), form_data(saved_dataset=str(dataset.pk)))
    assert "Its mapping cannot feed dpo" in response.content.decode()
    for path in (str(tmp_path), str(tmp_path / "no-such-folder")):  # the same answer, whether it exists or not
        outside = form_data(**{"ppo-reward": "reward_model", "ppo-reward-reward_model-path": path})
        response = alice_client.post(reverse("experiments:new"), outside)
        assert response.status_code == 200 and "Not a model you can use" in field_html(response, "ppo-reward-reward_model-path")
        assert path not in response.content.decode().replace(f'value="{path}"', "")


def field_html(response, name: str) -> str:
    """The HTML of one form field's box (its input, errors and help)."""
    html = response.content.decode()
    start = html.index(f'id="field-{name}"')
    return html[start:html.index('<div class="field', start + 1) if '<div class="field' in html[start + 1:] else None]


def test_other_users_datasets_are_not_offered(alice_client, bob, client):
    from tests.webapp.conftest import form_data

    dataset = saved(alice_client)
    client.force_login(bob)
    response = client.post(reverse("experiments:new"), form_data(saved_dataset=str(dataset.pk), methods=["grpo"]))
    assert "Select a valid choice" in response.content.decode()


def test_an_upload_without_guessable_columns_is_saved_unmapped(alice_client):
    upload(alice_client, "d.csv", b"q,a\nx,1\ny,2\n")
    dataset = Dataset.objects.get()
    assert dataset.mapping == {} and dataset.rows == 2 and dataset.methods() == ()
    page = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert "nothing yet: map a prompt or messages column" in page and "needs a prompt or a messages column" in page
    assert alice_client.post(reverse("datasets:mapping", args=[dataset.pk]), {"prompt": "q", "answer": "a"}).status_code == 302
    dataset.refresh_from_db()
    assert dataset.methods() == ("ppo", "grpo", "rloo") and dataset.train_rows + dataset.eval_rows == 2


def test_builtin_tasks_are_listed_with_the_datasets(alice_client):
    html = alice_client.get(reverse("datasets:list")).content.decode()
    assert "word_problems" in html and "arithmetic" in html


def test_signals_page_lists_builtins_and_an_installed_plugin(alice_client, tmp_path, monkeypatch):
    from training.rewards import plugins

    (tmp_path / "ptlab_web_plugin.py").write_text(
        "def politeness(completions, *, word='please', **_):\n"
        "    '''Rewards a polite word.'''\n"
        "    return [float(word in str(c)) for c in completions]\n")
    info = tmp_path / "ptlab_web_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ptlab-web-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ptlab.rewards]\npoliteness = ptlab_web_plugin:politeness\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.cache_clear()
    try:
        html = alice_client.get(reverse("datasets:signals")).content.decode()
        assert 'id="signal-numeric_match"' in html and "tolerance" in html
        assert 'id="signal-politeness"' in html and "Rewards a polite word." in html and "please" in html
        # and the experiment form accepts it as a training signal
        from tests.webapp.conftest import form_data

        response = alice_client.post(reverse("experiments:new"), form_data(
            methods=["grpo"], rl_from_sft=None, **{"grpo-reward": "politeness", "grpo-reward-politeness-word": "thanks"}))
        assert response.status_code == 302
    finally:
        plugins.cache_clear()


def test_the_api_names_a_saved_dataset_and_signals(alice_client, alice):
    from webapp.api.models import ApiToken
    from webapp.experiments.models import Experiment

    dataset = saved(alice_client)
    token = ApiToken.issue(alice, "tests")[1]
    body = {"name": "api data", "task": "arithmetic", "methods": ["grpo"], "max_steps": 2, "eval_every": 2,
            "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4, "saved_dataset": dataset.pk,
            "hyperparams": {"grpo": {"reward": {"kind": "numeric_match", "tolerance": 0.5},
                                     "gold_reward": "exact_match", "monitors": ["length", {"kind": "valid_json"}]}}}
    response = alice_client.post(reverse("api:experiments"), json.dumps(body), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 201, response.content
    assert response.json()["saved_dataset"] == dataset.pk
    from training.config import from_dict

    cfg = from_dict(Experiment.objects.get().runs.get().config)
    assert cfg.reward == {"kind": "numeric_match", "tolerance": 0.5} and cfg.monitors == ["length", "valid_json"]
    assert cfg.dataset == dataset.spec()
    bad = {**body, "hyperparams": {"grpo": {"reward": {"kind": "nope"}}}}
    response = alice_client.post(reverse("api:experiments"), json.dumps(bad), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and "unknown signal" in response.json()["error"]["fields"]["grpo-reward"][0]


def test_every_method_has_the_same_gold_signal(alice_client, alice):
    """The form has one gold signal for the experiment; the API lifts a method's own to it, if they agree."""
    from tests.webapp.conftest import form_data
    from webapp.api.models import ApiToken
    from webapp.experiments.models import Experiment

    response = alice_client.post(reverse("experiments:new"), form_data(
        methods=["sft", "grpo"], rl_from_sft=None, gold_reward="exact_match"))
    assert response.status_code == 302
    assert {r.config["gold_reward"] for r in Experiment.objects.get().runs.all()} == {"exact_match"}
    token = ApiToken.issue(alice, "tests")[1]
    body = {"name": "api", "task": "arithmetic", "methods": ["sft", "grpo"],
            "hyperparams": {"sft": {"gold_reward": "exact_match"}, "grpo": {"gold_reward": "numeric_match"}}}
    response = alice_client.post(reverse("api:experiments"), json.dumps(body), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and "same gold_reward" in json.dumps(response.json())


def test_a_weight_column_is_mapped_when_it_holds_weights_and_can_be_mapped_by_hand(alice_client):
    pairs = [{"question": f"What is {a}?", "good": f"{a}", "bad": f"{a + 1}"} for a in range(10)]
    upload(alice_client, "w.jsonl", jsonl([{**r, "weight": 0 if a == 3 else 0.5} for a, r in enumerate(pairs)]))
    weighted = Dataset.objects.get()
    assert weighted.mapping == {"prompt": "question", "chosen": "good", "rejected": "bad", "weight": "weight"}
    assert weighted.rows == 10 and weighted.train_rows + weighted.eval_rows == 9  # the weight-0 row is left out
    weighted.delete()
    upload(alice_client, "t.jsonl", jsonl([{**r, "weight": "heavy", "w": "2"} for r in pairs]))
    other = Dataset.objects.get()  # a "weight" that holds no weights: an ordinary column, the upload is kept
    assert other.mapping == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    url = reverse("datasets:mapping", args=[other.pk])
    bad = alice_client.post(url, {"prompt": "question", "chosen": "good", "rejected": "bad", "weight": "weight"})
    assert bad.status_code == 400 and "weight must be a number, got &#x27;heavy&#x27;" in bad.content.decode()
    good = alice_client.post(url, {"prompt": "question", "chosen": "good", "rejected": "bad", "weight": "w"})
    assert good.status_code == 302
    other.refresh_from_db()
    assert other.mapping["weight"] == "w"
