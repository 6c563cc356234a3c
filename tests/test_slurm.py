"""The SLURM profile (profiles/slurm) against a real single-node SLURM.

A module fixture installs SLURM from Debian's archive and brings up munge, mariadb, slurmdbd,
slurmctld and slurmd with tests/slurm/slurm_local.sh (partitions `cpu` (default) and `gpu`, one fake
GPU), and always takes them down again, by their pid files. Without root, without the archive or when
the daemons do not come up, every test here is skipped with the reason. HRTEMFLOW_SLURM_TESTS=0 skips
them too (the install changes the machine: only for CI boxes and throwaway containers).

Everything runs as a cluster operator types it: `hrtemflow install-profile` into the user's config
folder ($XDG_CONFIG_HOME, a temp dir here), then `snakemake --profile slurm ...` from a work folder.
The only command-line addition is `--slurm-init-seconds-before-status-checks 2` (the profile waits
20 s before the first status check, fine on a cluster, slow for a test).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "slurm" / "slurm_local.sh"
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]

# the node advertises more than a 2-core CI machine has (nothing is enforced: no cgroups), so that
# the profile's real requests (train: 8 threads, 32 GB, 1 GPU) can be scheduled as they are
CLUSTER_ENV = {"FAKE_GPUS": "1", "CPUS": "16", "MEM_MB": "65536"}
SACCT_FIELDS = ["JobID", "JobName", "Partition", "State", "ExitCode", "Timelimit", "ReqMem", "AllocTRES", "Comment"]
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
TIMINGS: dict[str, float] = {}
LOCK = os.path.join("/run/lock" if os.path.isdir("/run/lock") else "/tmp", "hrtemflow-slurm-test.lock")


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _script(cmd: str, limit: int, **env: str) -> subprocess.CompletedProcess:
    """Run slurm_local.sh under `timeout -k 10` (it kills the whole process group, apt-get included)."""
    return subprocess.run(
        ["timeout", "-k", "10", str(limit), "bash", str(SCRIPT), cmd],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=limit + 30,
    )


@dataclass
class Cluster:
    run_ids: list = field(default_factory=list)  # SLURM job names (snakemake run ids) to cancel at the end


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get("HRTEMFLOW_SLURM_TESTS", "1") == "0":
        pytest.skip("HRTEMFLOW_SLURM_TESTS=0")
    if os.geteuid() != 0:
        pytest.skip("a real SLURM needs root (apt-get install, munge and slurm daemons); not root")
    if shutil.which("timeout") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and coreutils' timeout")

    # one test cluster per machine: a second session (another pytest, an xdist worker) waits its turn
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                pytest.skip(f"another session has held the test cluster ({LOCK}) for 10 minutes")
            time.sleep(1)

    cluster = Cluster()
    try:
        t0 = time.monotonic()
        res = _script("install", 900)
        TIMINGS["install"] = time.monotonic() - t0
        if res.returncode != 0:
            pytest.skip(
                f"could not install SLURM (slurm_local.sh install exited {res.returncode}):\n{_tail(res.stderr, 20)}"
            )
        t0 = time.monotonic()
        res = _script("up", 180, **CLUSTER_ENV)
        TIMINGS["up"] = time.monotonic() - t0
        if res.returncode != 0:
            logs = _script("logs", 30).stdout if res.returncode == 5 else ""
            pytest.skip(
                f"the SLURM daemons did not come up (slurm_local.sh up exited {res.returncode}):\n"
                f"{_tail(res.stderr, 20)}\n{_tail(logs, 40)}".rstrip()
            )
        yield cluster
    finally:
        t0 = time.monotonic()
        for name in cluster.run_ids:  # jobs left by a failed or timed-out run: their processes outlive slurmd
            subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)
        if cluster.run_ids:
            for _ in range(30):
                q = subprocess.run(
                    ["squeue", "-h", "-o", "%i", f"--name={','.join(cluster.run_ids)}"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        down = _script("down", 120)
        TIMINGS["down"] = time.monotonic() - t0
        print("\nslurm fixture timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))
        status = _script("status", 30)
        lock.close()
        assert down.returncode == 0 and "running " not in status.stdout, (
            f"the test cluster is not down:\n{down.stderr}\n{status.stdout}"
        )


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory) -> dict:
    """`hrtemflow install-profile` into a fresh user config folder; the environment that finds it."""
    xdg = tmp_path_factory.mktemp("xdg-config")
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = subprocess.run(
        [str(BIN / "hrtemflow"), "install-profile"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    installed = xdg / "snakemake" / "slurm" / "config.v9+.yaml"
    assert installed.is_file(), f"install-profile did not write {installed}:\n{res.stdout}"
    assert installed.read_text() == (ROOT / "profiles" / "slurm" / "config.v9+.yaml").read_text()
    return env


def _profile() -> dict:
    return yaml.safe_load((ROOT / "profiles" / "slurm" / "config.v9+.yaml").read_text())


def _expected(rule: str, key: str):
    """What the profile asks for a rule: its set-resources entry, else its default-resources."""
    prof = _profile()
    return (prof.get("set-resources") or {}).get(rule, {}).get(key, prof["default-resources"].get(key))


@dataclass
class Run:
    rc: int
    output: str
    run_id: str
    jobs: list  # (slurm job id, rule) in submission order
    seconds: float


def _snakemake(cluster: Cluster, env: dict, workdir: Path, *args: str, limit: int) -> Run:
    """`snakemake --profile slurm ...` from `workdir`, as an operator types it, under `timeout -k 10`."""
    exe = shutil.which("snakemake", path=env["PATH"])
    assert exe, "snakemake is not installed in the test environment"
    cmd = [
        "timeout",
        "-k",
        "10",
        str(limit),
        exe,
        "--profile",
        "slurm",
        "--slurm-init-seconds-before-status-checks",
        "2",
        *args,
    ]
    t0 = time.monotonic()
    # the run id is known only once snakemake prints it: read it as it comes, so that teardown can
    # cancel this run's jobs even when snakemake is killed
    with subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"SLURM run ID: (\S+)", line)
            if m:
                cluster.run_ids.append(m.group(1))
        rc = proc.wait()
    output = "".join(lines)
    (workdir / "snakemake.out").write_text(output)
    m = re.search(r"SLURM run ID: (\S+)", output)
    jobs = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_([A-Za-z0-9_]+)/", output)
    return Run(rc, output, m.group(1) if m else "", jobs, time.monotonic() - t0)


def _sacct(job_ids: list[str], wait: float = 60) -> dict[str, dict]:
    """Accounting rows by job id, once every job has a final state and its full record.

    Right after a job ends, sacct can show a partial record (JobName `allocation`, no Partition):
    poll until the record is complete.
    """
    deadline = time.monotonic() + wait
    while True:
        res = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(SACCT_FIELDS)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = {}
        for line in res.stdout.splitlines():
            values = line.split("|", len(SACCT_FIELDS) - 1)
            if len(values) == len(SACCT_FIELDS):
                rows[values[0]] = dict(zip(SACCT_FIELDS, values))
        complete = all(
            j in rows
            and rows[j]["Partition"]
            and rows[j]["JobName"] != "allocation"
            and rows[j]["State"].split()[0] in FINAL_STATES
            for j in job_ids
        )
        if complete or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _explain(run: Run, workdir: Path) -> str:
    """Snakemake's output and the SLURM logs of the run, for assertion messages."""
    parts = [f"snakemake exited {run.rc} after {run.seconds:.0f} s; output tail:\n{_tail(run.output, 80)}"]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))[-6:]:
        parts.append(f"==> {log.relative_to(workdir)}\n{_tail(log.read_text(errors='replace'), 15)}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------
# the profile's mechanics: partitions, memory, threads, GPUs, retries -- with rules that only echo

MINI_SNAKEFILE = r"""
# rules named like the workflow's, so the installed profile's set-resources/set-threads apply to them
rule all:
    input: "out/md.txt", "out/train.txt", "out/flaky.txt"

rule md:
    output: "out/md.txt"
    shell: "echo md job=${{SLURM_JOB_ID:-none}} > {output}"

rule train:
    output: "out/train.txt"
    shell: "echo train job=${{SLURM_JOB_ID:-none}} cuda=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

# fails while its time limit is under 20 min: the profile's retry asks for 10 * attempt minutes
rule flaky:
    output: "out/flaky.txt"
    resources: runtime=lambda wc, attempt: 10 * attempt
    shell:
        "if [ {resources.runtime} -lt 20 ]; then echo 'fails on purpose at {resources.runtime} min' >&2; exit 1; fi; "
        "echo ok {resources.runtime} > {output}"
"""


@pytest.fixture(scope="module")
def mini_run(slurm_cluster, operator_env, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm-mini")
    (work / "Snakefile").write_text(MINI_SNAKEFILE)
    run = _snakemake(slurm_cluster, operator_env, work, limit=240)
    TIMINGS["mini workflow"] = run.seconds
    rows = _sacct([jid for jid, _ in run.jobs]) if run.jobs else {}
    return run, rows, work


def _rows_of(run: Run, rows: dict, rule: str) -> list[dict]:
    return [rows.get(jid, {"JobID": jid}) for jid, r in sorted(run.jobs, key=lambda j: int(j[0])) if r == rule]


def test_profile_is_found_and_maps_rules_to_partitions_and_gpus(mini_run):
    run, rows, work = mini_run
    assert "Using profile slurm for setting default command line arguments" in run.output, _explain(run, work)
    assert run.rc == 0, _explain(run, work)
    assert {r for _, r in run.jobs} == {"md", "train", "flaky"}, _explain(run, work)
    for row in rows.values():
        assert row["JobName"] == run.run_id, row

    (train,) = _rows_of(run, rows, "train")
    assert train["State"] == "COMPLETED", train
    assert train["Partition"] == _expected("train", "slurm_partition") == "gpu", train
    assert _expected("train", "gpu") == 1
    assert "gres/gpu=1" in train["AllocTRES"], train
    assert f"cpu={_profile()['set-threads']['train']}" in train["AllocTRES"].split(","), train
    assert train["ReqMem"] == f"{_expected('train', 'mem_mb')}M", train
    assert train["Comment"].startswith("rule_train"), train
    # the job really holds the GPU: SLURM's gres plugin set CUDA_VISIBLE_DEVICES for it
    assert "cuda=0" in (work / "out" / "train.txt").read_text()

    (md,) = _rows_of(run, rows, "md")
    assert md["State"] == "COMPLETED", md
    assert md["Partition"] == _expected("md", "slurm_partition") == "cpu", md
    assert "gres/gpu" not in md["AllocTRES"], md
    assert "cpu=1" in md["AllocTRES"].split(","), md
    assert md["ReqMem"] == f"{_expected('md', 'mem_mb')}M", md
    assert "cuda" not in (work / "out" / "md.txt").read_text()


def test_failed_job_is_retried_with_more_runtime(mini_run):
    run, rows, work = mini_run
    assert _profile()["retries"] >= 1
    assert run.rc == 0, _explain(run, work)
    flaky = _rows_of(run, rows, "flaky")
    assert [(r.get("State"), r.get("Timelimit")) for r in flaky] == [
        ("FAILED", "00:10:00"),
        ("COMPLETED", "00:20:00"),
    ], flaky
    assert all(r["Partition"] == "cpu" for r in flaky), flaky  # the profile's default partition
    assert (work / "out" / "flaky.txt").read_text().split() == ["ok", "20"]


# ---------------------------------------------------------------------------------------------------
# the real workflow: a tiny MD campaign (2 amorphous shards, then the figure and the summary)


def _small_config(work: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["campaign"]["name"] = "slurm-test"
    cfg["campaign"]["results"] = str(work / "results")
    cfg.setdefault("potentials", {})["directory"] = str(ROOT / "resources" / "potentials")
    cfg["families"]["nanoalloy"]["enabled"] = False
    cfg["families"]["cnt"]["enabled"] = False
    amorphous = cfg["families"]["amorphous"]
    amorphous["samples"] = 2
    amorphous["shard_size"] = 1
    amorphous["md"].update(melt_ps=0.05, quench_ps=0.05, hold_ps=0.05)
    cfg["imaging"]["enabled"] = False
    cfg["learning"]["enabled"] = False
    path = work / "small.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_md_campaign_runs_through_sbatch(slurm_cluster, operator_env, tmp_path):
    work = tmp_path
    config = _small_config(work)
    # the repository's Snakefile, run from a work folder: nothing is written into the repository
    run = _snakemake(
        slurm_cluster,
        operator_env,
        work,
        "--configfile",
        str(config),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        limit=420,
    )
    TIMINGS["md campaign"] = run.seconds
    assert "Using profile slurm for setting default command line arguments" in run.output, _explain(run, work)
    assert run.rc == 0, _explain(run, work)

    results = work / "results"
    structures = sorted((results / "md" / "amorphous").glob("*.extxyz"))
    manifests = sorted((results / "md" / "amorphous").glob("*.manifest.json"))
    assert len(structures) == 2 and len(manifests) == 2, sorted(p.name for p in (results / "md").rglob("*"))
    assert all(p.stat().st_size > 0 for p in structures)
    assert (results / "summary" / "campaign.json").is_file()
    assert (results / "figures" / "md_amorphous.png").is_file()

    assert sorted(r for _, r in run.jobs) == ["md", "md", "md_figure", "summary"], _explain(run, work)
    rows = _sacct([jid for jid, _ in run.jobs])
    for jid, rule in run.jobs:
        row = rows.get(jid)
        assert row is not None, f"sacct has no record of job {jid} ({rule}): {rows}"
        assert row["State"] == "COMPLETED", row
        assert row["JobName"] == run.run_id, row
        assert row["Partition"] == _expected(rule, "slurm_partition") == "cpu", row
        assert row["ReqMem"] == f"{_expected(rule, 'mem_mb')}M", row
        assert row["Comment"].startswith(f"rule_{rule}"), row
