"""Validators of the experiments' fields (the forms and imports check the same)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator

from training.config import BaseConfig


def config_bounds(name: str) -> list:
    """The training config's bounds of a field, as model validators (the form and imports check the same)."""
    spec = next(s for s in BaseConfig.field_specs() if s["name"] == name)
    return [MinValueValidator(int(spec["min"])), MaxValueValidator(int(spec["max"]))]


queue_name_validator = RegexValidator(r"^[A-Za-z0-9_.-]{1,64}$", "Letters, digits, '.', '_' and '-' only.")
def not_a_reserved_queue(value: str) -> None:
    """Training runs never go to the `try` queue (its worker answers "try a model" prompts) nor to the io queue
    (report imports and dataset uploads)."""
    from django.conf import settings
    from django.core.exceptions import ValidationError

    if value == "try":
        raise ValidationError("The queue “try” is for trying models; choose another for training.")
    if value == settings.PTLAB_IO_QUEUE:
        raise ValidationError(f"The queue “{value}” is for imports and uploads; choose another for training.")


tag_validator = RegexValidator(r"^[\w.+-]{1,40}$", "A tag is up to 40 letters, digits, '.', '_', '+' or '-'.")
