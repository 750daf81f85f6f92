"""Form fields for training config fields: generated from training.config's field specs (label, help,
default, bounds), and text as users mean it (TextField). The config keys the experiment owns are here too:
a method's section leaves them out."""

from __future__ import annotations

import unicodedata

from django import forms

from training.config import CONFIG_CLASSES, BaseConfig

# Config keys that are the experiment's, shared by all its runs (fair comparison), -> their form field.
COMMON_FIELDS = {"model": "base_model", "task": "task", "seed": "seeds", "max_steps": "max_steps",
                 "eval_every": "eval_every", "eval_prompts": "eval_prompts", "eval_samples": "eval_samples",
                 "max_new_tokens": "max_new_tokens", "checkpoint_every": "eval_every", "method": "methods"}
SET_BY_APP = {"reference_model", "dataset"}  # the starting model (or the SFT model); the chosen saved dataset
SIGNAL_KEYS = ("reward", "gold_reward", "monitors")  # may name models and folders: only under the data roots
STEPS_OVERRIDE = "max_steps"  # each method may override the experiment's steps (SFT needs more)


def method_specs(method: str) -> list[dict]:
    """The specs of the fields a method's section shows (common and app-set keys left out)."""
    skip = (set(COMMON_FIELDS) - {STEPS_OVERRIDE}) | SET_BY_APP | set(SIGNAL_KEYS)  # signals: pickers
    return [s for s in CONFIG_CLASSES[method].field_specs() if s["name"] not in skip]


def _number_attrs(spec: dict) -> dict:
    attrs = {k: spec[k] for k in ("min", "max") if spec.get(k) is not None}
    if spec["type"] == "a number":
        attrs["step"] = "any"
    return attrs


def _base_spec(name: str) -> dict:
    return next(s for s in BaseConfig.field_specs() if s["name"] == name)


ACRONYMS = {"lora": "LoRA", "kl": "KL", "ppo": "PPO", "sft": "SFT", "dpo": "DPO", "nll": "NLL", "r": "r"}


# Names that read as code rather than words (the config's, kept for TRL parity).
LABELS = {"lam": "GAE lambda", "gamma": "Discount (gamma)", "vf_coef": "Value loss coef",
          "cliprange": "Clip range", "cliprange_value": "Value clip range"}


def label_for(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    words = [ACRONYMS.get(w, w) for w in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def default_text(value) -> str:
    if isinstance(value, bool):
        return " Default: on." if value else " Default: off."
    return f" Default: {value}." if value != "" else ""


class TextField(forms.CharField):
    """Text as users mean it: NFC-normalised; lone surrogates (possible in JSON, not in Unicode text) refused."""

    def to_python(self, value):
        value = super().to_python(value)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise forms.ValidationError("Not valid Unicode text (a lone surrogate).", code="invalid") from None
            value = unicodedata.normalize("NFC", value)
        return value


def _bounds(spec: dict) -> dict:
    """min_value/max_value of an integer field, with the config's wording of the error."""
    lo, hi = spec.get("min"), spec.get("max")
    message = f"must be between {lo} and {hi}"
    return {"min_value": lo, "max_value": hi, "error_messages": {"min_value": message, "max_value": message}}


def field_for(spec: dict, *, override_steps: bool = False) -> forms.Field:
    """A form field for a config field. Bounds go to the HTML (and, for integers, to the field: a number the
    database cannot hold never reaches it); the config is the judge of the rest."""
    label = label_for(spec["name"])
    if override_steps:
        return forms.IntegerField(label="Steps", required=False, help_text="Blank: the experiment's steps.",
                                  **_bounds(spec),
                                  widget=forms.NumberInput(attrs={"min": 1, "data-steps-override": ""}))
    help_text = spec["help"] + default_text(spec["default"])
    kind = spec["type"]
    if spec.get("choices"):
        return forms.ChoiceField(label=label, choices=[(c, c) for c in spec["choices"]], help_text=help_text)
    if kind == "true or false":
        return forms.BooleanField(label=label, required=False, help_text=help_text)
    if kind == "an integer":
        return forms.IntegerField(label=label, required=False, help_text=help_text,
                                  widget=forms.NumberInput(attrs=_number_attrs(spec)))
    if kind == "a number":
        return forms.FloatField(label=label, required=False, help_text=help_text,
                                widget=forms.NumberInput(attrs=_number_attrs(spec)))
    return TextField(label=label, required=False, help_text=help_text, max_length=500)


def common_int_field(name: str, label: str) -> forms.IntegerField:
    spec = _base_spec(name)
    return forms.IntegerField(label=label, help_text=spec["help"], **_bounds(spec),
                              widget=forms.NumberInput(attrs=_number_attrs(spec)))
