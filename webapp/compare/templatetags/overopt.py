"""`{% run_flags run as flags %}`: the run page's over-optimisation and entropy-collapse flags
(compare.core.overopt), read through the comparison's loader and its series cache (GET never writes)."""

from __future__ import annotations

from django import template

from webapp.compare import loader

register = template.Library()


@register.simple_tag
def run_flags(run) -> list[str]:
    return loader.run_flags([run])
