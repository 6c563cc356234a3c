"""Regions of a micrograph: boxes a user gives (--box, --regions CSV) or a sliding window's cells,
and the windows of a bundle's input size that cover each."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import HrtemflowError


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


def parse_box(text: str, name: str = "box") -> Region:
    """'x0,y0,x1,y1' (pixels of the original image) -> Region."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x0, y0, x1, y1 = (int(round(float(p))) for p in parts)
    except ValueError:
        raise HrtemflowError(
            f"--box {text!r}: expected four numbers x0,y0,x1,y1 (pixels of the original image)"
        ) from None
    if x1 <= x0 or y1 <= y0:
        raise HrtemflowError(f"--box {text!r}: needs x0 < x1 and y0 < y1")
    return Region(name, x0, y0, x1, y1)


def read_regions_csv(path: str | Path) -> list[Region]:
    """Regions from a CSV with columns x0,y0,x1,y1 (pixels of the original image) and optional label."""
    p = Path(path)
    try:
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
    for i, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        try:
            x0, y0, x1, y1 = (int(round(float(row[c]))) for c in ("x0", "y0", "x1", "y1"))
        except ValueError:
            raise HrtemflowError(
                f"--regions {p}, line {i}: x0,y0,x1,y1 must be numbers, got "
                f"{[row[c] for c in ('x0', 'y0', 'x1', 'y1')]}"
            ) from None
        if x1 <= x0 or y1 <= y0:
            raise HrtemflowError(f"--regions {p}, line {i}: needs x0 < x1 and y0 < y1")
        regions.append(Region(f"r{len(regions):03d}", x0, y0, x1, y1, row.get("label", "")))
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
