"""Answering a trial ("try a model"): each of its models answers the prompt with the trial's sampling
settings, one after the other, in the worker that serves the `try` queue (its own queue: a long training
run never holds a trial up). Idempotent: an answer already done is not asked again."""

from __future__ import annotations

import logging
import time

from django.db.models import Q

from webapp.experiments.models import Trial, TrialAnswer
from webapp.workers.sink import storable

log = logging.getLogger(__name__)
State = TrialAnswer.State
MAX_TEXT = 20_000


def do_answer_trial(trial_id: int) -> str:
    trial = Trial.objects.filter(pk=trial_id).first()
    if trial is None:
        return "gone"
    for answer in trial.answers.filter(state__in=TrialAnswer.ACTIVE):
        # Claim it (a redelivered message finds it running or done and leaves it to the first).
        if not TrialAnswer.objects.filter(Q(pk=answer.pk), Q(state=State.QUEUED)).update(state=State.RUNNING):
            continue
        t0 = time.monotonic()
        try:
            text = generate(answer, trial)
        except Exception as exc:  # any model's failure is that answer's, not the trial's
            log.warning("trial #%s: %s failed", trial.pk, answer.label, exc_info=True)
            TrialAnswer.objects.filter(pk=answer.pk).update(
                state=State.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], seconds=time.monotonic() - t0)
            continue
        TrialAnswer.objects.filter(pk=answer.pk).update(state=State.DONE, text=storable(text)[:MAX_TEXT],
                                                        seconds=round(time.monotonic() - t0, 3))
    return "answered"


def generate(answer: TrialAnswer, trial: Trial) -> str:
    """The answer's model's completion of the trial's prompt (one user message, the chat template)."""
    import torch

    from training import models

    device = models.pick_device("auto")
    tokenizer = models.load_tokenizer(answer.tokenizer_path)
    model = models.load_model(answer.model_path, device)
    if answer.weights_path:
        model.load_state_dict(torch.load(answer.weights_path, map_location=device, weights_only=True))
    model.eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": trial.prompt}], tokenize=False,
                                         add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
    sample = trial.temperature > 0
    torch.manual_seed(trial.seed)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=sample, temperature=trial.temperature if sample else None,
                             top_p=trial.top_p if sample else None, top_k=0 if sample else None,
                             max_new_tokens=trial.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
