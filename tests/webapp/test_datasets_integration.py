"""A saved Parquet dataset with a custom mapping trains SFT, DPO and GRPO through a real worker; GRPO's
training signal differs from the gold one, so eval/proxy_reward is stored beside eval/reward."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.webapp.test_integration import (  # noqa: F401  (fixtures)
    SMALL,
    WAIT,
    artifact_root,
    broker,
    browser,
    enqueued,
    finished,
    queue,
    redis_url,
    steps_of,
    wait_for,
    worker,
)
from webapp.datasets.actions import do_create_dataset
from webapp.datasets.models import Dataset
from webapp.experiments.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_a_mapped_parquet_dataset_trains_sft_dpo_and_grpo(browser, worker, queue, tmp_path,  # noqa: F811
                                                          django_user_model):
    rows = [{"q": f"What is {a} + {b}?", "demo": f"{a} + {b} = {a + b}", "yes": str(a + b), "no": str(a + b + 1),
             "gold": a + b} for a in range(6) for b in range(4)]
    path = tmp_path / "sums.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = do_create_dataset(Dataset(owner=django_user_model.objects.get(username="ivy"), name="sums",
                                        source=Dataset.Source.UPLOAD),
                                SimpleUploadedFile("sums.parquet", path.read_bytes()))
    assert dataset.mapping == {"answer": "gold"} and dataset.methods() == ()  # the user maps the rest
    browser.get(reverse("datasets:detail", args=[dataset.pk]))
    browser.post(reverse("datasets:mapping", args=[dataset.pk]),
                 {"prompt": "q", "completion": "demo", "chosen": "yes", "rejected": "no", "answer": "gold"})
    dataset.refresh_from_db()
    assert dataset.methods() == ("sft", "dpo", "reward", "ppo", "grpo", "rloo") and dataset.eval_rows == 5
    exp = browser.create_experiment(
        name="parquet", methods=["sft", "dpo", "grpo"], rl_from_sft=None, queue=queue, saved_dataset=str(dataset.pk),
        **SMALL, **{"grpo-batch_size": "4", "grpo-num_generations": "2",
                    "grpo-reward": "length", "grpo-reward-length-target": "3", "grpo-reward-length-unit": "chars",
                    "monitors-0": "valid_json",
                    "gold_reward": "numeric_match"})
    runs = wait_for(lambda: finished(exp), WAIT, "three runs to finish", worker)
    for run in runs:
        assert run.state == Run.State.SUCCEEDED, run.error
        assert steps_of(run, "eval/reward") == [0, 2, 4]
        assert run.config["dataset"]["path"] == dataset.location()
    grpo = exp.runs.get(method="grpo")
    assert steps_of(grpo, "eval/proxy_reward") == [0, 2, 4] and steps_of(grpo, "eval/reward/valid_json") == [0, 2, 4]


def test_a_reward_model_trained_in_the_app_is_the_training_signal_of_ppo(browser, worker, queue):  # noqa: F811
    """Experiment 1 trains a reward model (held-out pairwise accuracy on its page); experiment 2's PPO optimises
    it (run:<id>) while a verifier is the gold signal: eval/reward and eval/proxy_reward are both stored."""
    first = browser.create_experiment(name="rm", methods=["reward"], rl_from_sft=None, queue=queue, **SMALL)
    (rm,) = wait_for(lambda: finished(first), WAIT, "the reward model to train", worker)
    assert rm.state == Run.State.SUCCEEDED, rm.error
    assert steps_of(rm, "eval/accuracy")
    _, html = browser.get(reverse("experiments:run", args=[rm.pk]))
    assert 'id="pairwise-accuracy"' in html
    second = browser.create_experiment(
        name="ppo on rm", methods=["ppo"], rl_from_sft=None, queue=queue, **SMALL,
        **{"gold_reward": "exact_match", "ppo-reward": "reward_model", "ppo-reward-reward_model-path": f"run:{rm.pk}",
           "ppo-batch_size": "4"})
    (ppo,) = wait_for(lambda: finished(second), WAIT, "PPO to train on the reward model", worker)
    assert ppo.state == Run.State.SUCCEEDED, ppo.error
    assert ppo.config["reward"] == {"kind": "reward_model", "path": str(rm.model_dir)}
    assert steps_of(ppo, "eval/reward") == steps_of(ppo, "eval/proxy_reward") == [0, 2, 4]
