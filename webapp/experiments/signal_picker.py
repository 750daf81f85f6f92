"""A reward signal chosen in a form: a select of the registry's kinds (built-ins and installed plugins) and,
for each kind, one field per parameter, typed from the signal's field specs. It turns the fields into the
signal spec that the API and the CLI config name (`reward`, `gold_reward`, `monitors`) and back; the
signal's own checks judge the parameters, and an error goes beside the parameter's field."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from training.fields import ConfigError
from training.rewards import SignalError, build, describe
from webapp.experiments.references import ModelReferenceError, check_model_reference

MODEL_PARAMS = ("path", "model")  # string parameters that name a model: references, like base_model
ALWAYS_STORED = ("template",)  # stored with the run even at their default (a judge's prompt)
LONG_TEXT = ("template",)
SKIP_KINDS = ("task",)  # the blank choice stands for the task's own reward


def checked_models(spec: Any, user) -> Any:
    """A nested spec (a weighted sum's parts) with every model it names checked as a reference."""
    if isinstance(spec, list):
        return [checked_models(s, user) for s in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: check_model_reference(v, user) if k in MODEL_PARAMS and isinstance(v, str) and v.strip() else v
           for k, v in spec.items()}
    if isinstance(out.get("signals"), list):
        out["signals"] = checked_models(out["signals"], user)
    return out


def signal_kinds() -> list[dict[str, Any]]:
    return [d for d in describe() if d["kind"] not in SKIP_KINDS]


def _param_field(kind: str, spec: dict) -> forms.Field:
    help_text = spec["help"]
    label = spec["name"].replace("_", " ").capitalize()
    attrs = {"data-signal-kind": kind}
    if spec.get("choices"):
        return forms.ChoiceField(label=label, choices=[(c, c) for c in spec["choices"]], help_text=help_text,
                                 required=False, initial=spec["default"], widget=forms.Select(attrs=attrs))
    kind_of = spec["type"]
    if kind_of == "true or false":
        return forms.BooleanField(label=label, help_text=help_text, required=False, initial=spec["default"],
                                  widget=forms.CheckboxInput(attrs=attrs))
    if kind_of == "an integer":
        bounds = {k: spec[k] for k in ("min", "max") if spec.get(k) is not None}
        return forms.IntegerField(label=label, help_text=help_text, required=False, initial=spec["default"],
                                  widget=forms.NumberInput(attrs={**attrs, **bounds}))
    if kind_of == "a number":
        return forms.FloatField(label=label, help_text=help_text, required=False, initial=spec["default"],
                                widget=forms.NumberInput(attrs={**attrs, "step": "any"}))
    if kind_of == "a string":
        if spec["name"] in LONG_TEXT:
            widget = forms.Textarea(attrs={**attrs, "rows": 6})
        elif spec["name"] in MODEL_PARAMS:
            widget = forms.TextInput(attrs={**attrs, "list": "signal-model-choices"})
        else:
            widget = forms.TextInput(attrs=attrs)
        return forms.CharField(label=label, help_text=help_text, required=False, initial=spec["default"],
                               max_length=20000, strip=False, widget=widget)
    # lists, objects and anything else a plugin declares: JSON text
    return forms.CharField(label=label, help_text=f"{help_text} (JSON)", required=False,
                           initial=json.dumps(spec["default"]), max_length=20000,
                           widget=forms.TextInput(attrs={**attrs, "data-json": ""}))


class SignalPicker:
    """The fields of one signal slot named `prefix` (`gold_reward`, `grpo-reward`, `monitors-0`)."""

    def __init__(self, prefix: str, label: str, blank: str, *, named: bool = False, help_text: str = ""):
        self.prefix, self.label, self.blank, self.named, self.help_text = prefix, label, blank, named, help_text
        self.kinds = signal_kinds()

    def field_name(self, kind: str, param: str) -> str:
        return f"{self.prefix}-{kind}-{param}"

    def fields(self) -> dict[str, forms.Field]:
        choices = [("", self.blank)] + [(d["kind"], d["kind"] + (" (plugin)" if d["plugin"] else ""))
                                        for d in self.kinds]
        out: dict[str, forms.Field] = {self.prefix: forms.ChoiceField(
            label=self.label, choices=choices, required=False, help_text=self.help_text,
            widget=forms.Select(attrs={"data-signal-picker": self.prefix}))}
        if self.named:
            out[f"{self.prefix}-name"] = forms.CharField(
                label="Name", required=False, max_length=64,
                help_text="Logged as eval/reward/<name>; blank: the kind.")
        for d in self.kinds:
            for spec in d["params"]:
                out[self.field_name(d["kind"], spec["name"])] = _param_field(d["kind"], spec)
        return out

    def groups(self, form: forms.Form) -> list[dict]:
        """For the template: each kind with its description and bound parameter fields."""
        return [{"kind": d["kind"], "description": d["description"],
                 "fields": [form[self.field_name(d["kind"], p["name"])] for p in d["params"]]} for d in self.kinds]

    def spec(self, form: forms.Form, data: dict, user) -> str | dict:
        """The signal spec the fields describe ("" for the blank choice), checked; errors go beside the fields."""
        kind = data.get(self.prefix) or ""
        if not kind:
            return ""
        desc = next(d for d in self.kinds if d["kind"] == kind)
        spec: dict[str, Any] = {"kind": kind}
        name = (data.get(f"{self.prefix}-name") or "").strip() if self.named else ""
        if name:
            spec["name"] = name
        ok = True
        for p in desc["params"]:
            field = self.field_name(kind, p["name"])
            value = data.get(field)
            if field in form.errors:
                ok = False
                continue
            if isinstance(form.fields[field].widget, forms.TextInput) and "data-json" in form.fields[field].widget.attrs:
                text = (value or "").strip()
                try:
                    value = json.loads(text) if text else p["default"]
                except json.JSONDecodeError as e:
                    form.add_error(field, f"Not valid JSON ({e.msg} at column {e.colno}).")
                    ok = False
                    continue
            elif value is None or (value == "" and p["type"] != "a string"):
                value = p["default"]
            elif p["name"] in LONG_TEXT and isinstance(value, str):
                value = value.replace("\r\n", "\n")  # a browser's textarea sends CRLF line ends
            try:
                if p["name"] in MODEL_PARAMS and isinstance(value, str) and value.strip():
                    value = check_model_reference(value, user)
                elif p["name"] == "signals" and isinstance(value, list):
                    value = checked_models(value, user)
            except ModelReferenceError as e:
                form.add_error(field, str(e))
                ok = False
                continue
            if value != p["default"] or p["name"] in ALWAYS_STORED:
                spec[p["name"]] = value
        if not ok:
            return ""
        try:
            build(spec)
        except (SignalError, ConfigError) as e:
            field = self.field_name(kind, e.key)
            target = field if field in form.fields else (f"{self.prefix}-name" if e.key == "name" and self.named
                                                         else self.prefix)
            form.add_error(target, e.message)
            return ""
        return kind if len(spec) == 1 else spec

    def values(self, spec: Any) -> tuple[dict[str, Any], list[str]]:
        """Form values that describe `spec` (for the API and for cloning), and errors for what they cannot."""
        if spec in ("", None, "task"):
            return {self.prefix: ""}, []
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            return {}, ["A signal: its kind as a string, or an object with a kind and parameters."]
        kind = spec.get("kind")
        desc = next((d for d in self.kinds if d["kind"] == kind), None)
        if desc is None:
            known = ", ".join(d["kind"] for d in self.kinds)
            return {}, [f"unknown signal {kind!r}; known: {known}"]
        out: dict[str, Any] = {self.prefix: kind}
        errors = []
        params = {p["name"]: p for p in desc["params"]}
        for key, value in spec.items():
            if key == "kind":
                continue
            if key == "name":
                if self.named:
                    out[f"{self.prefix}-name"] = value
                continue  # the name of a training or gold signal is not shown anywhere
            if key not in params:
                errors.append(f"{key}: unknown parameter of {kind}; allowed: {', '.join(params) or 'none'}")
                continue
            field = self.field_name(kind, key)
            json_text = params[key]["type"] not in ("a string", "an integer", "a number", "true or false") \
                and not params[key].get("choices")
            out[field] = json.dumps(value) if json_text else value
        return out, errors
