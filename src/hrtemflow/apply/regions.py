"""Regions of a micrograph: boxes a user gives (--box, --regions CSV) or a sliding window's cells,
and the windows of a bundle's input size that cover each."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import HrtemflowError

#: a region list larger than this is not a list of regions a person chose
MAX_REGIONS = 100_000
MAX_REGIONS_FILE_BYTES = 20 * 2**20
#: no micrograph has a coordinate beyond this (px)
MAX_COORDINATE = 10**7
MAX_LABEL = 200


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window origins covering [0, length): every `stride`, the last one flush with the end."""
    if length < window:
        return []
    starts = list(range(0, length - window + 1, max(1, stride)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@dataclass(frozen=True)
class Region:
    """A box [x0, x1) x [y0, y1) in pixels of the original micrograph (x: column, y: row)."""

    name: str
    x0: int
    y0: int
    x1: int
    y1: int
    label: str = ""

    def check(self, shape: tuple[int, int], where: str) -> None:
        ny, nx = shape
        if not (0 <= self.x0 < self.x1 <= nx and 0 <= self.y0 < self.y1 <= ny):
            raise HrtemflowError(
                f"{where}: region {self.name} ({self.x0},{self.y0},{self.x1},{self.y1}) is not inside the image "
                f"of {nx} x {ny} px (x0 < x1 <= {nx}, y0 < y1 <= {ny}, in pixels of the original image)"
            )


def _clip(text: object, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coordinates(values: Sequence[str], where: str) -> tuple[int, int, int, int]:
    """Four pixel coordinates x0, y0, x1, y1 from text: finite numbers within a micrograph's reach, rounded."""
    if len(values) != 4:
        raise HrtemflowError(
            f"{where}: expected four numbers x0,y0,x1,y1 (pixels of the original image), got {len(values)}"
        )
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise HrtemflowError(f"{where}: x0,y0,x1,y1 must be numbers, got {_clip(list(values))}") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in numbers):
        raise HrtemflowError(
            f"{where}: x0,y0,x1,y1 must be finite pixel coordinates (at most {MAX_COORDINATE:.0e}), "
            f"got {_clip(list(values))}"
        )
    x0, y0, x1, y1 = (int(round(v)) for v in numbers)
    if x1 <= x0 or y1 <= y0:
        raise HrtemflowError(f"{where}: needs x0 < x1 and y0 < y1, got {x0},{y0},{x1},{y1}")
    return x0, y0, x1, y1


def parse_box(text: str, name: str = "box") -> Region:
    """'x0,y0,x1,y1' (pixels of the original image) -> Region."""
    return Region(name, *_coordinates([p.strip() for p in str(text).split(",")], f"--box {_clip(str(text))}"))


def read_regions_csv(path: str | Path) -> list[Region]:
    """Regions from a CSV with columns x0,y0,x1,y1 (pixels of the original image) and optional label."""
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_REGIONS_FILE_BYTES:
            raise HrtemflowError(
                f"--regions {p} is {p.stat().st_size:,} bytes, not a list of regions (at most "
                f"{MAX_REGIONS:,} rows); pass the regions to analyse"
            )
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HrtemflowError(f"--regions {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HrtemflowError(f"--regions {p} cannot be read as text ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in ("x0", "y0", "x1", "y1") if c not in cols]
    if missing:
        raise HrtemflowError(
            f"--regions {p}: columns {', '.join(missing)} are missing; the header must name x0,y0,x1,y1 "
            "(and optionally label)"
        )
    regions = []
    for row in reader:
        i = reader.line_num
        if None in row:  # more fields than the header names
            raise HrtemflowError(
                f"--regions {p}, line {i}: {len(cols) + len(row[None])} fields, but the header names {len(cols)}; "
                "quote a label that contains commas"
            )
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        if len(regions) == MAX_REGIONS:
            raise HrtemflowError(f"--regions {p} holds more than {MAX_REGIONS:,} regions; pass the regions to analyse")
        x0, y0, x1, y1 = _coordinates([row[c] for c in ("x0", "y0", "x1", "y1")], f"--regions {p}, line {i}")
        label = row.get("label", "")
        if len(label) > MAX_LABEL or not label.isprintable():
            raise HrtemflowError(
                f"--regions {p}, line {i}: the label must be printable text of at most {MAX_LABEL} characters"
            )
        regions.append(Region(f"r{len(regions):03d}", x0, y0, x1, y1, label))
    if not regions:
        raise HrtemflowError(f"--regions {p} holds no region")
    return regions


def sliding_regions(shape: tuple[int, int], window: int, stride: int) -> list[Region]:
    ny, nx = shape
    return [
        Region(f"w{i:03d}", x, y, x + window, y + window)
        for i, (y, x) in enumerate(
            (y, x) for y in window_starts(ny, window, stride) for x in window_starts(nx, window, stride)
        )
    ]


def windows_in(lo: float, hi: float, length: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis of the resampled image for a region [lo, hi): tiled inside it
    when it holds a window, else one window centred on it (clamped to the image)."""
    a, b = int(round(lo)), int(round(hi))
    if b - a >= window:
        return [a + s for s in window_starts(b - a, window, stride)]
    return [int(min(max(round(0.5 * (lo + hi) - 0.5 * window), 0), length - window))]
