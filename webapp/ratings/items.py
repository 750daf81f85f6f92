"""An item to rate: two contestants' completions of one prompt, with the sides they are shown on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    step: int
    prompt_id: int
    index: int  # which completion of each contestant
    first: str  # contestant keys, first < second
    second: str
    left_is_first: bool
    repeat: bool = False

    @property
    def left(self) -> str:
        return self.first if self.left_is_first else self.second

    @property
    def right(self) -> str:
        return self.second if self.left_is_first else self.first


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)
