"""Models by reference, never by server path: what a user may name as a base or reward model, what a
worker loads for it, and how configs are shown without the server's paths.

A reference is `tiny` or `demo` (built in), a hub id (`org/name`), `run:<id>` (the final model of a
finished run the user can see) or a path inside one of the administrator's PTLAB_DATA_ROOTS. Anything else
is refused with one message, whether or not such a path exists."""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.conf import settings

from training.paths import local_paths, under_roots

BUILTIN_MODELS = ("tiny", "demo")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
RUN_REF = re.compile(r"^run:([1-9][0-9]{0,17})$")
MODEL_FIELDS = ("model", "reward_model", "reference_model")  # config keys that name a model


class ModelReferenceError(ValueError):
    pass


def refused_message() -> str:
    roots = ", ".join(str(r) for r in settings.PTLAB_DATA_ROOTS)
    where = f", or a folder under {roots}" if roots else ""
    return (f"Not a model you can use. Give tiny, demo, a hub id (org/name), run:<id> of a finished run you "
            f"can see{where}.")


def check_model_reference(value: str, user, *, allow_empty: bool = False) -> str:
    """The reference as stored (stripped), or ModelReferenceError with `refused_message()`: one message for
    every refusal, so that it never tells whether a path or a run exists."""
    value = value.strip()
    if value == "" and allow_empty:
        return value
    if value in BUILTIN_MODELS or (HUB_ID.match(value) and ".." not in value):
        return value
    match = RUN_REF.match(value)
    if match:
        if user is not None and _usable_run(int(match.group(1)), user):
            return value
        raise ModelReferenceError(refused_message())
    if inside_data_root(value):
        return str(Path(os.path.realpath(value)))
    raise ModelReferenceError(refused_message())


def inside_data_root(value: str) -> bool:
    """A path a user may name: absolute (no `~`, no `..`), its real path (symbolic links followed) inside a
    data root and not inside the artifacts (other users' runs)."""
    if under_roots(value, [settings.ARTIFACT_ROOT]):
        return False
    return under_roots(value, settings.PTLAB_DATA_ROOTS)


def refused_path_message() -> str:
    """One message for every refused server path, whether or not it exists."""
    roots = ", ".join(str(r) for r in settings.PTLAB_DATA_ROOTS) or "none configured"
    return (f"Not a file or folder this server may read: give a path under the folders the administrator lists "
            f"in PTLAB_DATA_ROOTS ({roots}).")


def check_server_paths(cfg) -> None:
    """Before a run is queued: every server path its config reads (training.paths.local_paths) lies under a data
    root, or is the app's own under the artifacts (a run's model it resolved from run:<id>, an upload). Raises
    ConfigError naming the config key, with `refused_path_message()`."""
    from training.config import ConfigError

    for key, path in local_paths(cfg):
        if not (under_roots(path, settings.PTLAB_DATA_ROOTS) or under_roots(path, [settings.ARTIFACT_ROOT])):
            raise ConfigError(key, refused_path_message())


def _usable_run(pk: int, user) -> bool:
    from webapp.experiments.models import Experiment, Run

    return Run.objects.filter(pk=pk, state=Run.State.SUCCEEDED, experiment__in=Experiment.objects.visible_to(user)
                              ).exclude(out_dir="").exists()


def public_value(value):
    """A config value as users see it: a path inside the artifacts becomes `run:<id>` (a run's model) or
    its name relative to the artifacts (an uploaded dataset); the server's folders are never shown."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    root = str(settings.ARTIFACT_ROOT).rstrip("/") + "/"
    if not value.startswith(root):
        return value
    rest = value[len(root):]
    match = re.match(r"^runs/([0-9]+)-[0-9a-f]+(/|$)", rest)
    if match:
        return f"run:{match.group(1)}"
    return rest


def public_config(config) -> dict:
    """The config with public_value applied to every value (configs are flat dicts of scalars)."""
    if not isinstance(config, dict):
        return config
    return {k: public_value(v) for k, v in config.items()}


def model_path(ref: str) -> str:
    """What a worker loads for a checked reference: `run:<id>` -> that run's final model folder; anything
    else as it is (built-ins and hub ids by name, data-root paths already resolved)."""
    match = RUN_REF.match(ref or "")
    if not match:
        return ref
    from webapp.experiments.models import Run

    run = Run.objects.filter(pk=int(match.group(1))).exclude(out_dir="").first()
    return str(run.model_dir) if run else ref


def public_text(text: str) -> str:
    """Free text (a log line, an error) with artifact paths shown as public_value shows them."""
    root = str(settings.ARTIFACT_ROOT).rstrip("/") + "/"
    if not text or root not in text:
        return text
    pattern = re.escape(root) + r"[^\s'\"]*"
    return re.sub(pattern, lambda m: str(public_value(m.group(0))), text)


def public_status(status: dict) -> dict:
    """A run's polled status (Run.status) with public_text applied to its log, error and traceback."""
    return {**status, "log": [public_text(line) for line in status.get("log", [])],
            "error": public_text(status.get("error", "")), "traceback": public_text(status.get("traceback", ""))}


def signal_model_paths(spec):
    """A signal spec (or a list of them) with each model it names (`path`, `model`, nested in `signals`) as a
    worker loads it: `run:<id>` becomes that run's model folder."""
    if isinstance(spec, list):
        return [signal_model_paths(s) for s in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: model_path(v) if k in ("path", "model") and isinstance(v, str) else v for k, v in spec.items()}
    if isinstance(out.get("signals"), list):
        out["signals"] = signal_model_paths(out["signals"])
    return out
