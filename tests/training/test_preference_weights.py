"""The per-row weight of preference datasets: parsed and checked as a column role, rows of weight 0 left out;
DPO draws pairs in proportion to it, the reward model weights each pair's loss by it; all-ones weights train
exactly as no weights."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch

from tests.training.conftest import MemorySink
from training.callbacks import RunHooks
from training.config import from_dict
from training.methods import dpo, reward
from training.methods.common import MethodContext
from training.models import load_model, load_tokenizer
from training.tasks import DatasetError, DatasetTask

CPU = torch.device("cpu")
PAIRS = [{"prompt": f"What is {a} plus {a}?", "chosen": f"{2 * a}", "rejected": f"{2 * a + 1} maybe"}
         for a in range(24)]
MAPPING = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "weight": "weight"}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task_of(path, weights=None, mapping=None):
    rows = [{**r, "weight": w} for r, w in zip(PAIRS, weights, strict=True)] if weights is not None else PAIRS
    return DatasetTask({"path": str(write(path, rows)), "mapping": mapping or {}})


# --- the column --------------------------------------------------------------------------------------------
def test_a_weight_column_is_guessed_parsed_and_weight_0_rows_left_out(tmp_path):
    weights = [0.5, 0, 2, "0.25"] + [1] * 20
    task = task_of(tmp_path / "d.jsonl", weights)
    assert task.mapping == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "weight": "weight"}
    by_prompt = {ex.prompt: ex for ex in task.examples()}
    assert len(by_prompt) == 23 and PAIRS[1]["prompt"] not in by_prompt  # weight 0: left out
    assert [by_prompt[PAIRS[i]["prompt"]].weight for i in (0, 2, 3, 4)] == [0.5, 2.0, 0.25, 1.0]
    assert "weight" not in by_prompt[PAIRS[0]["prompt"]].columns  # a role, not a column for reward signals
    assert task.weighted() and task.summary()["weight_zero"] == 1
    rows = task.dpo_rows()
    assert {r["weight"] for r in rows} <= {0.5, 2.0, 0.25, 1.0} and all(r["weight"] > 0 for r in rows)


def test_csv_weights_are_numeric_text(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,good,bad,w\nWhat is 1?,1,2,0.75\nWhat is 2?,2,3,1e0\n")
    task = DatasetTask({"path": str(path), "mapping": {"prompt": "question", "chosen": "good", "rejected": "bad",
                                                        "weight": "w"}})
    assert sorted(ex.weight for ex in task.examples()) == [0.75, 1.0]


@pytest.mark.parametrize(("value", "reason"), [
    ("heavy", "weight must be a number, got 'heavy'"), (None, "weight must be a number, got null"),
    (True, "weight must be a number, got bool"), ([1], "weight must be a number, got list"),
    (-0.5, "weight must not be negative, got -0.5"), ("nan", "is not a finite number"),
    (float("inf"), "is not a finite number"), (10**400, "is not a finite number"),
])
def test_a_bad_weight_names_its_line_row_and_column(tmp_path, value, reason):
    rows = [{**r, "w": 1} for r in PAIRS[:3]]
    rows[2]["w"] = value
    path = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError) as err:
        DatasetTask({"path": str(path), "mapping": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
                                                    "weight": "w"}})
    assert (err.value.line, err.value.row, err.value.column) == (3, 2, "w")
    assert reason in err.value.reason


def test_every_row_of_weight_0_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="column 'weight': every row has weight 0"):
        task_of(tmp_path / "d.jsonl", [0] * len(PAIRS), mapping=MAPPING)


@pytest.mark.parametrize("value", ["heavy", 0])
def test_a_guessed_weight_column_without_weights_stays_a_column(tmp_path, value):
    """An upload whose "weight" means something else is not refused: the guess leaves it to the reward signals."""
    task = task_of(tmp_path / "d.jsonl", [value] * len(PAIRS))
    assert "weight" not in task.mapping and task.examples()[0].columns["weight"] == value
    with pytest.raises(DatasetError, match="column 'weight'"):  # mapped on purpose, it must hold weights
        task_of(tmp_path / "e.jsonl", [value] * len(PAIRS), mapping=MAPPING)


def test_all_ones_give_the_same_rows_as_no_weights(tmp_path):
    plain, ones = task_of(tmp_path / "a.jsonl"), task_of(tmp_path / "b.jsonl", [1.0] * len(PAIRS))
    assert ones.mapping["weight"] == "weight" and not ones.weighted()
    assert ones.dpo_rows() == plain.dpo_rows() and "weight" not in plain.dpo_rows()[0]


# --- training ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_path):
    from transformers import AutoModelForSequenceClassification

    tok = load_tokenizer("tiny")
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_path), num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    return {"lm": load_model("tiny", CPU), "rm": rm, "tok": tok, "ref": load_model("tiny", CPU)}


def make_ctx(tiny, out_dir, method, task, **settings):
    cfg = from_dict({"method": method, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, **settings})
    sink = MemorySink()
    hooks = RunHooks(sink, total=cfg.max_steps, eval_every=1000, evaluate=lambda step, model: None)
    model = copy.deepcopy(tiny["rm" if method == "reward" else "lm"])
    ctx = MethodContext(cfg=cfg, task=task, tokenizer=tiny["tok"], model=model,
                        reference=None if method == "reward" else tiny["ref"], device=CPU, out_dir=out_dir,
                        hooks=hooks)
    return ctx, sink


def losses(sink):
    return [m["train/loss"] for _, m in sink.metrics if "train/loss" in m]


class Rows:
    """A task that is only its preference rows (the trainer's input, weights of 0 included)."""

    def __init__(self, rows):
        self.rows = rows

    def dpo_rows(self):
        return self.rows


def preference_rows(pairs, weights=None):
    """TRL's conversational preference rows of `pairs`, with a weight column unless `weights` is None."""
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant",
             "content": p["chosen"]}], "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
    if weights is not None:
        rows = [{**r, "weight": w} for r, w in zip(rows, weights, strict=True)]
    return rows


@pytest.mark.parametrize("method", ["dpo", "reward"])
def test_all_ones_train_exactly_as_no_weights_and_other_weights_differ(tiny, tmp_path, method):
    runs = {}
    for name, weights in (("plain", None), ("ones", [1] * len(PAIRS)), ("weighted", [0.2, 3] * 12)):
        ctx, sink = make_ctx(tiny, tmp_path / name, method, task_of(tmp_path / f"{name}.jsonl", weights))
        module = dpo if method == "dpo" else reward
        assert module.train(ctx).step == 4
        runs[name] = losses(sink)
    assert len(runs["plain"]) == 4 and runs["ones"] == runs["plain"]
    assert runs["weighted"] != runs["plain"]


def test_dpo_draws_pairs_in_proportion_to_their_weights():
    sampler = dpo.WeightedSampler([0.0, 1.0, 3.0], seed=7)
    draws = list(sampler)
    assert len(draws) == 3  # an epoch is as many draws as rows
    counts = Counter()
    for epoch in range(4000):
        sampler.set_epoch(epoch)
        counts.update(sampler)
    assert counts[0] == 0  # weight 0: never drawn
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.1)
    sampler.set_epoch(0)
    assert list(sampler) == draws  # the seed and the epoch decide: a resumed run replays its batches


def test_dpo_batches_never_hold_a_pair_of_weight_0(tiny, tmp_path):
    """Through the Trainer's (accelerate-prepared) data loader: every epoch's batches come from the weighted draws."""
    rows = preference_rows(PAIRS[:4], weights=[1.0, 0.0, 1.0, 2.0])
    ctx, _ = make_ctx(tiny, tmp_path, "dpo", Rows(rows), batch_size=2)
    trainer = dpo.build(ctx)
    loader, seen = trainer.get_train_dataloader(), Counter()
    for epoch in range(30):
        loader.set_epoch(epoch)
        for batch in loader:
            chosen = batch["input_ids"][: len(batch["input_ids"]) // 2]
            seen.update(next(p["prompt"] for p in PAIRS[:4] if p["prompt"] in text)
                        for text in ctx.tokenizer.batch_decode(chosen))
    assert seen[PAIRS[1]["prompt"]] == 0 and sum(seen.values()) == 30 * 4
    assert seen[PAIRS[3]["prompt"]] > seen[PAIRS[0]["prompt"]] and seen[PAIRS[3]["prompt"]] > seen[PAIRS[2]["prompt"]]


def test_dpo_uses_the_weighted_sampler_only_for_weighted_rows(tiny, tmp_path):
    weights = [0.5, 2] * 12
    ctx, _ = make_ctx(tiny, tmp_path / "w", "dpo", task_of(tmp_path / "w.jsonl", weights))
    sampler = dpo.build(ctx)._get_train_sampler()
    by_prompt = {p["prompt"]: w for p, w in zip(PAIRS, weights, strict=True)}
    expected = [by_prompt[r["prompt"][0]["content"]] for r in ctx.task.dpo_rows()]
    assert isinstance(sampler, dpo.WeightedSampler) and sampler.weights.tolist() == expected
    ctx, _ = make_ctx(tiny, tmp_path / "p", "dpo", task_of(tmp_path / "p.jsonl"))
    assert not isinstance(dpo.build(ctx)._get_train_sampler(), dpo.WeightedSampler)


def reward_batch(tiny, tmp_path, weights, pairs):
    """The reward trainer and one batch of all `pairs` with `weights` (None: no weight column)."""
    rows = preference_rows(pairs, weights)
    ctx, _ = make_ctx(tiny, tmp_path / "rm", "reward", Rows(rows), batch_size=len(rows))
    trainer = reward.build(ctx)
    batch = next(iter(trainer.get_train_dataloader()))  # through the Trainer's column removal and collator
    return trainer, batch


def test_the_reward_loss_is_the_weighted_mean_of_the_pairs_losses(tiny, tmp_path):
    rows = PAIRS[:6]
    trainer, batch = reward_batch(tiny, tmp_path, [0.5, 2.0, 1.0, 0.25, 3.0, 1.0], rows)
    weight = batch["weight"].clone()
    assert sorted(weight.tolist()) == [0.25, 0.5, 1.0, 1.0, 2.0, 3.0]  # the column reaches the loss
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        rewards = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    chosen, rejected = rewards.chunk(2)
    per_pair = -torch.nn.functional.logsigmoid(chosen - rejected)
    assert loss.item() == pytest.approx(((weight * per_pair).sum() / weight.sum()).item(), rel=1e-5)
    # all weights 1: TRL's own loss (a plain mean over the batch)
    ones = {**batch, "weight": torch.ones_like(weight)}
    plain = {k: v for k, v in batch.items() if k != "weight"}
    assert trainer.compute_loss(trainer.model, ones).item() == pytest.approx(
        trainer.compute_loss(trainer.model, plain).item(), rel=1e-6)


def test_a_reward_pair_of_weight_0_moves_no_gradient(tiny, tmp_path):
    trainer, batch = reward_batch(tiny, tmp_path, [1.0, 0.0, 1.0], PAIRS[:3])
    alone, alone_batch = reward_batch(tiny, tmp_path, None, [PAIRS[0], PAIRS[2]])
    assert len(batch["weight"]) == 3 and "weight" not in alone_batch

    def grads(t, b):
        t.model.zero_grad()
        t.compute_loss(t.model, dict(b)).backward()
        return {k: p.grad.clone() for k, p in t.model.named_parameters() if p.grad is not None}

    # pair 1 (weight 0) changes nothing: the gradient is that of pairs 0 and 2 alone
    with_zero, without = grads(trainer, batch), grads(alone, alone_batch)
    assert with_zero.keys() == without.keys()
    for k in without:
        torch.testing.assert_close(with_zero[k], without[k], rtol=1e-4, atol=1e-6)
