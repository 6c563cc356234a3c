"""Atomic writes: a file or folder is either absent or complete, never half written."""

from __future__ import annotations

import contextlib
import json
import math
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


def _blame_final(exc: BaseException, tmp: str | Path, final: Path) -> None:
    """Make an OSError raised while writing a temporary name the final path the user asked for.

    The CLI turns "no space left", "read-only file system" and "permission denied" into one line
    naming `exc.filename`; the hidden temporary is gone by then and would only confuse.
    """
    if isinstance(exc, OSError):
        name = str(exc.filename) if exc.filename is not None else None
        if name is None or name.startswith(str(tmp)):
            exc.filename = str(final)


def _temporary(final: Path, suffix: str, folder: bool = False) -> str:
    """Create the hidden temporary sibling `.NAME.<random><suffix>` of `final` (a file or a folder)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        if folder:
            return tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
        os.close(fd)
        return tmp
    except OSError as exc:
        _blame_final(exc, final.parent / f".{final.name}.", final)
        raise


def canonical_json(obj: Any) -> str:
    """Stable text for an object (sorted keys, fixed float repr): same content, same bytes."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def plain_json(value: Any) -> Any:
    """A strict-JSON copy of a value: NaN and inf to None, NumPy scalars to Python, bytes decoded,
    tuples to lists, keys to str, any other object to its str (metadata of vendor files, reports)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:  # a NumPy scalar
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    path = Path(path)
    tmp = _temporary(path, ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _blame_final(exc, tmp, path)
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

    On any error the temporary folder is removed; after a kill it is what is left (a hidden
    `.NAME.*.tmp` sibling), never a partial `final`. An older `final` is renamed aside before the
    new one is renamed in, and deleted only then: a kill at any moment leaves the old folder, the
    new one, or none under the final name, never a half-deleted one.
    """
    final = Path(final)
    tmp = Path(_temporary(final, ".tmp", folder=True))
    old = None
    try:
        yield tmp
        if final.exists():
            old = Path(_temporary(final, ".old.tmp", folder=True))
            os.replace(final, old)  # a rename onto an empty folder replaces it
        _publish(tmp, final, 0o777)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            with contextlib.suppress(OSError):
                if final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(old, final)  # the new one did not make it: keep the old one
        _blame_final(exc, tmp, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path to write; renamed onto `final` only on success."""
    final = Path(final)
    tmp = _temporary(final, f".tmp{suffix}")
    try:
        yield Path(tmp)
        _publish(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _blame_final(exc, tmp, final)
        raise
