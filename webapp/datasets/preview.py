"""What a dataset looks like to a model: the first rows with the model's chat template applied, and every
row's length in that model's tokens (prompt plus the completion or chosen answer)."""

from __future__ import annotations

from dataclasses import dataclass

from training.tasks import DatasetTask
from training.tasks.base import assistant

MAX_LENGTH_ROWS = 5000  # rows tokenized for the histogram (a sample of the first ones beyond that)


@dataclass
class Preview:
    rows: list[dict]  # {"text": templated text, "columns": extra columns, "rejected": templated or ""}
    lengths: list[int]
    sampled: bool  # lengths cover only the first MAX_LENGTH_ROWS rows


def build_preview(task: DatasetTask, tokenizer, n: int = 5) -> Preview:
    examples = task.examples()

    def text(ex, answer: str) -> str:
        chat = ex.chat() + (assistant(answer) if answer else [])
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=not answer)

    rows = [{"text": text(ex, ex.reference), "rejected": text(ex, ex.rejected) if ex.rejected else "",
             "columns": {k: v for k, v in ex.columns.items() if k != "reference"}} for ex in examples[:n]]
    sample = examples[:MAX_LENGTH_ROWS]
    texts = [text(ex, ex.reference) for ex in sample]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return Preview(rows=rows, lengths=lengths, sampled=len(examples) > len(sample))
