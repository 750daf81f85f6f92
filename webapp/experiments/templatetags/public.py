"""`{{ text|public }}`: run logs and errors without the server's artifact paths (references.public_text)."""

from django import template

from webapp.experiments.references import public_text

register = template.Library()


@register.filter
def public(text):
    return public_text(text) if isinstance(text, str) else text
