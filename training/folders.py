"""Moving finished folders into place (checkpoints, final models). Light: the web app's worker imports it
before torch is loaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(source: Path, target: Path) -> bool:
    """Move folder `source` to `target`, replacing it, by renames: a reader sees the old one or the new one."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)  # left by a process of the same pid that died mid-replace
    if target.exists():
        target.rename(old)
    source.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return True
