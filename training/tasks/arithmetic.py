"""Single-digit addition: a verifiable answer, small enough for the tiny model to learn."""

from __future__ import annotations

import re

from training.tasks.base import Example, Task, rng_for, text_of

_NUMBER = re.compile(r"-?\d+")


def correct_answer(completions, answer, **_) -> list[float]:
    """1 for the right number, partial credit for a near miss, 0 without a number."""
    out = []
    for c, a in zip(completions, answer, strict=True):
        m = _NUMBER.search(text_of(c))
        if m is None:
            out.append(0.0)
            continue
        diff = abs(int(m.group()) - int(a))
        out.append(1.0 if diff == 0 else max(0.0, 0.5 - 0.1 * diff))
    return out


class Arithmetic(Task):
    name = "arithmetic"
    description = "Add two digits ('What is 3+4?'); reward 1 for the right sum, partial credit near it."
    reward_fns = (correct_answer,)

    def examples(self) -> list[Example]:
        rng = rng_for(self.name)
        out = []
        for a in range(10):
            for b in range(10):
                s = a + b
                wrong = s + rng.choice([-3, -2, -1, 1, 2, 3])
                out.append(Example(prompt=f"What is {a}+{b}?", reference=str(s), rejected=str(wrong),
                                   columns={"answer": str(s)}))
        return out
