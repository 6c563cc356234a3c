"""The usage line a campaign job ends its log with, and how the cost report reads it."""

from __future__ import annotations

import json
import subprocess
import sys

from hrtemflow.cli import main
from hrtemflow.core.usage import PREFIX, read_usage, usage, usage_line
from hrtemflow.report.cost import _measured


def test_usage_counts_this_process_cpu():
    before = usage("md")["cpu_s"]
    x = 0
    for i in range(2_000_000):
        x += i * i
    after = usage("md")
    assert after["cpu_s"] > before and after["wall_s"] > 0 and after["max_rss_mb"] > 10


def test_peak_memory_is_the_programs_own_not_its_parents():
    """A small child of a process that touched 600 MB reports its own peak (ru_maxrss would say 600 MB)."""
    code = (
        "import subprocess, sys\n"
        "big = b'x' * (600 * 2**20)\n"
        "out = subprocess.run([sys.executable, '-c', 'from hrtemflow.core.usage import peak_rss; print(peak_rss())'],"
        " capture_output=True, text=True, check=True).stdout\n"
        "print(int(out))\n"
    )
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 5 * 2**20 < child < 300 * 2**20, child / 2**20


def test_read_usage_takes_the_last_line_and_refuses_what_is_not_ours(tmp_path):
    log = tmp_path / "job.log"
    assert read_usage(log) is None  # no log
    log.write_text("progress...\n")
    assert read_usage(log) is None  # a failed or older job: no line
    first, last = usage_line("image"), PREFIX + json.dumps({"command": "image", "cpu_s": 7.5, "wall_s": 9.0})
    log.write_text("x" * 10_000 + "\n" + first + "\nmore\n" + last + "\n")
    assert read_usage(log)["cpu_s"] == 7.5
    log.write_text(PREFIX + "{not json\n")
    assert read_usage(log) is None
    log.write_text(PREFIX + json.dumps({"cpu_s": 1.0}) + "\n")  # no wall time
    assert read_usage(log) is None


def test_cost_prefers_the_jobs_own_account_to_the_benchmark_file(tmp_path):
    (tmp_path / "logs" / "md" / "g").mkdir(parents=True)
    (tmp_path / "benchmarks" / "md" / "g").mkdir(parents=True)
    bench = tmp_path / "benchmarks" / "md" / "g" / "g-s00000.tsv"
    bench.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "80.0\t0:01:20\t1\t1\t1\t1\t0\t0\t50\t31.0\n"
    )
    assert _measured(tmp_path, "md", "g/g-s00000") == {
        "measured": (80.0, 31.0),
        "source": "benchmark",
    }  # an older job: the benchmark
    (tmp_path / "logs" / "md" / "g" / "g-s00000.log").write_text(
        PREFIX + json.dumps({"command": "md", "cpu_s": 61.0, "wall_s": 79.5}) + "\n"
    )
    assert _measured(tmp_path, "md", "g/g-s00000") == {"measured": (79.5, 61.0), "source": "log"}
    assert _measured(tmp_path, "md", "g/g-s00001")["measured"] is None  # not run


def test_a_failed_job_writes_no_usage_line(tmp_path, capsys):
    rc = main(["md", str(tmp_path / "missing.json"), "--structures", "x.extxyz", "--manifest", "x.json"])
    err = capsys.readouterr().err
    assert rc != 0 and "missing.json" in err and PREFIX not in err
