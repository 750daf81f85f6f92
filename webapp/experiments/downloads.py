"""A run's model folders (its final model, its published checkpoints) as zip files streamed while they are
written: nothing is held in memory or written to disk. Folders come from the run's own out_dir, never from
a path in the request; symbolic links and anything outside ARTIFACT_ROOT are never read."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

CHUNK = 1 << 20


class _Pipe(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken out as they come (zipfile then writes data
    descriptors after each file instead of seeking back)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def inside_artifacts(folder: Path) -> bool:
    root = Path(settings.ARTIFACT_ROOT).resolve()
    path = folder.resolve()
    return path != root and path.is_relative_to(root) and folder.is_dir() and not folder.is_symlink()


def files_of(folder: Path) -> list[Path]:
    """The regular files under `folder` (no links, none through a linked folder), sorted."""
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        if any(parent.is_symlink() for parent in path.relative_to(folder).parents if str(parent) != "."):
            continue
        out.append(path)
    return out


def stream_zip(folder: Path, name: str) -> Iterator[bytes]:
    """The files under `folder` as a zip (stored, not compressed: weights do not compress), in `name`/."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in files_of(folder):
            info = zipfile.ZipInfo.from_file(path, f"{name}/{path.relative_to(folder).as_posix()}")
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()
