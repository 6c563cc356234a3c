"""Atomic writes: a file or folder is either absent or complete, never half written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str | Path, final: Path, mode: int = 0o666) -> None:
    """Give a temporary file the permissions a plain open() would have, then rename it into place.

    mkstemp/mkdtemp create private files (0600/0700); results on a shared cluster folder must not be.
    """
    os.chmod(tmp, mode & ~_umask())
    os.replace(tmp, final)


def canonical_json(obj: Any) -> str:
    """Stable text for an object (sorted keys, fixed float repr): same content, same bytes."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` only if the file's content differs, keeping its mtime otherwise.

    Snakemake reruns what depends on a file whose mtime moved: this is what makes
    regeneration incremental. Returns True when the file was (re)written.
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    write_text_atomic(path, text)
    return True


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, canonical_json(obj))


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final` in one rename.

    On any error (or kill) the temporary folder is what is left, never a partial `final`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        _publish(tmp, final, 0o777)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path to write; renamed onto `final` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
