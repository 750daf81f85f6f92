"""Datasets from the hub (by id, config and split) and from save_to_disk folders under the data roots; the version
(content hash) each run is set up on, checked by the worker before it trains; a used dataset is immutable."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.webapp.conftest import form_data
from training.config import from_dict
from training.tasks import DatasetError, DatasetTask
from webapp.datasets.models import Dataset
from webapp.experiments.models import Experiment

ROWS = [{"question": f"What is {a} + {b}?", "solution": f"{a} + {b} = {a + b}", "answer": str(a + b)}
        for a in range(5) for b in range(4)]


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset without a hub: records its calls and answers ROWS."""
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None, **_):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def add(client, **fields):
    return client.post(reverse("datasets:new"), {"name": "mine", "split": "train", **fields})


def test_a_hub_dataset_is_stored_and_named_in_the_run_config(alice_client, fake_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "sums").mkdir(parents=True)  # a local folder of the same name is never read
    response = add(alice_client, hub_id="acme/sums", config="main", split="test")
    assert response.status_code == 302, response.content.decode()[:3000]
    dataset = Dataset.objects.get()
    assert (dataset.source, dataset.path, dataset.config, dataset.split) == ("hub", "acme/sums", "main", "test")
    assert dataset.mapping == {"prompt": "question", "completion": "solution", "answer": "answer"}
    assert set(fake_hub) == {("acme/sums", "main", "test")}
    assert dataset.spec() == {"path": "acme/sums", "hub": True, "config": "main", "split": "test",
                              "mapping": dataset.mapping, "hash": dataset.content_hash}
    response = alice_client.post(reverse("experiments:new"), form_data(
        methods=["sft", "grpo"], rl_from_sft=None, saved_dataset=str(dataset.pk), gold_reward="numeric_match"))
    assert response.status_code == 302, response.context["form"].errors
    config = Experiment.objects.get().runs.get(method="grpo").config
    assert config["dataset"] == dataset.spec()
    task = DatasetTask(from_dict(config).dataset)  # what the worker does: load_dataset(id, config, split=split)
    assert fake_hub[-1] == ("acme/sums", "main", "test") and task.hash == dataset.content_hash
    assert len(task.examples()) == len(ROWS)


@pytest.mark.parametrize(("fields", "field", "text"), [
    ({"hub_id": "../etc/passwd"}, "hub_id", "A hub dataset id"),
    ({"hub_id": "acme/sums", "path": "/data/x.jsonl"}, "file", "one of them"),
    ({"path": "/nowhere/x.jsonl", "config": "main"}, "config", "Only a hub dataset"),
])
def test_bad_hub_sources_are_refused(alice_client, fake_hub, fields, field, text):
    response = add(alice_client, **fields)
    assert response.status_code == 200 and text in response.content.decode()
    assert not Dataset.objects.exists() and fake_hub == []


def test_a_hub_dataset_the_server_cannot_load_is_not_saved(alice_client, monkeypatch):
    import datasets

    def offline(*_, **__):
        raise ConnectionError("no hub from here")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    response = add(alice_client, hub_id="acme/sums")
    assert response.status_code == 200 and "could not load &#x27;acme/sums&#x27;: no hub from here" in \
        response.content.decode()
    assert not Dataset.objects.exists()


def test_a_save_to_disk_folder_under_the_roots_trains_end_to_end(alice_client, tmp_path, settings):
    import datasets

    from tests.training.conftest import MemorySink
    from training.runner import run

    root = tmp_path / "data"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(root / "sums"))
    settings.PTLAB_DATA_ROOTS = [root.resolve()]
    response = add(alice_client, path=str(root / "sums"))
    assert response.status_code == 302, response.content.decode()[:3000]
    dataset = Dataset.objects.get()
    assert dataset.source == "server" and dataset.rows == len(ROWS) and dataset.methods()[:1] == ("sft",)
    response = alice_client.post(reverse("experiments:new"), form_data(
        methods=["sft"], rl_from_sft=None, saved_dataset=str(dataset.pk), max_steps=2, eval_every=2,
        eval_prompts=2, eval_samples=1, max_new_tokens=4, **{"sft-max_steps": "", "sft-batch_size": "4"}))
    assert response.status_code == 302, response.context["form"].errors
    run_row = Experiment.objects.get().runs.get()
    assert run_row.config["dataset"]["hash"] == dataset.content_hash
    sink = MemorySink()
    assert run(from_dict(run_row.config), sink, tmp_path / "out").step == 2
    assert "eval/reward" in sink.keys()
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["hash"] == dataset.content_hash


def test_the_worker_refuses_a_dataset_whose_file_changed(alice_client, tmp_path):
    from tests.training.conftest import MemorySink
    from training.runner import run

    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = alice_client.post(reverse("datasets:new"), {"name": "mine", "split": "train",
                                                           "file": SimpleUploadedFile("d.jsonl", body)})
    assert response.status_code == 302
    dataset = Dataset.objects.get()
    response = alice_client.post(reverse("experiments:new"), form_data(
        methods=["sft"], rl_from_sft=None, saved_dataset=str(dataset.pk)))
    assert response.status_code == 302
    config = Experiment.objects.get().runs.get().config
    assert config["dataset"]["hash"] == dataset.content_hash  # the version the run is set up on
    with open(dataset.location(), "a") as f:  # someone edits the file on the shared disk
        f.write(json.dumps({"question": "What is 9 + 9?", "solution": "18", "answer": "18"}) + "\n")
    with pytest.raises(DatasetError, match=r"the data changed since this version was saved"):
        run(from_dict(config), MemorySink(), tmp_path / "out")
    assert not (tmp_path / "out" / "model").exists()


def test_a_used_dataset_cannot_change(alice_client, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    alice_client.post(reverse("datasets:new"), {"name": "mine", "split": "train",
                                                "file": SimpleUploadedFile("d.jsonl", body)})
    dataset = Dataset.objects.get()
    dataset.mapping = {"prompt": "question", "answer": "answer"}
    dataset.save()  # unused: it may still change
    alice_client.post(reverse("experiments:new"), form_data(methods=["grpo"], rl_from_sft=None,
                                                           saved_dataset=str(dataset.pk)))
    assert dataset.in_use()
    refused = alice_client.post(reverse("datasets:mapping", args=[dataset.pk]), {"prompt": "solution"})
    assert refused.status_code == 400 and "mapping is fixed" in refused.content.decode()
    for field, value in (("mapping", {"prompt": "solution"}), ("file", "datasets/other.jsonl"),
                         ("split", "test"), ("content_hash", "0" * 64), ("path", "/elsewhere")):
        fresh = Dataset.objects.get()
        setattr(fresh, field, value)
        with pytest.raises(DatasetError, match="an experiment uses this dataset"):
            fresh.save()
    fresh = Dataset.objects.get()
    fresh.name = "renamed"  # the name is no part of the version
    fresh.save()
    assert Dataset.objects.get().mapping == {"prompt": "question", "answer": "answer"}


def test_the_preview_uses_the_chosen_models_tokenizer_and_counts_rows_over_the_limit(alice_client, alice,
                                                                                      make_experiment, artifact_root):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.models import build_tiny
    from webapp.experiments.models import Run

    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    alice_client.post(reverse("datasets:new"), {"name": "mine", "split": "train",
                                                "file": SimpleUploadedFile("d.jsonl", body)})
    dataset = Dataset.objects.get()
    run = make_experiment(alice).runs.get()  # a finished run whose final model is (a copy of) tiny
    run.state, run.out_dir = Run.State.SUCCEEDED, str(artifact_root / "runs" / f"{run.pk}-ab")
    run.save()
    import shutil
    shutil.copytree(build_tiny(), run.model_dir)
    html = alice_client.get(dataset.get_absolute_url(), {"model": f"run:{run.pk}", "max_tokens": 20}).content.decode()
    assert f'name="model" value="run:{run.pk}"' in html and f"Token lengths (run:{run.pk})" in html
    assert 'id="length-histogram"' in html and f"of {len(ROWS)} rows are longer than 20 tokens" in html
    shutil.rmtree(run.model_dir)
    html = alice_client.get(dataset.get_absolute_url(), {"model": f"run:{run.pk}"}).content.decode()
    assert f"Could not load the tokenizer of run:{run.pk}" in html and str(artifact_root) not in html
    html = alice_client.get(dataset.get_absolute_url(), {"model": "/etc"}).content.decode()
    assert 'name="model" value="tiny"' in html  # not a model the user may name: the default


def test_one_check_of_server_paths_before_a_run_is_queued(settings, tmp_path, artifact_root):
    from training.config import ConfigError
    from webapp.experiments.references import check_server_paths

    root = tmp_path / "roots" / "a"
    root.mkdir(parents=True)
    settings.PTLAB_DATA_ROOTS = [root]
    fine = [{"method": "sft", "model": str(root / "model")},
            {"method": "sft", "dataset": {"path": str(root / "d.parquet")}},
            {"method": "sft", "model": str(artifact_root / "runs" / "1-ab" / "model")},  # the app's run:<id>
            {"method": "grpo", "reward": {"kind": "reward_model", "path": str(root / "rm")}},
            {"method": "sft", "dataset": {"path": "org/name", "hub": True}}]
    for data in fine:
        check_server_paths(from_dict(data))
    answers = set()
    for key, data in (("model", {"method": "sft", "model": str(tmp_path / "elsewhere")}),
                      ("reference_model", {"method": "sft", "reference_model": "/etc"}),
                      ("reward_model", {"method": "ppo", "reward_model": "/nope/rm"}),
                      ("dataset", {"method": "sft", "dataset": {"path": f"{root}/../../d.jsonl"}}),
                      ("gold_reward", {"method": "sft", "gold_reward": {"kind": "judge", "model": "/srv/judge"}}),
                      ("monitors", {"method": "sft", "monitors": [{"kind": "reward_model", "path": "/x/rm"}]})):
        with pytest.raises(ConfigError) as err:
            check_server_paths(from_dict(data))
        assert err.value.key == key
        answers.add(err.value.message)
    assert len(answers) == 1 and "Not a file or folder this server may read" in answers.pop()


def test_the_preview_counts_rows_over_the_training_limit_by_default(alice_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from training.methods import MAX_SEQUENCE_TOKENS

    rows = ROWS + [{"question": "word " * 800, "solution": "long", "answer": "1"}]
    alice_client.post(reverse("datasets:new"), {"name": "mine", "split": "train", "file": SimpleUploadedFile(
        "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())})
    html = alice_client.get(Dataset.objects.get().get_absolute_url()).content.decode()
    assert f"<strong>1</strong> of {len(rows)} rows are longer than {MAX_SEQUENCE_TOKENS} tokens" in html
    assert f"train on at most {MAX_SEQUENCE_TOKENS} tokens per row: they cut these rows short" in html
