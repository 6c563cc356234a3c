"""Table-driven: malformed configs are refused before any job starts, naming the key."""

from __future__ import annotations

import copy
import subprocess

import pytest

from hrtemflow.campaign.config import load_config
from hrtemflow.core.errors import ConfigError


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


def test_table_is_large_enough():
    assert len(BAD) >= 25


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
