"""What `hrtemflow predict` was asked to do, checked in full before any model loads (no Keras here)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..core.errors import HrtemflowError
from ..learn.card import ModelCard
from .regions import Region
from .tubes import Tube

DEFAULT_STRIDE = 0.5
#: the largest image (pixels) predict resamples or analyses, before and after resampling: the
#: resampling's temporaries take about 30 bytes a pixel, so 2**25 px (a 5.8k x 5.8k frame) stays near
#: 1 GB; larger micrographs are refused with advice (crop, --regions, or --max-pixels)
MAX_PIXELS = 2**25
#: the window sizes a bundle or --window-px may ask for
WINDOW_RANGE = (8, 4096)


@dataclass(frozen=True)
class Options:
    """What `hrtemflow predict` was asked to do, besides inputs and bundles."""

    pixel_size_nm: float | None = None
    frames: str = "refuse"
    regions: tuple[Region, ...] | None = None
    window_px: int | None = None
    stride_fraction: float = DEFAULT_STRIDE
    tta: bool = True
    table_rows: int = 40
    max_pixels: int = MAX_PIXELS
    #: tubes the user gave (--tube); when None and find_tubes, a nanotube classifier's tubes are found
    tubes: tuple[Tube, ...] | None = None
    find_tubes: bool = True
    #: the sliding window's regions (off with --tubes-only: a chirality bundle answers per tube only)
    sliding: bool = True


def check_options(opt: Options) -> None:
    """Every option in range, finite where a number (the CLI checks the same at parse time)."""
    if not (isinstance(opt.stride_fraction, (int, float)) and math.isfinite(opt.stride_fraction)):
        raise HrtemflowError(f"--stride-fraction must be a number in (0, 1], got {opt.stride_fraction}")
    if not (0 < opt.stride_fraction <= 1):
        raise HrtemflowError(f"--stride-fraction must be in (0, 1], got {opt.stride_fraction}")
    lo, hi = WINDOW_RANGE
    if opt.window_px is not None and not lo <= opt.window_px <= hi:
        raise HrtemflowError(f"--window-px must be between {lo} and {hi} px, got {opt.window_px}")
    if opt.pixel_size_nm is not None and not (math.isfinite(opt.pixel_size_nm) and 1e-4 <= opt.pixel_size_nm <= 1e3):
        raise HrtemflowError(
            f"--pixel-size must be a positive pixel size in nm (1e-4 to 1000), got {opt.pixel_size_nm}"
        )
    if opt.table_rows < 0:
        raise HrtemflowError(f"--table-rows must be >= 0, got {opt.table_rows}")
    if opt.max_pixels < 64 * 64:
        raise HrtemflowError(f"--max-pixels must be at least {64 * 64}, got {opt.max_pixels}")


def check_temperatures(temperatures: Mapping[str, float], cards: Sequence[ModelCard]) -> None:
    """A per-task temperature must name a classifier that is loaded (a typo would otherwise be ignored)."""
    classifiers = sorted({c.task for c in cards if c.kind == "classification"})
    for task, t in temperatures.items():
        if not (math.isfinite(t) and 0 < t <= 1e3):
            raise HrtemflowError(f"--temperature {task}={t}: the temperature must be a positive number (at most 1000)")
        if task == "*":
            continue
        if task not in {c.task for c in cards}:
            raise HrtemflowError(
                f"--temperature {task}=...: no bundle of task {task!r} is loaded (loaded: "
                f"{', '.join(sorted({c.task for c in cards}))}); check the task name"
            )
        if task not in classifiers:
            raise HrtemflowError(
                f"--temperature {task}=...: {task} is not a classifier; a temperature scales class "
                f"probabilities (classifiers loaded: {', '.join(classifiers) or 'none'})"
            )
