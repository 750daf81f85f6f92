"""`{% detectable_note prompts samples seeds %}`: before launch, the difference an experiment of these
evaluation settings can expect to detect (compare.core.verdicts.expected_detectable, default variances)."""

from __future__ import annotations

from django import template

from webapp.compare.core import verdicts

register = template.Library()


def as_count(value, default: int = 1) -> int:
    try:
        return min(max(int(value), 1), 1_000_000)
    except (TypeError, ValueError):
        return default


def detectable_text(prompts, samples, seeds) -> tuple[float, str]:
    p, k, s = as_count(prompts), as_count(samples), as_count(seeds)
    d = verdicts.expected_detectable(p, k, s)
    return d, (f"With {p} prompts × {k} samples and {s} seed{'s' if s != 1 else ''} per method, two methods must "
               f"differ by about {d:.2f} in mean reward to be told apart (80% power, α = 0.05; assuming rewards in "
               f"[0, 1] with a per-sample SD of {verdicts.DEFAULT_SAMPLE_SD}, a per-prompt SD of a difference of "
               f"{verdicts.DEFAULT_PROMPT_SD} and a seed SD of {verdicts.DEFAULT_SEED_SD}).")


@register.simple_tag
def detectable_note(prompts, samples, seeds) -> str:
    return detectable_text(prompts, samples, seeds)[1]
