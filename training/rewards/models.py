"""Model-based signals: a sequence-classification reward model, and a local judge (any causal LM) whose
score is read from its next-token probabilities over fixed label tokens, never from generated text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from training.fields import opt
from training.rewards.base import Signal, SignalEnv, SignalError, column
from training.tasks.base import assistant, text_of, user


def as_messages(prompt: Any) -> list[dict[str, str]]:
    return prompt if isinstance(prompt, list) else user(str(prompt))


def score_pairs(model, tokenizer, prompts: list, completions: list, device, batch_size: int = 32) -> list[float]:
    """Reward-model scores of (prompt, completion) conversations, in batches."""
    import torch

    texts = [tokenizer.apply_chat_template(as_messages(p) + assistant(text_of(c)), tokenize=False)
             for p, c in zip(prompts, completions, strict=True)]
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            out.extend(logits[:, 0].float().cpu().tolist())
    return out


@dataclass
class RewardModel(Signal):
    kind = "reward_model"
    description = ("A sequence-classification model's score of (prompt, completion): a reward model trained in "
                   "ptlab (its run's model folder), another local folder or a hub id.")
    path: str = opt("", "Model folder or hub id (one output label).")
    batch_size: int = opt(32, "Conversations scored per forward pass.", min=1, max=4096)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path.strip():
            raise SignalError("path", "name the reward model's folder or hub id")

    def setup(self, env: SignalEnv) -> None:
        from transformers import AutoModelForSequenceClassification

        from training.models import load_model, load_tokenizer

        self._device = env.device
        self._model = load_model(self.path, env.device, cls=AutoModelForSequenceClassification, num_labels=1).eval()
        self._tok = load_tokenizer(self.path)
        self._tok.padding_side = "left"
        if self._model.config.pad_token_id is None:
            self._model.config.pad_token_id = self._tok.pad_token_id

    def __call__(self, completions, prompts=None, **_):
        if prompts is None:
            raise SignalError("columns", "reward_model needs the prompts")
        return score_pairs(self._model, self._tok, prompts, completions, self._device, self.batch_size)


POINTWISE_TEMPLATE = ("Rate the answer to the question on a scale from 1 (wrong or useless) to 5 (correct and "
                      "helpful).\n\nQuestion: {prompt}\n\nReference answer: {reference}\n\nAnswer: {completion}\n\n"
                      "Reply with one digit.")
PAIRWISE_TEMPLATE = ("Which answer to the question is better?\n\nQuestion: {prompt}\n\nAnswer A: {first}\n\n"
                     "Answer B: {second}\n\nReply with A or B.")


def fill(template: str, values: dict[str, str]) -> str:
    """Put values into {name} placeholders by plain replacement (never str.format: its attribute and index
    lookups would run on user-edited templates, and JSON braces in a rubric would break it)."""
    for k, v in values.items():
        template = template.replace("{" + k + "}", v)
    return template


@dataclass
class _Judge(Signal):
    """A causal LM asked a question whose answer is one of a few single-token labels."""

    model: str = opt("tiny", "The judge: 'tiny', 'demo', a local folder or a hub id of a causal LM.")
    answer_prefix: str = opt("", "Text put after the assistant turn starts, before the label (e.g. 'Score: ').")
    batch_size: int = opt(16, "Judge prompts per forward pass.", min=1, max=4096)

    required: ClassVar[tuple[str, ...]] = ()  # placeholders the template must contain

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [p for p in self.required if "{" + p + "}" not in self.template]
        if missing:
            raise SignalError("template", f"must contain {', '.join('{' + p + '}' for p in missing)}")

    def setup(self, env: SignalEnv) -> None:
        from training.models import load_model, load_tokenizer

        self._device = env.device
        self._tok = load_tokenizer(self.model)
        self._tok.padding_side = "left"
        self._lm = load_model(self.model, env.device).eval()
        self._ids = [self.token_id(label) for label in self.labels()]

    def labels(self) -> list[str]:
        raise NotImplementedError

    def token_id(self, label: str) -> int:
        ids = self._tok.encode(label, add_special_tokens=False)
        if len(ids) != 1:
            raise SignalError("labels", f"{label!r} is {len(ids)} tokens for the judge's tokenizer; each label must "
                              "be exactly one token")
        return ids[0]

    def render(self, values: dict[str, str]) -> str:
        chat = self._tok.apply_chat_template(user(fill(self.template, values)), tokenize=False,
                                             add_generation_prompt=True)
        return chat + self.answer_prefix

    def label_probs(self, texts: list[str]):
        """For each judge prompt, the next-token probabilities of the labels, renormalised over them."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self._tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False)
                ids, mask = enc["input_ids"].to(self._device), enc["attention_mask"].to(self._device)
                position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)  # left padding leaves positions unshifted
                logits = self._lm(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                  logits_to_keep=1).logits[:, -1].float()
                out.append(torch.softmax(logits[:, self._ids], dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self._ids))


@dataclass
class PointwiseJudge(_Judge):
    kind = "judge"
    description = ("A local causal LM rates each completion with a rubric; the score is the expected value over the "
                   "score tokens' probabilities, scaled to [0, 1].")
    template: str = opt(POINTWISE_TEMPLATE, "Rubric prompt; placeholders {prompt}, {completion}, {reference} "
                        "(the reference column, empty when absent). Stored with the run.")
    scores: list[str] = opt(["1", "2", "3", "4", "5"], "Score tokens, worst to best (each one token).")
    reference_column: str = opt("reference", "Column put into {reference}.", advanced=True)

    required = ("completion",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.scores) < 2 or not all(isinstance(s, str) and s for s in self.scores):
            raise SignalError("scores", "must list at least two non-empty tokens")
        if len(set(self.scores)) != len(self.scores):
            raise SignalError("scores", "must be distinct")

    def labels(self) -> list[str]:
        return self.scores

    def __call__(self, completions, prompts=None, **columns):
        import torch

        n = len(completions)
        refs = columns.get(self.reference_column) or [""] * n
        prompts = prompts if prompts is not None else [""] * n
        texts = [self.render({"prompt": _plain(p), "completion": text_of(c), "reference": str(r)})
                 for p, c, r in zip(prompts, completions, refs, strict=True)]
        probs = self.label_probs(texts)
        k = len(self.scores)
        values = torch.arange(k, dtype=probs.dtype) / (k - 1)  # the i-th of k scores is worth i / (k - 1)
        return (probs * values).sum(dim=1).tolist()


@dataclass
class PairwiseJudge(_Judge):
    kind = "pairwise_judge"
    description = ("A local causal LM compares each completion with the reference answer, in both orders; the score "
                   "is the probability that the completion is better, read from the two label tokens.")
    template: str = opt(PAIRWISE_TEMPLATE, "Comparison prompt; placeholders {prompt}, {first}, {second}. Stored "
                        "with the run.")
    label_first: str = opt("A", "Label token meaning the first answer is better.")
    label_second: str = opt("B", "Label token meaning the second answer is better.")
    column: str = opt("reference", "Column holding the reference answer.")

    required = ("first", "second")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.label_first or self.label_first == self.label_second:
            raise SignalError("label_second", "the two labels must be different and non-empty")

    def labels(self) -> list[str]:
        return [self.label_first, self.label_second]

    def __call__(self, completions, prompts=None, **columns):
        n = len(completions)
        refs = column(columns, self.column, self.kind, n)
        prompts = prompts if prompts is not None else [""] * n
        texts = []
        for p, c, r in zip(prompts, completions, refs, strict=True):
            base = {"prompt": _plain(p)}
            texts.append(self.render({**base, "first": text_of(c), "second": str(r)}))  # completion first
            texts.append(self.render({**base, "first": str(r), "second": text_of(c)}))  # then second
        probs = self.label_probs(texts)
        first, second = probs[0::2, 0], probs[1::2, 1]
        return ((first + second) / 2).tolist()


def _plain(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(m["content"] for m in prompt if m.get("role") != "system")
    return str(prompt)
