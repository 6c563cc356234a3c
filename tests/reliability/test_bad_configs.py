"""Table-driven: malformed configs are refused before any job starts, naming the key."""

from __future__ import annotations

import copy
import math
import subprocess
import time
from pathlib import Path

import pytest

from hrtemflow.campaign.config import load_config
from hrtemflow.core.errors import ConfigError

NAN, INF = math.nan, math.inf


def _set(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return cfg


# (id, dotted key to set, value, text the error must contain)
BAD = [
    ("unknown top-level key", "imagin", {"device": "cpu"}, "Additional properties"),
    ("unknown nested key", "families.cnt.chirality", [[8, 4]], "families.cnt"),
    ("wrong type: string count", "families.cnt.samples_per_chirality", "four", "families.cnt.samples_per_chirality"),
    ("wrong type: float count", "families.amorphous.samples", 2.5, "families.amorphous.samples"),
    ("negative count", "families.nanoalloy.samples_per_ordering", -3, "families.nanoalloy.samples_per_ordering"),
    ("zero shard size", "families.cnt.shard_size", 0, "families.cnt.shard_size"),
    ("n < m", "families.cnt.chiralities", [[4, 8]], "families.cnt.chiralities[0]"),
    ("m < 0", "families.cnt.chiralities", [[8, -1]], "families.cnt.chiralities[0][1]"),
    ("n = m = 0", "families.cnt.chiralities", [[0, 0]], "families.cnt.chiralities[0]"),
    ("empty chirality list", "families.cnt.chiralities", [], "families.cnt.chiralities"),
    ("chirality not a pair", "families.cnt.chiralities", [[8, 4, 1]], "families.cnt.chiralities[0]"),
    ("duplicate chirality", "families.cnt.chiralities", [[8, 4], [8, 4]], "families.cnt.chiralities"),
    ("empty ordering list", "families.nanoalloy.orderings", [], "families.nanoalloy.orderings"),
    ("unknown ordering", "families.nanoalloy.orderings", ["onion"], "families.nanoalloy.orderings[0]"),
    ("unknown motif", "families.nanoalloy.structure.motifs", ["cube"], "families.nanoalloy.structure.motifs[0]"),
    (
        "reversed range",
        "families.nanoalloy.structure.co_fraction",
        [0.6, 0.2],
        "families.nanoalloy.structure.co_fraction",
    ),
    (
        "reversed density range",
        "families.amorphous.structure.density_g_cm3",
        [2.5, 1.5],
        "families.amorphous.structure.density_g_cm3",
    ),
    ("range of one value", "imaging.optics.defocus_nm", [10], "imaging.optics.defocus_nm"),
    ("pixel size <= 0 (sampling)", "imaging.families.cnt.sampling_A", 0.0, "imaging.families.cnt.sampling_A"),
    ("pixel size <= 0 (apply)", "apply.pixel_size_nm", -0.05, "apply.pixel_size_nm"),
    ("dose <= 0", "imaging.noise.dose_e_per_A2", [0, 100], "imaging.noise.dose_e_per_A2[0]"),
    ("field of view <= 0", "imaging.families.nanoalloy.fov_nm", [-1, 4], "imaging.families.nanoalloy.fov_nm[0]"),
    ("unknown device", "imaging.device", "tpu", "imaging.device"),
    ("image size not made", "learning.image_size", 96, "learning.image_size"),
    ("image size does not fit the model", "learning.tasks.chirality.depth", 7, "learning.tasks.chirality.depth"),
    ("unknown element set", "potentials.agco_set", "AgAu", "potentials.agco_set"),
    ("missing potential file", "potentials.directory", "/nonexistent/potentials", "potentials.directory"),
    ("results escapes", "campaign.results", "../elsewhere", "campaign.results"),
    ("results with braces", "campaign.results", "res{x}", "campaign.results"),
    ("results read as an option", "campaign.results", "-rf", "campaign.results"),
    ("bad campaign name", "campaign.name", "my campaign; rm -rf /", "campaign.name"),
    ("tube shorter than field", "families.cnt.structure.length_nm", 1.0, "families.cnt.structure.length_nm"),
    ("timestep too large", "families.cnt.md.timestep_fs", 5.0, "families.cnt.md.timestep_fs"),
    ("negative temperature", "families.nanoalloy.md.end_K", -300, "families.nanoalloy.md.end_K"),
    ("fault fraction above 1", "campaign.fault_injection.fraction", 1.5, "campaign.fault_injection.fraction"),
    ("sizes empty", "imaging.sizes", [], "imaging.sizes"),
    ("apply without folder", "apply.enabled", True, "apply.input_dir"),
    (
        "every family disabled",
        "families",
        {"nanoalloy": {"enabled": False}, "cnt": {"enabled": False}, "amorphous": {"enabled": False}},
        "families",
    ),
    ("classifier of one chirality", "families.cnt.chiralities", [[8, 4]], "learning.tasks.chirality"),
    ("support film without amorphous", "imaging.families.nanoalloy.support_film", True, None),
    ("a share of films above 1", "imaging.families.cnt.support_film", 1.5, "imaging.families.cnt.support_film"),
    ("a film under a film", "imaging.families.amorphous.support_film", True, "imaging.families.amorphous.support_film"),
    ("CNT film narrower than its field", "imaging.families.cnt.support_film", 0.5, "amorphous.structure.box_nm"),
    ("recorded pixel below range", "imaging.detector.recorded_pixel_scale", [0.1, 1.0], "recorded_pixel_scale"),
    # hostile input (issue "Hostile input ..."): non-finite numbers anywhere, named by their key
    ("NaN dose", "imaging.noise.dose_e_per_A2", [NAN, 100], "imaging.noise.dose_e_per_A2[0]: nan is not a finite"),
    ("infinite dose", "imaging.noise.dose_e_per_A2", [50, INF], "imaging.noise.dose_e_per_A2[1]: inf is not a finite"),
    ("NaN temperature", "families.nanoalloy.md.end_K", NAN, "families.nanoalloy.md.end_K: nan"),
    ("infinite temperature", "families.amorphous.md.melt_K", INF, "families.amorphous.md.melt_K: inf"),
    ("NaN fault fraction", "campaign.fault_injection.fraction", NAN, "campaign.fault_injection.fraction: nan"),
    ("NaN pixel size (sampling)", "imaging.families.cnt.sampling_A", NAN, "imaging.families.cnt.sampling_A: nan"),
    ("-inf pixel size (apply)", "apply.pixel_size_nm", -INF, "apply.pixel_size_nm: -inf"),
    ("NaN at an unknown key", "imaging.extra", {"x": [NAN]}, "imaging.extra.x[0]: nan"),
    # a whole number written as a float: the plan would fail on it with a TypeError
    ("integral float count", "families.amorphous.samples", 4.0, "families.amorphous.samples: 4.0 is not a whole"),
    ("integral float seed", "campaign.seed", 7.0, "campaign.seed: 7.0 is not a whole number"),
    ("integral float in a list", "imaging.sizes", [64.0, 128], "imaging.sizes[0]: 64.0 is not a whole number"),
    ("integral float chirality", "families.cnt.chiralities", [[8, 4.0]], "families.cnt.chiralities[0][1]"),
    ("integral float or null", "apply.window_px", 64.0, "apply.window_px: 64.0 is not a whole number"),
    ("integer beyond 64 bits", "campaign.seed", 2**70, "campaign.seed: 1180591620717411303424 is too large"),
    ("integer of 5000 digits", "campaign.seed", 10**5000, "campaign.seed: <an integer of 16610 bits>"),
    # a sample count no campaign means
    ("10^12 samples", "families.nanoalloy.samples_per_ordering", 10**12, "3,000,000,000,020 MD samples in all"),
    ("samples above a lowered ceiling", "campaign.max_samples", 20, "more than campaign.max_samples = 20"),
    # results where they must never go
    ("results at the root", "campaign.results", "/", "campaign.results: '/' is the file system's root"),
    ("results in /etc", "campaign.results", "/etc", "campaign.results: '/etc' is in the system folder /etc"),
    ("results under /usr", "campaign.results", "/usr/local/out", "is in the system folder /usr"),
    ("results in /proc", "campaign.results", "/proc/self", "is in the system folder /proc"),
    ("results outside the working directory", "campaign.results", "/tmp/hrtemflow-elsewhere", "outside the working"),
    # names too long for a file system
    (
        "300-character name",
        "campaign.name",
        "n" * 300,
        "campaign.name: 'nnnnnnnnnnnnnnnnn...nnnnnnnnnnnnnnnnnn' is too long",
    ),
    ("65-character name", "campaign.name", "n" * 65, "campaign.name"),
    ("300-character results", "campaign.results", "r" * 300, "campaign.results"),
    ("results folder name of 260 bytes", "campaign.results", "\u00e9" * 130, "longer than 255 bytes"),
    ("potentials folder name of 300 bytes", "potentials.directory", "p" * 300, "potentials.directory: potential file"),
    (
        "apply folder name of 300 bytes",
        "apply",
        {"enabled": True, "input_dir": "i" * 300, "tasks": []},
        "apply.input_dir",
    ),
    ("potentials folder of 5000 characters", "potentials.directory", "p/" * 2500, "potentials.directory"),
    # values no text config can hold, from a caller's dict
    ("lone surrogate", "apply.input_dir", "in\ud800put", "apply.input_dir: 'in\\ud800put' is not valid Unicode"),
    ("list of 2000 items", "imaging.sizes", list(range(16, 2016)), "imaging.sizes: a list of 2,000 items"),
]


@pytest.mark.parametrize(("key", "value", "expect"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_the_key(demo_cfg, repo_root, key, value, expect):
    cfg = _set(demo_cfg, key, value)
    if expect is None:  # needs a second change to be wrong
        cfg = _set(cfg, "families.amorphous.enabled", False)
        expect = "imaging.families.nanoalloy.support_film"
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=repo_root)
    assert expect in str(err.value), str(err.value)
    assert "nothing was run" in str(err.value)


def test_fresh_shot_noise_on_resampled_images_is_refused(demo_cfg, repo_root):
    cfg = _set(demo_cfg, "imaging.detector.recorded_pixel_scale", [0.6, 1.8])
    load_config(cfg, base=repo_root)  # stored noise: fine
    cfg = _set(cfg, "learning.tasks.chirality.shot_noise", "fresh")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=repo_root)
    assert "learning.tasks.chirality.shot_noise: fresh" in str(err.value)
    assert "recorded_pixel_scale" in str(err.value)


def test_table_is_large_enough():
    assert len(BAD) >= 25


def _lines(message: str) -> list[str]:
    """The problem lines of a ConfigError, after checking its bounds: under 1 kB, at most 5 problems listed."""
    assert len(message.encode()) < 1024, len(message.encode())
    head, *problems = message.split("\n")
    assert len([p for p in problems if "more)" not in p]) <= 5, message
    for line in problems:
        assert line.startswith("  - ") and len(line.encode()) <= 204, line
    return problems


def test_every_error_is_bounded_whatever_the_values(demo_cfg, repo_root):
    """Many problems with huge values: each line is clipped, five are listed and the rest counted."""
    cfg = copy.deepcopy(demo_cfg)
    cfg["campaign"]["name"] = "x" * 1_000_000
    cfg["families"]["cnt"]["chiralities"] = [["y" * 100_000, 1]] * 500
    cfg["imaging"]["families"]["cnt"]["fov_nm"] = {"z" * 10_000: "w" * 10_000}
    cfg.update({f"unknown{i}" * 50: {"v": list(range(50))} for i in range(100)})
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=repo_root)
    assert time.monotonic() - start < 10
    message = str(err.value)
    problems = _lines(message)
    assert problems[-1].startswith("  - (and ") and problems[-1].endswith(" more)"), message
    assert "xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx" in message and "x" * 50 not in message
    assert "were unexpected" in message and "and 97 more" in message  # 100 unknown top-level keys, 3 named


def test_one_problem_is_one_line_even_with_newlines_in_values(demo_cfg, repo_root):
    cfg = _set(demo_cfg, "apply", {"enabled": True, "input_dir": "a\nb\n" * 1000, "tasks": []})
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=repo_root)
    (line,) = _lines(str(err.value))
    assert line.startswith("  - apply.input_dir: folder 'a\\nb\\na") and "does not exist" in line


def test_results_outside_the_working_directory_need_to_be_allowed(demo_cfg, repo_root, tmp_path):
    scratch = str(tmp_path / "scratch" / "run1")
    with pytest.raises(ConfigError, match="set campaign.results_outside_base: true"):
        load_config(_set(demo_cfg, "campaign.results", scratch), base=repo_root)
    cfg = _set(_set(demo_cfg, "campaign.results", scratch), "campaign.results_outside_base", True)
    assert load_config(cfg, base=repo_root)["campaign"]["results"] == scratch
    inside = str(repo_root / "results-absolute")  # absolute but inside the working directory: no switch needed
    assert load_config(_set(demo_cfg, "campaign.results", inside), base=repo_root)["campaign"]["results"] == inside
    link = tmp_path / "link"
    link.symlink_to("/etc")
    with pytest.raises(ConfigError, match="system folder /etc"):  # through a symbolic link too
        load_config(_set(demo_cfg, "campaign.results", "link/x"), base=tmp_path)


@pytest.mark.parametrize("results", ["/", "/etc", "/etc/hrtemflow", "/var/tmp/x", "/dev/shm/x", "HOME"])
def test_root_home_and_system_folders_are_refused_even_when_allowed(demo_cfg, repo_root, results):
    results = str(Path.home()) if results == "HOME" else results
    cfg = _set(_set(demo_cfg, "campaign.results", results), "campaign.results_outside_base", True)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, base=repo_root)
    assert "campaign.results" in str(err.value) and ("root" in str(err.value) or "folder" in str(err.value))


def test_samples_up_to_the_ceiling_are_fine(demo_cfg, repo_root):
    cfg = load_config(demo_cfg, base=repo_root)
    assert cfg["campaign"]["max_samples"] == 10_000_000 and cfg["campaign"]["results_outside_base"] is False
    total = 3 * 8 + 4 * 4 + 4  # demo: 3 orderings x 8, 4 chiralities x 4, 4 amorphous
    assert load_config(_set(demo_cfg, "campaign.max_samples", total), base=repo_root)
    with pytest.raises(ConfigError, match=f"{total + 1 - 1:,} MD samples in all, more than campaign.max_samples"):
        load_config(_set(demo_cfg, "campaign.max_samples", total - 1), base=repo_root)


def test_a_dict_that_expands_or_nests_without_bound_is_refused_quickly(demo_cfg, repo_root):
    """Snakemake parses --configfile itself: its dict shares the aliased subtrees, which count each time."""
    laugh = ["lol"] * 9
    for _ in range(9):
        laugh = [laugh] * 9  # 9**10 values if walked naively
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for value, expect in ((laugh, "more than 20,000 values"), (deep, "nested more than"), (cyclic, "contains itself")):
        start = time.monotonic()
        with pytest.raises(ConfigError, match=expect):
            load_config(_set(demo_cfg, "campaign.name", value), base=repo_root)
        assert time.monotonic() - start < 2


def test_snakemake_refuses_a_bad_config_before_any_job(repo_root, demo_cfg, tmp_path):
    import yaml
    from tests.conftest import snakemake_exe

    cfg = _set(demo_cfg, "families.cnt.chiralities", [[4, 8]])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [
            snakemake_exe(),
            "-s",
            str(repo_root / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(path),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "families.cnt.chiralities[0]" in res.stderr + res.stdout
    assert not (tmp_path / "results").exists(), "a bad config must not create anything"
