"""The new-experiment form: the prefilled example, per-method fields from the config specs, errors
beside their field (the training config is the judge), JSONL uploads, cloning."""

import re
from pathlib import Path

import pytest
from conftest import form_data
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from training.config import from_dict
from webapp.experiments.forms.experiment import ExperimentForm
from webapp.experiments.models import Experiment, Run

pytestmark = pytest.mark.django_db
NEW = reverse("experiments:new")


def field_errors(response, field: str) -> str:
    """The text of the error list rendered inside the field's own block on the page."""
    html = response.content.decode()
    block = re.search(rf'<div class="field has-error[^"]*" id="field-{re.escape(field)}">(.*?)(<div class="field|$)',
                      html, re.S)
    assert block, f"no error shown beside {field}"
    errors = re.search(r'<ul class="errorlist">(.*?)</ul>', block.group(1), re.S)
    return re.sub(r"<[^>]+>", " ", errors.group(1)) if errors else ""


def test_the_example_is_prefilled_and_valid(alice_client, enqueued, django_capture_on_commit_callbacks):
    page = alice_client.get(NEW)
    assert page.status_code == 200
    form = page.context["form"]
    assert form["base_model"].value() == "tiny" and form["task"].value() == "arithmetic"
    assert form["sft-max_steps"].value() == 300 and form["rl_from_sft"].value() is True
    html = page.content.decode()
    assert "Adam learning rate." in html and "Default: 0.001." in html  # help text and defaults shown
    assert "<summary>Advanced</summary>" in html

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(NEW, form_data())
    exp = Experiment.objects.get()
    assert response.status_code == 302 and response["Location"] == exp.get_absolute_url()
    runs = list(exp.runs.all())
    assert [r.method for r in runs] == ["sft", "dpo", "ppo", "grpo", "rloo"]
    sft = runs[0]
    assert sft.state == Run.State.QUEUED and sft.config["max_steps"] == 300
    for run in runs[1:]:
        assert run.state == Run.State.WAITING and run.depends_on == sft and run.config["max_steps"] == 100
    assert enqueued == [(sft.pk, "train")]  # only SFT; the others wait for it
    for run in runs:
        cfg = from_dict(run.config)  # every stored config is a valid training config
        assert cfg.checkpoint_every == exp.eval_every and cfg.eval_prompts == 20
    # the example's per-method settings reach the runs (DPO with its SFT term: plain DPO collapses here)
    assert runs[1].config["sft_weight"] == 1.0 and runs[1].config["learning_rate"] == 5e-5
    assert runs[3].config["batch_size"] == 32 and runs[2].config["kl_coef"] == 0.02


def test_one_run_per_method_and_seed(alice_client, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(NEW, form_data(methods=["dpo", "grpo"], seeds=3, rl_from_sft=None))
    runs = Experiment.objects.get().runs.all()
    assert sorted((r.method, r.seed) for r in runs) == [(m, s) for m in ("dpo", "grpo") for s in range(3)]
    assert len(enqueued) == 6 and all(r.state == Run.State.QUEUED for r in runs)


def test_rl_from_sft_pairs_runs_by_seed(alice_client):
    alice_client.post(NEW, form_data(methods=["sft", "grpo"], seeds=2))
    for run in Run.objects.filter(method="grpo"):
        assert run.depends_on.method == "sft" and run.depends_on.seed == run.seed


@pytest.mark.parametrize("field, value, message", [
    ("dpo-beta", "1000", "must be between 0.0 and 100.0"),
    ("sft-learning_rate", "-1", "must be between 0.0 and 1.0"),
    ("ppo-ppo_epochs", "0", "must be between 1 and 100"),
    ("grpo-batch_size", "6", "must be divisible by num_generations"),
    ("ppo-num_minibatches", "3", "must divide batch_size"),
    ("eval_prompts", "0", "must be between 1 and 1000"),
    ("max_steps", "0", "must be between 1 and 1000000"),
    ("sft-max_steps", "0", "must be between 1 and 1000000"),
    ("seeds", "6", "less than or equal to 5"),
    ("dpo-learning_rate", "fast", "Enter a number"),
])
def test_bad_values_get_an_error_beside_their_field(alice_client, enqueued, field, value, message):
    response = alice_client.post(NEW, form_data(**{field: value}))
    assert response.status_code == 200
    assert message in field_errors(response, field)
    assert not Experiment.objects.exists() and not Run.objects.exists() and not enqueued


def test_fields_of_unchosen_methods_do_not_matter(alice_client):
    response = alice_client.post(NEW, form_data(methods=["sft"], rl_from_sft=None, **{"dpo-beta": "1000"}))
    assert response.status_code == 302
    assert list(Experiment.objects.get().hyperparams) == ["sft"]


def test_rl_from_sft_needs_sft(alice_client):
    response = alice_client.post(NEW, form_data(methods=["dpo", "grpo"]))
    assert "Choose SFT and at least one other method" in field_errors(response, "rl_from_sft")


def test_no_method_is_an_error(alice_client):
    response = alice_client.post(NEW, form_data(methods=None, rl_from_sft=None))
    assert "This field is required" in field_errors(response, "methods")


def test_cleared_hyperparameter_means_its_default(alice_client):
    alice_client.post(NEW, form_data(methods=["dpo"], rl_from_sft=None, **{"dpo-beta": ""}))
    assert Run.objects.get().config["beta"] == 0.1


def test_bad_queue_name(alice_client):
    response = alice_client.post(NEW, form_data(queue="no spaces"))
    assert "Letters, digits" in field_errors(response, "queue")


def jsonl(text: str, name: str = "data.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/jsonl")


def test_malformed_jsonl_upload_shows_the_line(alice_client):
    text = '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n{"prompt": "e", oops}\n'
    response = alice_client.post(NEW, form_data(task="upload", dataset=jsonl(text)))
    assert "Line 3: not valid JSON" in field_errors(response, "dataset")
    assert not Experiment.objects.exists()


def test_all_errors_show_at_once(alice_client):
    bad = '{"prompt": "a", "completion": "b"}\n{"prompt": "c" "completion": "d"}\n'
    response = alice_client.post(NEW, form_data(task="upload", dataset=jsonl(bad), **{"dpo-beta": "1000",
                                                "sft-learning_rate": "x"}))
    assert "Line 2: not valid JSON" in field_errors(response, "dataset")
    assert "must be between" in field_errors(response, "dpo-beta")
    assert "Enter a number" in field_errors(response, "sft-learning_rate")


def test_jsonl_with_wrong_keys(alice_client):
    text = '{"prompt": "a", "completion": "b"}\n{"question": "c"}\n'
    response = alice_client.post(NEW, form_data(task="upload", dataset=jsonl(text)))
    assert "Line 2: has keys {question}" in field_errors(response, "dataset")


def test_upload_chosen_without_a_file(alice_client):
    response = alice_client.post(NEW, form_data(task="upload"))
    assert "Choose a JSONL file" in field_errors(response, "dataset")


def test_valid_jsonl_upload_is_stored_and_used(alice_client, artifact_root):
    text = "".join(f'{{"prompt": "say {i}", "completion": "{i}"}}\n' for i in range(20))
    response = alice_client.post(NEW, form_data(task="upload", dataset=jsonl(text, "mine.jsonl"), methods=["sft"],
                                                rl_from_sft=None))
    assert response.status_code == 302
    exp = Experiment.objects.get()
    path = Path(Run.objects.get().config["task"])
    assert path.is_file() and path.read_text() == text and artifact_root in path.parents
    assert exp.task == "" and exp.task_label.endswith(".jsonl")
    from_dict(Run.objects.get().config)


def test_clone_prefills_the_form(alice_client, alice, make_experiment):
    source = make_experiment(alice, name="orig", methods=["sft", "dpo"], seeds=2, rl_from_sft=True,
                             hyperparams={"dpo": {"beta": 0.3, "max_steps": 9}})
    page = alice_client.get(reverse("experiments:clone", args=[source.pk]))
    form = page.context["form"]
    assert form["name"].value() == "orig (copy)" and form["methods"].value() == ["sft", "dpo"]
    assert form["dpo-beta"].value() == 0.3 and form["dpo-max_steps"].value() == 9 and form["seeds"].value() == 2
    assert "A copy of" in page.content.decode()


def test_clone_of_an_upload_reuses_its_file(alice_client):
    text = "".join(f'{{"prompt": "p{i}", "answer": "{i}"}}\n' for i in range(10))
    alice_client.post(NEW, form_data(task="upload", dataset=jsonl(text), methods=["grpo"], rl_from_sft=None))
    source = Experiment.objects.get()
    initial = alice_client.get(reverse("experiments:clone", args=[source.pk])).context["form"].initial
    assert initial["task"] == "upload" and initial["dataset_from"] == source.pk
    response = alice_client.post(NEW, form_data(task="upload", dataset_from=source.pk, methods=["grpo"],
                                                rl_from_sft=None))
    assert response.status_code == 302
    clone = Experiment.objects.exclude(pk=source.pk).get()
    assert clone.dataset.name == source.dataset.name


def test_cannot_reuse_another_users_dataset(client, bob, alice_client):
    text = '{"prompt": "p", "answer": "1"}\n'
    alice_client.post(NEW, form_data(task="upload", dataset=jsonl(text), methods=["grpo"], rl_from_sft=None))
    source = Experiment.objects.get()
    client.force_login(bob)
    response = client.post(NEW, form_data(task="upload", dataset_from=source.pk))
    assert "Choose a JSONL file" in field_errors(response, "dataset")


def test_form_without_http(alice):
    form = ExperimentForm(data=form_data(**{"rloo-beta": "-1"}), user=alice)
    assert not form.is_valid()
    assert form.errors["rloo-beta"] == ["must be between 0.0 and 100.0 (got -1.0)"]


def test_method_settings_are_labelled_in_words(alice_client):
    html = alice_client.get(reverse("experiments:new")).content.decode()
    for label in ("SFT weight", "GAE lambda", "Value loss coef", "Clip range", "KL coef", "LoRA"):
        assert f"{label}</label>" in html, label
    assert "Sft weight" not in html and ">Lam<" not in html


def test_every_bad_field_is_reported_at_once(alice_client, enqueued):
    """Not one error a submit: a bad common field, two bad settings of one method, and a bad number."""
    bad = {"max_steps": "-5", "dpo-beta": "-1", "dpo-learning_rate": "fast", "dpo-sft_weight": "-2",
           "ppo-ppo_epochs": "0", "grpo-batch_size": "6", "sft-max_steps": "0"}
    response = alice_client.post(NEW, form_data(**bad))
    assert response.status_code == 200
    for field in bad:
        assert field_errors(response, field), field
    assert "must be between 0.0 and 100.0" in field_errors(response, "dpo-beta")
    assert "must be divisible by num_generations" in field_errors(response, "grpo-batch_size")
    html = response.content.decode()
    for good in ("sft-learning_rate", "dpo-batch_size", "eval_every"):
        assert f'id="field-{good}"' in html and not re.search(rf'has-error[^"]*" id="field-{good}"', html), good
    assert not Experiment.objects.exists() and not enqueued


def test_the_form_shows_each_methods_effective_batch_and_tokens_per_step(alice_client):
    page = alice_client.get(NEW)
    sections = {s["method"]: s for s in page.context["form"].method_sections()}
    # the example: SFT 16 sequences of at most 8 new tokens, GRPO 32 completions
    assert sections["sft"]["batch"].startswith("Effective batch 16 sequences per step (16 per process")
    assert "128 completion tokens per step, plus prompts" in sections["sft"]["batch"]
    assert "32 completions sampled at once" in sections["grpo"]["batch"]
    assert "data-batch-summary>Effective batch 16" in page.content.decode()
    data = form_data(**{"sft-gradient_accumulation_steps": 4, "sft-max_prompt_length": 56,
                        "sft-max_completion_length": 8, "methods": ["sft"], "sft-batch_size": 16})
    form = ExperimentForm(data=data, user=None)
    assert form.batch_text("sft").startswith("Effective batch 16 sequences per step (4 per process x 4")
    assert "1,024 tokens per step" in form.batch_text("sft")
    form = ExperimentForm(data={**data, "sft-gradient_accumulation_steps": 3}, user=None)
    assert form.batch_text("sft") == ""  # 3 does not divide 16: the field's own error says so


def test_training_options_are_advanced_settings_validated_by_the_config(alice_client):
    page = alice_client.get(NEW)
    advanced = {f.name for s in page.context["form"].method_sections() for f in s["advanced"]}
    for name in ("sft-packing", "sft-gradient_accumulation_steps", "grpo-loss_type", "grpo-scale_rewards",
                 "grpo-epsilon_high", "grpo-generation_steps", "ppo-generation_steps", "dpo-precision",
                 "rloo-num_processes", "dpo-lr_scheduler", "dpo-warmup_steps"):
        assert name in advanced, name
    response = alice_client.post(NEW, form_data(**{"methods": ["sft"], "sft-batch_size": 16,
                                                   "sft-gradient_accumulation_steps": 3}))
    assert "must divide batch_size (16)" in field_errors(response, "sft-gradient_accumulation_steps")
    response = alice_client.post(NEW, form_data(**{"methods": ["grpo"], "grpo-loss_type": "nope"}))
    assert field_errors(response, "grpo-loss_type")


def test_a_run_too_big_for_its_queues_gpus_is_refused_with_a_suggestion(alice_client, settings, tmp_path):
    import json

    from webapp.experiments.models import Worker

    settings.PTLAB_DATA_ROOTS = [tmp_path]
    model = tmp_path / "llama-7b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "vocab_size": 32000, "tie_word_embeddings": False}))
    Worker.objects.create(hostname="a100@node", gpu="NVIDIA A100-SXM4-40GB", gpu_memory_mb=40960, gpu_count=1,
                          queues="train,other")
    post = {"base_model": str(model), "methods": ["sft"], "rl_from_sft": None, "queue": "train"}
    response = alice_client.post(NEW, form_data(**post))
    errors = " ".join(response.context["form"].non_field_errors())
    assert "SFT: needs about" in errors and "NVIDIA A100-SXM4-40GB" in errors and "it would fit with LoRA" in errors
    assert not Experiment.objects.exists()
    response = alice_client.post(NEW, form_data(**post, **{"sft-lora": "on"}))
    assert response.status_code == 302 and Experiment.objects.count() == 1
    # A queue no GPU worker serves: not checked (nothing to check against)
    response = alice_client.post(NEW, form_data(**{**post, "queue": "cpu-only"}))
    assert response.status_code == 302
