"""What each workflow job asks the scheduler for: the one place the rules (workflow/rules/*.smk) and the
cost estimate (`campaign.estimate`) take runtimes, memory and threads from. A retry asks for
`runtime_min x attempt`; the SLURM profile may raise threads and memory per rule, not runtimes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    runtime_min: int
    mem_mb: int
    threads: int
    #: the partition kind the SLURM profile sends it to by default ("gpu" where a GPU does the work)
    device: str = "cpu"


JOBS = {
    "md": Job(runtime_min=300, mem_mb=2000, threads=1),  # the seed campaign's MD jobs: 96-217 min
    "image": Job(runtime_min=120, mem_mb=4000, threads=1),  # on the GPU partition when imaging.device: gpu
    "train": Job(runtime_min=240, mem_mb=8000, threads=2, device="gpu"),
    "evaluate": Job(runtime_min=60, mem_mb=8000, threads=2, device="gpu"),
    "apply": Job(runtime_min=60, mem_mb=8000, threads=2, device="gpu"),
}
#: the figures and the summary: small jobs that read what the others made
REPORT_RUNTIME_MIN = 30


def runtime(rule: str):
    """A rule's `runtime` resource: minutes, growing with each retry."""
    minutes = JOBS[rule].runtime_min
    return lambda wildcards, attempt: minutes * attempt
