"""Readers for experimental micrographs: every vendor format through one door, clear refusals.

`read_micrograph` turns a file from a microscope (DM3/DM4, EMD, SER/EMI, MRC, TIFF, PNG, NPY)
into 2-D float32 intensity images with a pixel size in Å. Everything a user can fix (a missing
calibration, a stack where one image was expected, a truncated or absurd file) is raised as
`HrtemflowError` naming the file and saying what to do; a library's exception never escapes raw.

Sizes declared in a file's header are checked *before* its data are read, so a corrupt or
hostile header (40,000 x 40,000 pixels, a 2 GiB MRC extended header in a 50 KB file) is refused
without allocating memory for it.

Pixels are what the image shows: a palette TIFF is read through its colour map, a MinIsWhite
TIFF is inverted, and an intensity range that float32 cannot carry (1e38, or a contrast of 1 on
an offset of 1e9) is mapped affinely into 0..1000 (the networks normalise each window to mean 0
and std 1, so no prediction changes). Every such change is recorded in `Micrograph.metadata`;
what the user should hear about is in `metadata["warnings"]` (one-line strings for the caller to
print), never in a Python warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..core.atomic import plain_json
from ..core.errors import HrtemflowError

SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".dm3",
    ".dm4",
    ".emd",
    ".ser",
    ".emi",
    ".mrc",
    ".mrcs",
    ".tif",
    ".tiff",
    ".png",
    ".npy",
)
FRAMES_CHOICES: tuple[str, ...] = ("refuse", "all")

MIN_SIDE = 16  # px: below this there is nothing to analyse
MAX_SIDE = 16384  # px per side: larger than any camera; a bigger header is corrupt
MAX_PIXELS = 2**28  # all frames together: 1 GiB as float32
# File calibrations outside this range (Å per pixel) are not TEM pixel sizes: a print resolution
# (72 dpi is 3.5e6 Å) or a placeholder. They are treated as "no calibration".
PLAUSIBLE_PIXEL_A = (1e-3, 1e4)


@dataclass(frozen=True)
class Micrograph:
    """One 2-D image ready for analysis.

    data: (ny, nx) float32 intensity. pixel_size_A: Å per pixel (square pixels). source: the
    file path. frame: index in a stack or multi-image file, None for a single image.
    metadata: what was read (format, original dtype/shape/unit, where the calibration came from,
    instrument information when the file has it); JSON-serialisable.
    """

    data: np.ndarray
    pixel_size_A: float | None
    source: str
    frame: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SizeLimits:
    """Bounds checked against a file's header before its data are read."""

    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE
    max_pixels: int = MAX_PIXELS


@dataclass
class _Raw:
    """One dataset of a file before normalisation (internal)."""

    data: np.ndarray  # (..., y, x) or (..., y, x, c) when `channels`
    scale_yx: tuple[float | None, float | None] = (None, None)  # pixel size in `unit`
    unit: str | None = None
    channels: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    cal_source: str | None = None  # where in the file the calibration was found
    cal_note: str | None = None  # why a present value is not trusted
    warnings: list[str] = field(default_factory=list)  # one-line notes for metadata["warnings"]


# ---------------------------------------------------------------------------------------------
# public API


def read_micrograph(
    path: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    frames: str = "refuse",
    limits: SizeLimits | None = None,
) -> list[Micrograph]:
    """Read a micrograph file into one Micrograph per image.

    `pixel_size_nm` (nm per pixel) overrides the file's calibration and is required when the
    file has none. A file holding several frames is refused unless `frames="all"`, because
    silently analysing frame 0 of a movie would be wrong more often than right.
    """
    p = Path(path)
    limits = limits or SizeLimits()
    ext = p.suffix.lower()
    try:
        _check_options(p, pixel_size_nm, frames)
        ext = _check_file(p)
        with _quiet_libraries():
            raws = _READERS[ext](p, limits)
            return _finish(p, ext, raws, pixel_size_nm, frames, limits)
    except HrtemflowError as exc:
        text = _fit_message(p, str(exc))
        if text == str(exc):
            raise
        raise type(exc)(text) from exc
    except MemoryError as exc:
        raise HrtemflowError(
            _fit_message(
                p, f"{p}: not enough memory to read this file; crop or bin it, or use a machine with more memory"
            )
        ) from exc
    except Exception as exc:  # noqa: BLE001 - every library failure becomes a clear message
        raise HrtemflowError(
            _fit_message(
                p,
                f"cannot read {p}: the file is truncated or corrupt, or not a valid {ext} file "
                f"({type(exc).__name__}: {_short(exc)}). Re-export it from the acquisition software "
                "or copy it again.",
            )
        ) from exc


def list_micrographs(folder: str | os.PathLike[str]) -> list[Path]:
    """Supported micrograph files in `folder` (not recursive), sorted.

    A TIA `<name>_<n>.ser` next to its `<name>.emi` (any number of digits, any case) is left
    out: the .emi reads it (with the metadata), so listing both would analyse the same image
    twice. A .ser without an .emi is listed.
    """
    d = Path(folder)
    if not d.is_dir():
        raise HrtemflowError(f"{d} is not a folder: pass a folder of micrographs")
    names = sorted(os.listdir(d))
    files = [
        d / name
        for name in names
        if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_EXTENSIONS and (d / name).is_file()
    ]
    companions = {path for f in files if f.suffix.lower() == ".emi" for _, path in _emi_companions(f, names)}
    return sorted(f for f in files if f not in companions)


# ---------------------------------------------------------------------------------------------
# checks shared by all formats


def _check_options(p: Path, pixel_size_nm: float | None, frames: str) -> None:
    if frames not in FRAMES_CHOICES:
        raise HrtemflowError(f"frames must be one of {FRAMES_CHOICES}, got {frames!r}")
    if pixel_size_nm is not None:
        ok = isinstance(pixel_size_nm, (int, float, np.floating, np.integer)) and not isinstance(pixel_size_nm, bool)
        if not ok or not math.isfinite(float(pixel_size_nm)) or float(pixel_size_nm) <= 0:
            raise HrtemflowError(f"{p}: --pixel-size must be a positive number of nm per pixel, got {pixel_size_nm!r}")


def _check_file(p: Path) -> str:
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise HrtemflowError(
            f"{p}: unsupported file type {ext or '(no extension)'!r}; supported are "
            f"{', '.join(SUPPORTED_EXTENSIONS)}. Export the image to TIFF if your software can."
        )
    if not p.exists():
        raise HrtemflowError(f"{p} does not exist: check the path")
    if not p.is_file():
        raise HrtemflowError(f"{p} is not a file: pass a micrograph file")
    if not os.access(p, os.R_OK):
        raise HrtemflowError(f"{p} is not readable: check its permissions")
    if p.stat().st_size == 0:
        raise HrtemflowError(f"{p} is empty (0 bytes): the file is truncated; copy it again")
    return ext


def _check_declared_size(p: Path, ny: int, nx: int, n_frames: int, limits: SizeLimits) -> None:
    """Refuse absurd sizes from a header before any data are read (no allocation)."""
    ny, nx, n_frames = int(ny), int(nx), int(n_frames)
    if ny <= 0 or nx <= 0 or n_frames <= 0:
        raise HrtemflowError(
            f"cannot read {p}: its header declares an empty image ({ny} x {nx} px, {n_frames} "
            "frames); the file is corrupt"
        )
    total = ny * nx * n_frames
    if max(ny, nx) > limits.max_side or total > limits.max_pixels:
        frames_txt = f" x {n_frames} frames" if n_frames > 1 else ""
        raise HrtemflowError(
            f"{p}: the file declares an image of {ny} x {nx} pixels{frames_txt}, over the limit of "
            f"{limits.max_side} px per side and {limits.max_pixels} pixels in all; refusing to read "
            "it. If the file is genuine, crop or bin it first (or raise SizeLimits); otherwise its "
            "header is corrupt."
        )


def _check_extent(p: Path, end: int, what: str = "image data") -> None:
    size = p.stat().st_size
    if end > size:
        raise HrtemflowError(
            f"cannot read {p}: the file is truncated ({size} bytes, but its header places the "
            f"{what} up to byte {end}); copy it again or re-export it"
        )


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the libraries' warnings and log lines: their findings reach the user as our errors."""
    loggers = [logging.getLogger(name) for name in ("tifffile", "rsciio", "mrcfile", "PIL")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


MESSAGE_LIMIT = 1000  # characters of an error message or a metadata warning: one line


def _fit_message(p: Path, text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of at most `limit` characters that still names the file: a long path is cut to its name."""
    text = " ".join(str(text).split())  # every line break (also \r, \x1c-\x1e, \x85, \u2028) becomes a space
    if len(text) <= limit:
        return text
    full, name = " ".join(str(p).split()), " ".join(p.name.split())
    if full and full != name:
        text = text.replace(full, f".../{name}")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# normalisation: colour, frames, calibration, finiteness


def _finish(
    p: Path,
    ext: str,
    raws: list[_Raw],
    pixel_size_nm: float | None,
    frames: str,
    limits: SizeLimits,
) -> list[Micrograph]:
    planes: list[tuple[np.ndarray, _Raw, dict[str, Any]]] = []
    skipped: list[str] = []
    for raw in raws:
        got = _to_planes(p, raw)
        if got is None:
            skipped.append(f"{raw.data.ndim}-D {tuple(raw.data.shape)}")
            continue
        for plane, extra in got:
            planes.append((plane, raw, extra))
    if not planes:
        what = f" (found {', '.join(skipped)}: a spectrum or line profile?)" if skipped else ""
        raise HrtemflowError(f"{p} holds no 2-D image{what}; pass a file with a micrograph")

    n = len(planes)
    if n > 1 and frames == "refuse":
        raise HrtemflowError(
            f"{p} holds {n} frames (an image stack, video or several images); pass --frames all "
            "(frames='all') to analyse every frame separately, or save the one image you want "
            "(e.g. the drift-corrected sum) as a single-image file"
        )

    cal_cache: dict[int, tuple[float | None, dict[str, Any]]] = {}
    out: list[Micrograph] = []
    for index, (plane, raw, extra) in enumerate(planes):
        ny, nx = plane.shape
        if min(ny, nx) < limits.min_side:
            raise HrtemflowError(
                f"{p}: the image is {ny} x {nx} pixels, too small to analyse (at least "
                f"{limits.min_side} x {limits.min_side} pixels needed)"
            )
        if max(ny, nx) > limits.max_side or ny * nx * n > limits.max_pixels:
            _check_declared_size(p, ny, nx, n, limits)
        if id(raw) not in cal_cache:
            cal_cache[id(raw)] = _calibration(p, raw, pixel_size_nm)
        pixel_A, cal_md = cal_cache[id(raw)]
        data, finite_md, notes = _to_float32(p, plane, index if n > 1 else None)
        md: dict[str, Any] = plain_json(
            {
                "format": ext.lstrip("."),
                "original_dtype": str(raw.data.dtype),
                "original_shape": [int(s) for s in raw.data.shape],
                "n_frames": n,
                **cal_md,
                **plain_json(raw.info),
                **extra,
                **finite_md,
            }
        )
        if skipped:
            md["skipped_datasets"] = skipped
        notes = [*raw.warnings, *notes]
        if notes:
            md["warnings"] = [_fit_message(p, note) for note in notes]
        out.append(Micrograph(data, pixel_A, str(p), index if n > 1 else None, md))
    return out


def _to_planes(p: Path, raw: _Raw) -> list[tuple[np.ndarray, dict[str, Any]]] | None:
    """Split a dataset into 2-D intensity planes; None if it holds no image (1-D data)."""
    a = raw.data
    extra: dict[str, Any] = {}
    if a.dtype.names:  # structured RGB(A), e.g. DigitalMicrograph colour images
        names = [c for c in ("R", "G", "B", "A") if c in a.dtype.names]
        if len(names) < 3:
            raise HrtemflowError(f"{p}: unsupported structured pixel type {a.dtype}")
        a = np.stack([a[c] for c in names], axis=-1)
        raw = _Raw(a, raw.scale_yx, raw.unit, True, raw.info)
    if a.dtype.kind == "V" or a.dtype.subdtype is not None:
        raise HrtemflowError(f"{p}: unsupported pixel type {a.dtype}; expected numbers")
    if np.iscomplexobj(a):
        raise HrtemflowError(
            f"{p} holds complex-valued data (e.g. a reconstructed exit wave or an FFT), not an "
            "intensity image; save its intensity (|psi|^2) or amplitude as a real image and read that"
        )
    if a.dtype.kind not in "biuf":
        raise HrtemflowError(f"{p}: unsupported pixel type {a.dtype}; expected numbers")
    if raw.channels:
        if a.ndim < 3:
            raise HrtemflowError(f"{p}: colour data of shape {a.shape} has no image axes")
        a, colour = _to_intensity(p, a)
        extra.update(colour)
    if a.ndim < 2:
        return None
    if a.ndim == 2:
        return [(a, extra)]
    if a.ndim > 4:
        raise HrtemflowError(
            f"{p} holds {a.ndim}-D data of shape {tuple(a.shape)}, not 2-D images (a 4D-STEM "
            "dataset?); hrtemflow reads single images or stacks of images"
        )
    stack = a.reshape((-1,) + a.shape[-2:])
    return [(stack[i], dict(extra)) for i in range(stack.shape[0])]


def _to_intensity(p: Path, a: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Colour (..., c) -> intensity. Identical channels are a grey image saved as RGB: keep one."""
    nc = a.shape[-1]
    md: dict[str, Any] = {}
    if nc in (2, 4):  # grey+alpha or RGBA: alpha carries no intensity
        alpha = a[..., -1]
        if alpha.size and not np.all(alpha == alpha.flat[0]):
            md["alpha_ignored"] = True
        a = a[..., :-1]
        nc -= 1
    if nc == 1:
        return a[..., 0], {**md, "colour": "grey"}
    if nc != 3:
        raise HrtemflowError(
            f"{p}: unsupported colour image with {a.shape[-1]} channels (samples per pixel); hrtemflow reads "
            "grey, grey+alpha, RGB or RGBA images. Save the micrograph as a single-channel (greyscale) image"
        )
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r, {**md, "colour": "rgb-identical-channels"}
    return _luminance(r, g, b), {**md, "colour": "rgb-luminance"}


def _luminance(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance, as skimage.color.rgb2gray; in float64 where float32 could overflow or round."""
    small = all(c.dtype.itemsize <= 2 for c in (r, g, b))  # (u)int8/16 and float16: float32 is exact and safe
    work = np.float32 if small else np.result_type(r.dtype, g.dtype, b.dtype, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return 0.2125 * r.astype(work) + 0.7154 * g.astype(work) + 0.0721 * b.astype(work)


# Where a float32 image can no longer be normalised (mean 0, std 1 per window) without losing its contrast, the
# image is mapped affinely into RESCALED_RANGE: magnitudes beyond _F32_MAX_MAGNITUDE (squares and window sums
# overflow float32), contrasts below _F32_MIN_CONTRAST (squares underflow) or a contrast below
# _F32_MIN_RELATIVE_CONTRAST of the magnitude (float32 keeps fewer than ~4000 grey levels, and window means in
# float32 err by more than a part in a thousand of the contrast).
RESCALED_RANGE = (0.0, 1000.0)
_F32_MAX_MAGNITUDE = 1e15
_F32_MIN_CONTRAST = 1e-15
_F32_MIN_RELATIVE_CONTRAST = 2.0**-12
_CHUNK_PIXELS = 1 << 22  # rows are converted in blocks of about this many pixels (bounded temporaries)


def _to_float32(p: Path, plane: np.ndarray, frame: int | None) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """float32 intensity with finite values and the contrast kept; (data, metadata, warnings).

    The range is checked in the file's own precision (float64, int64) before the cast: a range float32 cannot
    carry is mapped affinely into RESCALED_RANGE; NaN/inf pixels are filled with the median; an image without
    finite values or without contrast is refused.
    """
    where = f" (frame {frame})" if frame is not None else ""
    a = plane.view(np.uint8) if plane.dtype.kind == "b" else plane
    finite: np.ndarray | None = None
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        n_good = int(np.count_nonzero(finite))
        if n_good == 0:
            raise HrtemflowError(
                f"{p}{where} contains no finite values (all NaN or inf): the file holds no usable image"
            )
        if n_good == a.size:
            finite = None
            lo, hi = a.min(), a.max()
        else:
            lo, hi = a.min(where=finite, initial=np.inf), a.max(where=finite, initial=-np.inf)
    else:
        lo, hi = a.min(), a.max()
    if lo == hi:
        raise HrtemflowError(
            f"{p}{where} has no contrast: every {'finite ' if finite is not None else ''}pixel is {_num_text(lo)}, "
            "so it holds no usable image (a blank, dark or saturated frame?); pass a micrograph"
        )
    md: dict[str, Any] = {}
    notes: list[str] = []
    why = _float32_problem(a.dtype, lo, hi)
    if why is None:
        out = np.ascontiguousarray(a, dtype=np.float32)
        if finite is not None and np.may_share_memory(out, a):
            out = out.copy()  # the NaN fill below must not write into the reader's array
    else:
        out = _rescaled(a, lo, hi)
        md["intensity_rescaled"] = {"from": [_plain_number(lo), _plain_number(hi)], "to": list(RESCALED_RANGE)}
        md["intensity_rescaled_reason"] = why
        notes.append(
            f"{p}{where}: intensity mapped affinely from [{_num_text(lo, True)}, {_num_text(hi, True)}] to "
            f"[{RESCALED_RANGE[0]:g}, {RESCALED_RANGE[1]:g}] because {why}; predictions do not change "
            "(each window is normalised)"
        )
    if finite is not None:
        n_bad = int(finite.size - np.count_nonzero(finite))
        fill = np.float32(np.median(out[finite]))
        out[~finite] = fill
        md["nonfinite_pixels_filled"] = n_bad
        notes.append(f"{p}{where}: {n_bad} NaN/inf pixels replaced by the median {float(fill):g}")
    return out, md, notes


def _float32_problem(dtype: np.dtype, lo: Any, hi: Any) -> str | None:
    """Why the range [lo, hi] (numbers of `dtype`) cannot be cast to float32 as it is; None if it can."""
    if dtype.kind in "iu":
        lo_i, hi_i = int(lo), int(hi)
        magnitude, contrast = max(abs(lo_i), abs(hi_i)), hi_i - lo_i
        if magnitude <= 2**24:  # float32 holds these integers exactly, and the contrast is at least 1
            if contrast >= _F32_MIN_RELATIVE_CONTRAST * magnitude:
                return None
            return f"its contrast ({contrast}) is too small a fraction of its magnitude ({magnitude}) for float32"
        lo_f, hi_f = np.float64(lo_i), np.float64(hi_i)
    else:
        work = np.result_type(dtype, np.float64)
        lo_f, hi_f = work.type(lo), work.type(hi)
    with np.errstate(over="ignore"):
        magnitude = max(abs(lo_f), abs(hi_f))
        relative = hi_f / magnitude - lo_f / magnitude  # in [0, 2]: no overflow for any range
    if magnitude > _F32_MAX_MAGNITUDE:
        return f"its values reach {_num_text(magnitude)}, beyond what float32 normalisation can take"
    if relative * magnitude < _F32_MIN_CONTRAST:
        return f"its contrast ({_num_text(hi_f - lo_f)}) is below what float32 normalisation can resolve"
    if relative < _F32_MIN_RELATIVE_CONTRAST:
        return (
            f"its contrast ({_num_text(hi_f - lo_f)}) is too small a fraction of its magnitude "
            f"({_num_text(magnitude)}) for float32"
        )
    return None


def _rescaled(a: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """(a - lo) / (hi - lo) mapped onto RESCALED_RANGE as float32, computed in blocks of rows in the
    file's precision; integers exactly (differences as uint64), float ranges wider than float64 halved."""
    out = np.empty(a.shape, dtype=np.float32)
    flat_a, flat_out = a.reshape(-1, a.shape[-1]), out.reshape(-1, a.shape[-1])
    rows = max(1, _CHUNK_PIXELS // max(1, a.shape[-1]))
    span = RESCALED_RANGE[1] - RESCALED_RANGE[0]
    if a.dtype.kind in "iu":
        lo_i, contrast = int(lo), float(int(hi) - int(lo))
        wide = np.int64 if a.dtype.kind == "i" else np.uint64
        for i in range(0, flat_a.shape[0], rows):
            diff = (flat_a[i : i + rows].astype(wide) - wide(lo_i)).view(np.uint64)  # exact: wraps into [0, 2**64)
            flat_out[i : i + rows] = diff.astype(np.float64) / contrast * span + RESCALED_RANGE[0]
        return out
    work = np.result_type(a.dtype, np.float64)
    lo_w, hi_w = work.type(lo), work.type(hi)
    with np.errstate(over="ignore", invalid="ignore"):
        halve = not np.isfinite(hi_w - lo_w)
        if halve:  # e.g. -1e308 .. 1e308
            lo_w, hi_w = lo_w / 2, hi_w / 2
        contrast = hi_w - lo_w
        for i in range(0, flat_a.shape[0], rows):
            block = flat_a[i : i + rows].astype(work)
            if halve:
                block /= 2
            flat_out[i : i + rows] = (block - lo_w) / contrast * span + RESCALED_RANGE[0]
    return out


def _plain_number(v: Any) -> int | float | str:
    v = v.item() if hasattr(v, "item") else v
    return v if isinstance(v, (int, float)) else str(v)


def _num_text(v: Any, exact: bool = False) -> str:
    """A number for a message: 6 significant digits, or (exact) the shortest text that reads back the same."""
    v = _plain_number(v)
    if isinstance(v, float):
        return repr(v) if exact else f"{v:.6g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# calibration

_LENGTH_A: dict[str, float] = {
    "m": 1e10,
    "meter": 1e10,
    "meters": 1e10,
    "metre": 1e10,
    "metres": 1e10,
    "cm": 1e8,
    "centimeter": 1e8,
    "centimeters": 1e8,
    "mm": 1e7,
    "millimeter": 1e7,
    "millimeters": 1e7,
    "um": 1e4,
    "µm": 1e4,
    "μm": 1e4,
    "micron": 1e4,
    "microns": 1e4,
    "micrometer": 1e4,
    "micrometers": 1e4,
    "micrometre": 1e4,
    "nm": 10.0,
    "nanometer": 10.0,
    "nanometers": 10.0,
    "nanometre": 10.0,
    "a": 1.0,
    "å": 1.0,
    "ang": 1.0,
    "angstrom": 1.0,
    "angstroms": 1.0,
    "ångström": 1.0,
    "pm": 0.01,
    "picometer": 0.01,
    "picometers": 0.01,
    "in": 2.54e8,
    "inch": 2.54e8,
    "inches": 2.54e8,
}
_NO_UNIT = {"", "px", "pixel", "pixels", "<undefined>", "undefined", "none", "unknown", "t.b.d."}
_ESCAPES = {"\\u00b5": "µ", "\\u03bc": "μ", "\\u00c5": "Å", "\\u212b": "Å"}


def _length_factor(unit: Any) -> tuple[float | None, str | None]:
    """Å per `unit`; (None, None) for no unit; (None, problem) for a non-length unit."""
    if unit is None:
        return None, None
    u = unit.decode("utf-8", "replace") if isinstance(unit, bytes) else str(unit)
    u = u.strip()
    for esc, ch in _ESCAPES.items():
        u = re.sub(re.escape(esc), ch, u, flags=re.IGNORECASE)
    key = u.replace("\u212b", "Å").lower()
    if key in _NO_UNIT:
        return None, None
    if key.startswith("1/") or key.startswith("1 /") or "^-1" in key or "⁻¹" in key:
        return None, (
            f"it is calibrated in reciprocal space ({u}): a diffraction pattern or FFT, not a real-space micrograph"
        )
    if key in _LENGTH_A:
        return _LENGTH_A[key], None
    return None, f"its calibration unit {u!r} is not a length"


def _calibration(p: Path, raw: _Raw, pixel_size_nm: float | None) -> tuple[float, dict[str, Any]]:
    """The pixel size in Å and what the metadata should say about where it came from."""
    md: dict[str, Any] = {
        "original_unit": raw.unit,
        "file_pixel_size": None,
        "file_pixel_size_A": None,
        "calibration_source_in_file": raw.cal_source,
    }
    factor, problem = _length_factor(raw.unit)
    sy, sx = raw.scale_yx
    note = raw.cal_note
    file_A: float | None = None
    if problem is None and factor is not None and sx is not None:
        sx, sy = float(sx), float(sy if sy is not None else sx)
        md["file_pixel_size"] = {"x": sx, "y": sy, "unit": raw.unit}
        ax, ay = abs(sx) * factor, abs(sy) * factor
        lo, hi = PLAUSIBLE_PIXEL_A
        if not (math.isfinite(ax) and math.isfinite(ay)) or ax == 0 or ay == 0:
            note = note or f"its calibration is {sx:g} {raw.unit} per pixel"
        elif not (lo <= ax <= hi):
            note = (
                f"its calibration ({sx:g} {raw.unit} per pixel = {ax:g} Å) is not a plausible TEM "
                "pixel size (a print resolution such as 72 dpi, or a placeholder)"
            )
        elif abs(ax - ay) > 0.01 * max(ax, ay) and pixel_size_nm is None:
            raise HrtemflowError(
                f"{p} has non-square pixels ({ax:g} x {ay:g} Å); resample it to square pixels, or "
                "pass --pixel-size NM (nm per pixel) if the pixels are in fact square"
            )
        else:
            file_A = ax
            md["file_pixel_size_A"] = ax
    if problem is not None and "reciprocal" in problem:
        raise HrtemflowError(f"{p}: {problem}; pass a real-space image")
    if pixel_size_nm is not None:
        md["calibration"] = "override"
        return float(pixel_size_nm) * 10.0, md
    if file_A is None:
        why = problem or note
        what = f"no usable pixel-size calibration: {why}" if why else "no pixel-size calibration"
        raise HrtemflowError(
            f"{p} has {what}. Pass the pixel size with --pixel-size NM, in nm per pixel "
            "(read_micrograph(..., pixel_size_nm=NM)), e.g. from the scale bar or the "
            "microscope's calibration at this magnification"
        )
    md["calibration"] = "file"
    return file_A, md


# ---------------------------------------------------------------------------------------------
# TIFF (tifffile; ImageJ, OME, vendor tags through rsciio, plain resolution tags)


def _read_tiff(p: Path, limits: SizeLimits) -> list[_Raw]:
    import tifffile  # noqa: PLC0415 (each reader's library loads only for its own format)

    _check_tiff_header(p)
    with tifffile.TiffFile(p) as tif:
        if not tif.series or not len(tif.pages):
            raise HrtemflowError(f"cannot read {p}: no image found in the TIFF; the file is truncated or corrupt")
        s = tif.series[0]
        axes, shape = s.axes, tuple(int(v) for v in s.shape)
        if "Y" not in axes or "X" not in axes:
            axes = "Q" * (len(shape) - 2) + "YX"
        iy, ix = axes.index("Y"), axes.index("X")
        i_s = axes.index("S") if "S" in axes else None
        frame_axes = [i for i in range(len(shape)) if i not in (iy, ix, i_s)]
        n_frames = int(np.prod([shape[i] for i in frame_axes])) if frame_axes else 1
        nc = shape[i_s] if i_s is not None else 1
        _check_declared_size(p, shape[iy], shape[ix], n_frames * nc, limits)
        _check_tiff_extent(p, s, shape)
        scale, unit, source, note = _tiff_calibration(p, tif)
        try:
            data = s.asarray()
        except Exception as exc:
            if "imagecodecs" in str(exc):
                raise HrtemflowError(
                    f"{p} is compressed with {tif.pages[0].compression.name}, which needs the "
                    "'imagecodecs' package: install it (pip install imagecodecs) or save the "
                    "image uncompressed"
                ) from exc
            raise
        order = frame_axes + [iy, ix] + ([i_s] if i_s is not None else [])
        data = np.transpose(data, order).reshape((n_frames, shape[iy], shape[ix]) + ((nc,) if i_s is not None else ()))
        if n_frames == 1:
            data = data[0]
        data, channels, shown = _tiff_photometric(p, s.keyframe, data, i_s is not None)
        info = {"tiff_axes": s.axes, **shown}
        if len(tif.series) > 1:
            info["tiff_series_ignored"] = len(tif.series) - 1
        return [_Raw(data, scale, unit, channels, info, source, note)]


# TIFF photometric interpretations that are not a picture of intensity, and what they are
_TIFF_NOT_INTENSITY = {
    4: "a transparency mask",
    5: "CMYK print colour (separated)",
    8: "CIE L*a*b* colour",
    9: "ICC L*a*b* colour",
    10: "ITU L*a*b* colour",
    32803: "a raw colour-filter-array (Bayer) mosaic",
    32844: "SGI LogL",
    32845: "SGI LogLuv",
    34892: "linear raw (DNG)",
    51177: "a depth map",
    52527: "a semantic mask",
}


def _tiff_photometric(p: Path, page: Any, data: np.ndarray, channels: bool) -> tuple[np.ndarray, bool, dict[str, Any]]:
    """What the TIFF shows: palette indices through the colour map, MinIsWhite inverted, YCbCr as its luma.

    Returns (data, whether the last axis is still colour channels, metadata of what was done).
    """
    photometric = int(page.photometric) if page.photometric is not None else 1
    if photometric in (1, 2):  # MinIsBlack, RGB: as stored
        return data, channels, {}
    if photometric == 0:  # MinIsWhite: 0 is white
        grey = data[..., 0] if channels else data
        inverted, how = _inverted(grey, int(page.bitspersample))
        if channels:
            data = np.concatenate([inverted[..., None], data[..., 1:]], axis=-1)
        else:
            data = inverted
        return data, channels, {"photometric": "miniswhite", "inverted": how}
    if photometric == 3:  # palette: the pixels are indices into the colour map
        idx = data[..., 0] if channels else data
        shown, colour = _apply_palette(p, page.colormap, idx)
        return shown, False, {"photometric": "palette", "colour": colour}
    if photometric == 6:  # YCbCr
        if int(page.compression) in (6, 7):  # (old-style) JPEG: tifffile decodes to RGB
            return data, channels, {"photometric": "ycbcr-decoded-to-rgb"}
        if channels and data.shape[-1] >= 3:
            return data[..., 0], False, {"photometric": "ycbcr", "colour": "ycbcr-luma"}
    what = _TIFF_NOT_INTENSITY.get(photometric, "a colour space hrtemflow does not read")
    raise HrtemflowError(
        f"{p}: its TIFF photometric interpretation is {photometric} ({what}), not a greyscale, RGB or palette "
        "image; export the micrograph as a greyscale TIFF"
    )


def _inverted(a: np.ndarray, bits: int) -> tuple[np.ndarray, str]:
    """A MinIsWhite image as MinIsBlack: the brightest value minus the value (an affine map)."""
    if a.dtype.kind == "b":
        return ~a, "1 - value"
    if a.dtype.kind == "u":
        top = (1 << bits) - 1 if 0 < bits < 8 * a.dtype.itemsize else int(np.iinfo(a.dtype).max)
        if a.size and int(a.max()) > top:
            top = int(np.iinfo(a.dtype).max)
        return a.dtype.type(top) - a, f"{top} - value"
    if a.dtype.kind == "i":
        return ~a, "-1 - value"  # exact for every signed integer (no overflow)
    if a.dtype.kind == "f":
        return -a, "-value"
    return a, "none (pixel type not inverted)"


def _apply_palette(p: Path, colormap: Any, idx: np.ndarray) -> tuple[np.ndarray, str]:
    """Palette indices -> what they show: the colour map's grey value or its colours' luminance."""
    cmap = None if colormap is None else np.asarray(colormap)
    if cmap is None or cmap.ndim != 2 or cmap.shape[0] != 3 or cmap.shape[1] == 0 or cmap.dtype.kind not in "uif":
        raise HrtemflowError(
            f"{p} is a palette (colour-mapped) TIFF without a usable colour map, so what it shows is unknown; "
            "export the micrograph as a greyscale TIFF"
        )
    if idx.dtype.kind == "b":
        idx = idx.view(np.uint8)
    if idx.dtype.kind not in "ui":
        raise HrtemflowError(f"{p}: a palette TIFF must hold integer indices, not {idx.dtype}; the file is corrupt")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= cmap.shape[1]):
        raise HrtemflowError(
            f"{p}: its palette indices reach {int(idx.max())}, beyond its colour map of {cmap.shape[1]} entries; "
            "the file is corrupt"
        )
    r, g, b = cmap
    if np.array_equal(r, g) and np.array_equal(r, b):
        return r[idx], "palette-grey"
    return _luminance(r, g, b)[idx], "palette-luminance"


def _check_tiff_header(p: Path) -> None:
    """A first image directory beyond the end of the file means it was cut short."""
    with open(p, "rb") as fh:
        head = fh.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        return  # not a TIFF: tifffile says so
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic == 42:
        (first,) = struct.unpack(order + "I", head[4:8])
    elif magic == 43 and len(head) >= 16:
        (first,) = struct.unpack(order + "Q", head[8:16])
    else:
        return
    _check_extent(p, first + 2, "first image directory")


def _check_tiff_extent(p: Path, s: Any, shape: tuple[int, ...]) -> None:
    end = 0
    if getattr(s, "dataoffset", None):
        end = int(s.dataoffset) + int(np.prod(shape)) * np.dtype(s.dtype).itemsize
    else:
        for page in s.pages:
            if page is None:
                continue
            pairs = [(int(o), int(c)) for o, c in zip(page.dataoffsets, page.databytecounts) if c]
            if pairs:
                end = max(end, max(o + c for o, c in pairs))
    _check_extent(p, end)


def _tiff_calibration(
    p: Path, tif: Any
) -> tuple[tuple[float | None, float | None], str | None, str | None, str | None]:
    """(pixel size y, x), unit, where it was found, why not trusted: OME, ImageJ, vendor, tags."""
    page = tif.pages[0]
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            px = next(el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels")
            if px.get("PhysicalSizeX"):
                sx = float(px.get("PhysicalSizeX"))
                sy = float(px.get("PhysicalSizeY") or sx)
                return (sy, sx), px.get("PhysicalSizeXUnit", "µm"), "ome", None
        except (ET.ParseError, StopIteration, ValueError):
            pass
    if tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = ij.get("unit")
        if unit and _length_factor(unit)[0] is not None:
            res = _resolution(page)
            if res is not None:
                return (res[0], res[1]), unit, "imagej", None
    vendor = _tiff_vendor_calibration(p, tif, page)
    if vendor is not None:
        return vendor
    res = _resolution(page)
    unit_tag = page.tags.get("ResolutionUnit")
    resunit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default is inch
    unit = {2: "inch", 3: "cm", 4: "mm", 5: "um"}.get(resunit)
    if res is None or unit is None:
        return (None, None), None, None, None
    return (res[0], res[1]), unit, "tiff-resolution-tags", None


def _resolution(page: Any) -> tuple[float, float] | None:
    """Pixel size (y, x) in the resolution unit from the X/YResolution tags (pixels per unit)."""
    xt, yt = page.tags.get("XResolution"), page.tags.get("YResolution")
    if xt is None:
        return None
    try:
        xn, xd = xt.value
        yn, yd = yt.value if yt is not None else xt.value
        if xn == 0 or yn == 0:
            return None
        return yd / yn, xd / xn
    except (TypeError, ValueError):
        return None


_DM_TIFF_TAGS = (65003, 65004, 65009, 65010)


def _tiff_vendor_calibration(
    p: Path, tif: Any, page: Any
) -> tuple[tuple[float | None, float | None], str | None, str | None, str | None] | None:
    """FEI/TFS, Zeiss, TVIPS, Olympus, JEOL and DM tags, as rsciio.tiff knows them."""
    vendor_flags = {"fei", "sem", "tvips", "sis"}
    if not (vendor_flags & set(tif.flags) or any(t in page.tags for t in _DM_TIFF_TAGS) or "SightX_Notes" in page.tags):
        return None
    try:
        from rsciio.tiff import file_reader  # noqa: PLC0415 (only for vendor-tagged TIFFs)

        d = file_reader(str(p), lazy=True)[0]
    except Exception:  # noqa: BLE001 - vendor metadata is a bonus; the image is read anyway
        return None
    named = {a.get("name"): a for a in d["axes"]}
    ax, ay = named.get("x"), named.get("y")
    if ax is None or ax.get("units") in (None, "", "<undefined>"):
        return None
    sy = ay["scale"] if ay is not None else ax["scale"]
    return (float(sy), float(ax["scale"])), str(ax["units"]), "tiff-vendor-tags", None


# ---------------------------------------------------------------------------------------------
# MRC (mrcfile)

_MRC_ITEMSIZE = {0: 1, 1: 2, 2: 4, 4: 8, 6: 2, 12: 2}  # the modes mrcfile reads: int8 int16 f32 c64 u16 f16
_MRC_UNSUPPORTED = {3: "complex 16-bit integers", 101: "4-bit packed integers"}
_MRC_HEADER = 1024


@dataclass(frozen=True)
class _MrcHeader:
    nx: int
    ny: int
    nz: int
    mode: int
    frames: int  # sections mrcfile reads (a volume stack reads whole volumes of mz)
    nsymbt: int
    order: str
    note: str | None  # a doubt about the byte order, for metadata["warnings"]


def _mrc_header(p: Path, limits: SizeLimits) -> _MrcHeader:
    """Parse and check the 1024-byte MRC header with struct, before mrcfile reads (and allocates) anything.

    mrcfile reads the extended header (`nsymbt` bytes, up to 2 GiB) even with header_only=True, and
    nx * ny * nz values of the mode's size for the data; both are checked against the file size and the
    limits here. The byte order follows mrcfile's: the machine stamp (bytes 212-213), little-endian if it is
    unrecognised, and the opposite order if the mode is only valid that way.
    """
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(_MRC_HEADER)
    if len(head) < _MRC_HEADER:
        raise HrtemflowError(
            f"cannot read {p}: the file is truncated ({len(head)} bytes, shorter than the 1024-byte MRC "
            "header); copy it again or re-export it"
        )
    if head[208:211] != b"MAP":
        raise HrtemflowError(
            f"cannot read {p}: not an MRC file (no 'MAP' identifier at byte 208), or its header is corrupt; "
            "re-export it as MRC2014 or TIFF"
        )
    stamp = head[212:214]
    if stamp[0] == 0x44 and stamp[1] in (0x44, 0x41):
        order, note = "<", None
    elif stamp == b"\x11\x11":
        order, note = ">", None
    else:
        order, note = "<", f"unrecognised MRC machine stamp {head[212:216].hex()}"

    def mode_in(o: str) -> int:
        return struct.unpack(o + "i", head[12:16])[0]

    known = set(_MRC_ITEMSIZE)
    other = ">" if order == "<" else "<"
    if mode_in(order) not in known and mode_in(other) in known:
        note = (note + "; " if note else "") + "the mode is valid only in the other byte order"
        order = other
    if note:
        note = f"{note}: read as {'little' if order == '<' else 'big'}-endian, as mrcfile does"
    nx, ny, nz, mode = struct.unpack(order + "4i", head[0:16])
    (mz,) = struct.unpack(order + "i", head[36:40])
    ispg, nsymbt = struct.unpack(order + "2i", head[88:96])
    if mode in _MRC_UNSUPPORTED:
        raise HrtemflowError(
            f"cannot read {p}: MRC mode {mode} ({_MRC_UNSUPPORTED[mode]}) is not supported; convert it to "
            "mode 2 (float32), e.g. with IMOD's newstack -mode 2"
        )
    if mode not in known:
        raise HrtemflowError(f"cannot read {p}: unknown MRC data mode {mode}; the file is corrupt")
    if nsymbt < 0:
        raise HrtemflowError(
            f"cannot read {p}: its header declares a negative extended-header size ({nsymbt} bytes); "
            "the file is corrupt"
        )
    frames = nz
    if 401 <= ispg <= 630:  # a stack of volumes: mrcfile reads nz // mz volumes of mz sections
        if mz <= 0:
            raise HrtemflowError(
                f"cannot read {p}: its header declares a volume stack (space group {ispg}) with mz = {mz}; "
                "the file is corrupt"
            )
        frames = (nz // mz) * mz
    _check_declared_size(p, ny, nx, frames, limits)
    if _MRC_HEADER + nsymbt > size:
        raise HrtemflowError(
            f"cannot read {p}: its header declares an extended header of {nsymbt} bytes, beyond the end of the "
            f"file ({size} bytes): the file is truncated or its header is corrupt; copy it again or re-export it"
        )
    _check_extent(p, _MRC_HEADER + nsymbt + nx * ny * frames * _MRC_ITEMSIZE[mode])
    return _MrcHeader(nx, ny, nz, mode, frames, nsymbt, order, note)


def _read_mrc(p: Path, limits: SizeLimits) -> list[_Raw]:
    import mrcfile  # noqa: PLC0415 (each reader's library loads only for its own format)

    h = _mrc_header(p, limits)
    # permissive: the header was checked above (mrcfile's strict mode only adds a refusal of unknown stamps)
    with mrcfile.open(p, permissive=True) as m:
        if m.data is None or m.data.size != h.nx * h.ny * h.frames:
            raise HrtemflowError(f"cannot read {p}: mrcfile could not read its data block; the file is corrupt")
        data = np.array(m.data)
        vx, vy = float(m.voxel_size.x), float(m.voxel_size.y)
    note = None
    scale: tuple[float | None, float | None] = (vy, vx)
    if vx == 0.0:
        scale = (None, None)
    elif vx == 1.0 and vy == 1.0:
        # 1 Å is what most programs write when they do not know the pixel size.
        scale, note = (
            (None, None),
            (
                "the MRC header says 1 Å per pixel, the default most programs write when the pixel "
                "size is unknown; if 1 Å is right pass --pixel-size 0.1"
            ),
        )
    if h.nz == 1 and data.ndim == 3:
        data = data[0]
    info = {"mrc_mode": h.mode}
    if h.order == ">":
        info["mrc_byte_order"] = "big-endian"
    return [_Raw(data, scale, "Å", False, info, "mrc-voxel-size", note, [f"{p}: {h.note}"] if h.note else [])]


# ---------------------------------------------------------------------------------------------
# NPY (numpy, never pickle) and PNG (Pillow): never calibrated


_NPY_MAX_HEADER = 10000  # numpy's own max_header_size; numpy reads the declared length before checking it


def _read_npy(p: Path, limits: SizeLimits) -> list[_Raw]:
    with open(p, "rb") as fh:
        head = fh.read(12)
    if len(head) >= 10 and head[:6] == b"\x93NUMPY":
        size_fmt = "<H" if head[6] == 1 else "<I"
        if len(head) >= 8 + struct.calcsize(size_fmt):
            (header_len,) = struct.unpack(size_fmt, head[8 : 8 + struct.calcsize(size_fmt)])
            if header_len > _NPY_MAX_HEADER:
                raise HrtemflowError(
                    f"cannot read {p}: its .npy header claims {header_len} bytes (numpy writes a few hundred); "
                    "the file is corrupt"
                )
    with open(p, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            shape = dtype = None
        offset = fh.tell()
    if dtype is None:  # format 3.0: the memory map reads the header without the data
        mm = np.load(p, mmap_mode="r", allow_pickle=False)
        shape, dtype, offset = mm.shape, mm.dtype, mm.offset
        del mm
    if dtype.hasobject:
        raise HrtemflowError(
            f"{p} holds a Python-object (pickled) array, which is refused for safety: pickles can "
            "run code. Save the image as a plain numeric array (np.save of a float or int array)"
        )
    if dtype.subdtype is not None or not (dtype.kind in "biufc" or dtype.names):
        raise HrtemflowError(f"{p}: unsupported pixel type {dtype}; save the image as a plain numeric array")
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise HrtemflowError(f"cannot read {p}: its header declares a negative shape {shape}; the file is corrupt")
    channels = _npy_is_colour(shape)
    img_shape = shape[:-1] if channels else shape
    if len(img_shape) < 2:
        raise HrtemflowError(f"{p} holds {len(shape)}-D data of shape {shape}, not an image")
    n_frames = math.prod(img_shape[:-2])  # Python integers: a product of huge sides cannot wrap around
    _check_declared_size(p, img_shape[-2], img_shape[-1], n_frames * (shape[-1] if channels else 1), limits)
    _check_extent(p, offset + math.prod(shape) * dtype.itemsize)
    data = np.load(p, allow_pickle=False)
    return [_Raw(data, (None, None), None, channels, {})]


def _npy_is_colour(shape: tuple[int, ...]) -> bool:
    """(y, x, c) or (n, y, x, c) is colour for c = 3|4 (y, x > 4) or any c <= 8 below image sides > 8;
    (n, y, x) with small n is a stack."""
    if len(shape) not in (3, 4):
        return False
    c, y, x = shape[-1], shape[-3], shape[-2]
    return (c in (3, 4) and min(y, x) > 4) or (0 < c <= 8 and min(y, x) > 8)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(p: Path, limits: SizeLimits) -> list[_Raw]:
    from PIL import Image  # noqa: PLC0415 (each reader's library loads only for its own format)

    with open(p, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise HrtemflowError(f"cannot read {p}: not a PNG file, or it is corrupt (bad header)")
    nx, ny = struct.unpack(">II", head[16:24])
    _check_declared_size(p, ny, nx, 1, limits)
    bomb_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Our own size check ran above; Pillow's lower "decompression bomb" limit would refuse
        # large but legitimate camera images with a misleading message.
        if bomb_limit is not None:
            Image.MAX_IMAGE_PIXELS = max(bomb_limit, limits.max_pixels)
        with Image.open(p) as im:
            n = int(getattr(im, "n_frames", 1))  # animated PNG: one plane per frame
            _check_declared_size(p, ny, nx, n, limits)
            mode = im.mode
            planes, colour = [], False
            for i in range(n):
                im.seek(i)
                arr, colour = _pil_to_array(im)
                planes.append(arr)
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    data = planes[0] if n == 1 else np.stack(planes)
    return [_Raw(data, (None, None), None, colour, {"png_mode": mode})]


def _pil_to_array(im: Any) -> tuple[np.ndarray, bool]:
    mode = im.mode
    if mode in ("1", "L", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im), False
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0)), False
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(im), True
    return np.asarray(im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")), True


# ---------------------------------------------------------------------------------------------
# rsciio formats: DigitalMicrograph, EMD (Velox, Berkeley/NCEM), TIA (SER/EMI)


def _read_dm(p: Path, limits: SizeLimits) -> list[_Raw]:
    from rsciio.digitalmicrograph import file_reader  # noqa: PLC0415 (per-format library)

    # one dask chunk: with chunks="auto" a declared 65536^3 stack builds millions of tasks (minutes, GiBs)
    # before the shape can be checked
    return _read_rsciio(p, file_reader, limits, "rsciio.digitalmicrograph", lazy_kwargs={"chunks": -1})


def _read_emd(p: Path, limits: SizeLimits) -> list[_Raw]:
    from rsciio.emd import file_reader  # noqa: PLC0415 (per-format library)

    with open(p, "rb") as fh:
        if fh.read(8) != b"\x89HDF\r\n\x1a\n":
            raise HrtemflowError(f"cannot read {p}: not an HDF5/EMD file, or it is corrupt")
    _check_hdf5_storage(p, limits)
    return _read_rsciio(p, file_reader, limits, "rsciio.emd", select_type="images")


_HDF5_CHECKED_BYTES = 64 << 20  # datasets declaring more than this must store at least 1/_HDF5_MAX_RATIO of it
_HDF5_MAX_RATIO = 100  # real micrographs and metadata compress far less; never-written data stores nothing


def _check_hdf5_storage(p: Path, limits: SizeLimits) -> None:
    """Refuse HDF5 datasets that declare far more bytes than the file stores (never written, or a
    compression bomb): reading one would allocate its declared size (its fill value) in full."""
    import h5py  # noqa: PLC0415 (per-format library)

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.shape is None:
            return
        declared = math.prod(obj.shape) * obj.dtype.itemsize
        if declared <= _HDF5_CHECKED_BYTES:
            return
        stored = int(obj.id.get_storage_size())
        if stored * _HDF5_MAX_RATIO >= declared:
            return
        dims = sorted(int(d) for d in obj.shape)
        if len(dims) >= 2 and dims[-2] >= limits.min_side:  # an image dataset over the limits says so first
            _check_declared_size(p, dims[-1], dims[-2], math.prod(dims[:-2]), limits)
        raise HrtemflowError(
            f"cannot read {p}: its dataset /{name} declares {declared} bytes but the file stores only {stored} "
            "bytes of it (never written, or corrupt); re-export the file or copy it again"
        )

    with h5py.File(p, "r") as f:
        f.visititems(visit)


def _read_tia(p: Path, limits: SizeLimits) -> list[_Raw]:
    from rsciio.tia import file_reader  # noqa: PLC0415 (per-format library)

    if p.suffix.lower() != ".emi":
        _check_ser_header(p, limits)
        return _read_rsciio(p, file_reader, limits, "rsciio.tia", lazy_check=False)
    sers = _emi_companions(p)
    if not sers:
        raise HrtemflowError(
            f"{p}: the .emi file holds only metadata; its image data are in "
            f"{p.stem}_1.ser, which is missing. Keep the .ser file(s) next to the .emi"
        )
    total = 0
    for _, ser in sers:
        try:
            total += _check_ser_header(ser, limits)
        except HrtemflowError as exc:  # name the file the user passed, then its companion
            raise HrtemflowError(f"{p}: its image file {ser.name}: {exc}") from exc
        if total > limits.max_pixels:
            raise HrtemflowError(
                f"{p}: its .ser files hold more than {limits.max_pixels} pixels in all, over the limit; refusing to "
                "read them. Read the .ser files one by one (or raise SizeLimits)"
            )
    objects = _emi_objects(p)
    if not objects:
        raise HrtemflowError(
            f"cannot read {p}: the .emi file holds no <ObjectInfo> metadata block, so it is truncated or corrupt; "
            "read its .ser file(s) directly instead"
        )
    raws: list[_Raw] = []
    with tempfile.TemporaryDirectory(prefix="hrtemflow-emi-") as tmp:
        for k, (index, ser) in enumerate(sers):
            emi = _emi_as_rsciio_reads_it(Path(tmp), k, index, ser, objects)
            try:
                raws += _read_rsciio(emi, file_reader, limits, "rsciio.tia", lazy_check=False)
            except (HrtemflowError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - say which of the .emi's files failed
                raise HrtemflowError(
                    f"cannot read {p}: its image file {ser.name} (or the .emi's metadata) is truncated or corrupt "
                    f"({type(exc).__name__}: {_short(exc)}); copy the files again or re-export them"
                ) from exc
    return raws


def _emi_companions(emi: Path, names: list[str] | None = None) -> list[tuple[int, Path]]:
    """The `<stem>_<n>.ser` files of a TIA .emi (any number of digits, any case), sorted by n.

    Found with a regex on the folder listing (`names`, or the folder's): rsciio's own glob
    (`<stem>_[0-9].ser`) misses `_10.ser` and `.SER`, and reads `[`, `]`, `*`, `?` in the stem as a pattern.
    """
    pattern = re.compile(rf"^{re.escape(emi.stem)}_(\d+)\.ser$", re.IGNORECASE)
    found = []
    for name in os.listdir(emi.parent) if names is None else names:
        m = pattern.match(name)
        if m and (emi.parent / name).is_file():
            found.append((int(m.group(1)), emi.parent / name))
    return sorted(found)


def _emi_objects(emi: Path) -> list[bytes]:
    """The <ObjectInfo> XML blocks of an .emi, in order (what rsciio's emi reader takes from it)."""
    blob = emi.read_bytes()
    objects, start = [], blob.find(b"<ObjectInfo>")
    while start != -1:
        end = blob.find(b"</ObjectInfo>", start)
        if end == -1:
            break
        objects.append(blob[start : end + len(b"</ObjectInfo>")])
        start = blob.find(b"<ObjectInfo>", end)
    return objects


def _emi_as_rsciio_reads_it(tmp: Path, k: int, index: int, ser: Path, objects: list[bytes]) -> Path:
    """An .emi in `tmp` under a safe name that makes rsciio read `ser` exactly as the original would.

    rsciio reads each `<stem>_<n>.ser` with the .emi's first <ObjectInfo> (date, units from the mode: a
    diffraction pattern is calibrated in 1/nm) and merges block n-1 into its metadata. The copy holds the
    first block and block `index`-1, and `ser` is linked (copied where links fail) as `_1.ser` or `_2.ser`
    beside it, so names and indices of any length or case read the same.
    """
    stem = f"emi{k}"
    blocks = [objects[0]] + ([objects[index - 1]] if 2 <= index <= len(objects) else [])
    n = 1 if index == 1 else 2
    (tmp / f"{stem}.emi").write_bytes(b"\x00" + b"".join(blocks))  # rsciio skips a block at byte 0
    link = tmp / f"{stem}_{n}.ser"
    try:
        os.symlink(ser.resolve(), link)
    except OSError:  # no symbolic links here (Windows without the privilege): copy
        shutil.copyfile(ser, link)
    return tmp / f"{stem}.emi"


_SER_DTYPES = {1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 16}


_SER_MAX_DIMS = 4


def _check_ser_header(p: Path, limits: SizeLimits) -> int:
    """Parse a TIA .ser header (rsciio reads all data before any check, so check here); its pixel count."""
    with open(p, "rb") as fh:
        head = fh.read(34)
        if len(head) < 30:
            raise HrtemflowError(f"cannot read {p}: the file is truncated (shorter than a SER header)")
        order, series_id, version = struct.unpack("<HHH", head[:6])
        if order != 0x4949 or series_id != 0x0197:
            raise HrtemflowError(f"cannot read {p}: not a TIA .ser file, or it is corrupt")
        data_type, _tag_type, _total, valid = struct.unpack("<IIII", head[6:22])
        if version <= 0x0210:
            (offsets_at,) = struct.unpack("<I", head[22:26])
            off_fmt, off_size = "<I", 4
        else:
            (offsets_at,) = struct.unpack("<Q", head[22:30])
            off_fmt, off_size = "<Q", 8
        n_series = _ser_series_size(p, fh, 26 + off_size - 4)
        if data_type == 0x4120:
            raise HrtemflowError(f"{p} holds spectra, not images; pass an image file")
        if valid == 0:
            raise HrtemflowError(f"{p} holds no image data (0 valid elements)")
        _check_extent(p, offsets_at + off_size, "offset table")
        fh.seek(offsets_at)
        (first,) = struct.unpack(off_fmt, fh.read(off_size))
        _check_extent(p, first + 50, "first image header")
        fh.seek(first + 40)
        dtype_code, nx, ny = struct.unpack("<HII", fh.read(10))
        if dtype_code not in _SER_DTYPES:
            raise HrtemflowError(f"cannot read {p}: unknown SER data type {dtype_code}; corrupt file")
        # rsciio allocates the series' declared shape (filled with NaN where images are missing)
        _check_declared_size(p, ny, nx, max(valid, n_series), limits)
        _check_extent(p, offsets_at + valid * off_size, "offset table")
        fh.seek(offsets_at)
        offsets = np.frombuffer(fh.read(valid * off_size), dtype=off_fmt)
    _check_extent(p, int(offsets.max()) + 50 + nx * ny * _SER_DTYPES[dtype_code])
    return nx * ny * valid


def _ser_series_size(p: Path, fh: BinaryIO, ndim_at: int) -> int:
    """The series' declared element count from the dimension array (rsciio builds a record type from every
    dimension's text lengths and allocates their product: a corrupt count would exhaust memory first)."""
    fh.seek(ndim_at)
    raw = fh.read(4)
    (ndim,) = struct.unpack("<I", raw) if len(raw) == 4 else (0,)
    if not 1 <= ndim <= _SER_MAX_DIMS:
        raise HrtemflowError(
            f"cannot read {p}: its header declares {ndim} series dimensions (TIA writes 1 or 2); the file is corrupt"
        )
    pos, n = ndim_at + 4, 1
    for _ in range(ndim):
        _check_extent(p, pos + 28, "dimension array")
        fh.seek(pos)
        (size,) = struct.unpack("<I", fh.read(4))
        fh.seek(pos + 24)
        (desc,) = struct.unpack("<I", fh.read(4))
        _check_extent(p, pos + 32 + desc, "dimension array")
        fh.seek(pos + 28 + desc)
        (units,) = struct.unpack("<I", fh.read(4))
        pos += 32 + desc + units
        _check_extent(p, pos, "dimension array")
        n *= max(int(size), 1)
    return n


def _read_rsciio(
    p: Path,
    reader: Callable[..., list[dict[str, Any]]],
    limits: SizeLimits,
    name: str,
    lazy_check: bool = True,
    lazy_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[_Raw]:
    """Read with a rosettasciio plugin; a lazy pass first checks the shapes without the data."""
    if lazy_check:
        try:
            lazy = reader(str(p), lazy=True, **kwargs, **(lazy_kwargs or {}))
        except ValueError:  # e.g. DM colour images cannot be read lazily: no pre-check then
            lazy = []
        for d in lazy:
            shape = tuple(int(s) for s in d["data"].shape)
            if len(shape) >= 2:
                _check_declared_size(p, shape[-2], shape[-1], int(np.prod(shape[:-2])), limits)
        del lazy
    dicts = reader(str(p), lazy=False, **kwargs)
    return [_raw_from_rsciio(d, name) for d in dicts]


def _raw_from_rsciio(d: dict[str, Any], name: str) -> _Raw:
    data = np.asarray(d["data"])
    axes = list(d.get("axes") or [])
    if len(axes) == data.ndim and data.ndim > 2:  # drop length-1 axes (and their calibration)
        keep = [i for i, s in enumerate(data.shape) if s != 1]
        if len(keep) >= 2:
            data = data.reshape([data.shape[i] for i in keep])
            axes = [axes[i] for i in keep]
    scale: tuple[float | None, float | None] = (None, None)
    unit = None
    if len(axes) >= 2 and data.ndim >= 2:
        ay, ax = axes[-2], axes[-1]
        unit = ax.get("units")
        scale = (_num(ay.get("scale")), _num(ax.get("scale")))
    md = d.get("metadata") or {}
    info: dict[str, Any] = {"reader": name}
    title = (md.get("General") or {}).get("title")
    if title:
        info["title"] = str(title)
    instrument = _instrument(d)
    if instrument:
        info["instrument"] = instrument
    return _Raw(data, scale, unit, False, info, "file-axes")


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


_INSTRUMENT_KEYS = {
    "beam_energy": "beam_energy_keV",
    "microscope": "microscope",
    "magnification": "magnification",
    "acquisition_mode": "acquisition_mode",
    "camera_length": "camera_length_mm",
}


def _instrument(d: dict[str, Any]) -> dict[str, Any]:
    """Instrument facts through the reader's own metadata mapping (HyperSpy names and units)."""
    om = d.get("original_metadata") or {}
    out: dict[str, Any] = {}
    for src, (dst, fn) in (d.get("mapping") or {}).items():
        if not str(dst).startswith("Acquisition_instrument."):
            continue
        key = _INSTRUMENT_KEYS.get(str(dst).rsplit(".", 1)[-1])
        if key is None or key in out:
            continue
        value = _lookup(om, str(src))
        if value is None:
            continue
        try:
            if isinstance(value, dict):
                value = _boxed(value)
            value = fn(value) if fn is not None else value
        except Exception:  # noqa: BLE001 - a malformed tag is not worth failing the read
            continue
        value = plain_json(value)
        if isinstance(value, (int, float, str)) and value != "":
            out[key] = value
    return out


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        want = part.replace(" ", "_")
        match = [k for k in node if str(k).replace(" ", "_") == want]
        if not match:
            return None
        node = node[match[0]]
    return node


def _boxed(value: dict[str, Any]) -> Any:
    try:
        from box import Box  # noqa: PLC0415 (rsciio's optional dependency)

        return Box(value, box_dots=True)
    except Exception:  # noqa: BLE001
        return value


_READERS: dict[str, Callable[[Path, SizeLimits], list[_Raw]]] = {
    ".dm3": _read_dm,
    ".dm4": _read_dm,
    ".emd": _read_emd,
    ".ser": _read_tia,
    ".emi": _read_tia,
    ".mrc": _read_mrc,
    ".mrcs": _read_mrc,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".png": _read_png,
    ".npy": _read_npy,
}
