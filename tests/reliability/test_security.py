"""Security: nothing loads pickle or runs code from data, config text never reaches a shell
unquoted, and paths from a config or spec cannot escape the results folder.

- A scan of src/ (AST and plain text) finds no pickle, torch.load, unsafe yaml, Keras
  safe_mode=False, allow_pickle=True, np.load without allow_pickle=False, os.system, eval/exec or
  shell=True; the scanner is shown to catch each of those in a planted snippet.
- A crafted object .npy (whose unpickling would create a file) is refused by the micrograph readers
  in every .npy format version, and nothing runs; a Zarr store with a pickle-coded array neither.
- A Keras model with a Lambda layer is refused by `load_bundle` (safe mode) without running it, and
  a checkpoint holding one makes training start over instead of loading it.
- campaign.results is free text (only '..' is refused): strings with `;`, `$(...)`, backquotes and
  spaces are accepted, so the workflow must quote them. The plan, MD and imaging run for real with
  such a results folder; every rule's shell command (from a dry run of the whole tiny campaign,
  apply included) is run under bash with a stub `hrtemflow` that records its arguments: no
  injected command runs and each path arrives as one intact argument.
- Group and shard names come from validated orderings and integer chiralities; a hand-made spec
  with `../` in its names writes only where the command line says.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import BIN, ROOT, run_snakemake, tiny_campaign

from hrtemflow.campaign.paths import shard_paths as paths
from hrtemflow.campaign.paths import train_paths
from hrtemflow.campaign.plan import make_plan
from hrtemflow.campaign.specs import spec_texts
from hrtemflow.core.errors import ConfigError, HrtemflowError
from hrtemflow.store.dataset import open_dataset

SRC = ROOT / "src" / "hrtemflow"
NASTY = "res dir;touch PWNED$(touch PWNED2)`touch PWNED3`"
PWNED = ("PWNED", "PWNED2", "PWNED3")

# TensorFlow tensors lack the numpy-2 `copy` keyword; Keras converts them many times a step
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def pwned_files(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.rglob("*") if p.name in PWNED]


# ------------------------------------------------------------------------------------------ source scan

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
TEXT_PATTERNS = [
    r"allow_pickle\s*=\s*True",
    r"pickle\.loads?\(",
    r"safe_mode\s*=\s*False",
    r"torch\.load\(",
    r"unsafe_load\(",
    r"full_load\(",
    r"enable_unsafe_deserialization",
    r"shell\s*=\s*True",
    r"os\.system\(",
    r"os\.popen\(",
]


def _const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan_source(text: str, where: str = "<src>") -> list[str]:
    """Unsafe deserialisation and code execution in Python source: one line per finding."""
    found = []
    tree = ast.parse(text)
    # a loader class of the module's own that derives from yaml.SafeLoader is as safe as SafeLoader
    safe_loaders = {"SafeLoader", "CSafeLoader"} | {
        c.name
        for c in ast.walk(tree)
        if isinstance(c, ast.ClassDef)
        and any(isinstance(b, ast.Attribute) and b.attr in ("SafeLoader", "CSafeLoader") for b in c.bases)
    }
    for pattern in TEXT_PATTERNS:
        for m in re.finditer(pattern, text):
            found.append(f"{where}:{text.count(chr(10), 0, m.start()) + 1}: text {m.group(0)!r}")
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.split(".")[0] in PICKLE_MODULES]
            if bad:
                found.append(f"{line}: imports {bad}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
        name = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else None)
        if name in ("eval", "exec") and owner is None:
            found.append(f"{line}: {name}()")
        if owner in ("np", "numpy") and name == "load" and not _const(_kw(node, "allow_pickle"), False):
            found.append(f"{line}: np.load without allow_pickle=False")
        if owner == "yaml" and name in ("load", "load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            name_of = (
                loader.attr
                if isinstance(loader, ast.Attribute)
                else (loader.id if isinstance(loader, ast.Name) else None)
            )
            if name_of not in safe_loaders:
                found.append(f"{line}: yaml.{name} without SafeLoader")
        if owner == "torch" and name == "load":
            found.append(f"{line}: torch.load")
        if (
            _const(_kw(node, "safe_mode"), False)
            or _const(_kw(node, "allow_pickle"), True)
            or _const(_kw(node, "shell"), True)
        ):
            found.append(f"{line}: unsafe keyword in {name}()")
        if name == "load_model" and _kw(node, "safe_mode") is None:
            found.append(f"{line}: load_model without an explicit safe_mode=True")
    return found


def test_source_never_loads_pickle_or_runs_code():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [hit for p in files for hit in scan_source(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert found == [], "\n".join(found)
    uses = [p for p in files if "np.load(" in p.read_text(encoding="utf-8")]
    assert uses, "the readers load .npy files; the scan above checked each call"
    workflow = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    text = "\n".join(p.read_text() for p in workflow)
    for pattern in (*TEXT_PATTERNS, r"\bpickle\b", r"yaml\.load\("):
        assert not re.search(pattern, text), pattern


def test_the_scanner_catches_what_it_looks_for():
    planted = textwrap.dedent("""
        import pickle
        import numpy as np, yaml, torch, keras, os, subprocess
        a = np.load("x.npy")
        b = np.load("x.npy", allow_pickle=True)
        c = yaml.load(open("c.yaml"))
        d = torch.load("m.pt")
        e = keras.saving.load_model("m.keras", safe_mode=False)
        f = keras.saving.load_model("m.keras")
        subprocess.run("ls", shell=True)
        os.system("ls")
        eval("1")
        g = pickle.loads(b"")
        class Unsafe(yaml.Loader): pass
        h = yaml.load("x", Loader=Unsafe)
    """)
    hits = "\n".join(scan_source(planted))
    assert hits.count("yaml.load without SafeLoader") == 2  # plain, and a subclass of the unsafe Loader
    assert scan_source("import yaml\nclass L(yaml.SafeLoader): pass\nx = yaml.load('a', Loader=L)\n") == []
    for what in (
        "imports ['pickle']",
        "np.load without allow_pickle=False",
        "yaml.load without SafeLoader",
        "torch.load",
        "load_model without an explicit",
        "unsafe keyword in run()",
        "os.system(",
        "eval()",
        "pickle.loads(",
    ):
        assert what in hits, what
    safe = (
        "import numpy as np, yaml\nnp.load('x', allow_pickle=False)\n"
        "yaml.load(t, Loader=yaml.SafeLoader)\nyaml.safe_load(t)\n"
    )
    assert scan_source(safe) == []


# ------------------------------------------------------------------------------------------ data files


class _Payload:
    """Unpickling this creates the file named by `target`: proof that a pickle was loaded."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_object_npy_is_refused_and_never_unpickled(tmp_path, version):
    from hrtemflow.apply.readers import read_micrograph

    target = tmp_path / "PWNED"
    arr = np.empty((8, 8), dtype=object)
    arr[...] = _Payload(str(target))
    path = tmp_path / "evil.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array(fh, arr, version=version, allow_pickle=True)
    with pytest.raises(HrtemflowError) as err:
        read_micrograph(path, pixel_size_nm=0.01)
    if version != (3, 0):
        assert "pickle" in str(err.value)
    assert not target.exists(), "the object array was unpickled"


def test_zarr_store_with_a_pickle_coded_array_is_never_unpickled(tmp_path):
    import numcodecs
    import zarr

    target = tmp_path / "PWNED"
    path = tmp_path / "evil.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs.update({"complete": True, "sizes": [32]})
    (path / "sample_id").mkdir()  # a Zarr v2 array coded with numcodecs' Pickle filter
    (path / "sample_id" / ".zarray").write_text(
        json.dumps(
            {
                "zarr_format": 2,
                "shape": [1],
                "chunks": [1],
                "dtype": "|O",
                "compressor": None,
                "fill_value": None,
                "order": "C",
                "filters": [{"id": "pickle", "protocol": 5}],
                "dimension_separator": ".",
            }
        )
    )
    (path / "sample_id" / "0").write_bytes(numcodecs.Pickle().encode(np.array([_Payload(str(target))], dtype=object)))
    with pytest.raises(Exception):  # noqa: B017, PT011 (any refusal will do, as long as nothing was unpickled)
        open_dataset([path], 32)
    with pytest.raises(Exception):  # noqa: B017, PT011
        zarr.open_group(str(path), mode="r")["sample_id"][...]
    assert not target.exists()


def _lambda_model(target: Path):
    import keras

    path = str(target)
    inp = keras.Input((16, 16, 1))
    # would create `target` when the layer is rebuilt and called
    x = keras.layers.Lambda(lambda t: t + 0.0 * float(len(str(open(path, "w")))))(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out)


def test_model_with_a_lambda_layer_is_refused_by_load_bundle(tmp_path):
    from hrtemflow.learn.bundle import load_checked as load_bundle

    target = tmp_path / "PWNED"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    model = _lambda_model(target)
    target.unlink(missing_ok=True)  # building the model above called the lambda once
    model.save(bundle / "model.keras")
    target.unlink(missing_ok=True)
    from hrtemflow.learn.card import ModelCard
    from hrtemflow.learn.preprocess import NORMALISATION

    card = ModelCard(
        task="chirality",
        kind="classification",
        input_size=16,
        pixel_size_A=1.0,
        normalisation=dict(NORMALISATION),
        dataset_sha256="",
        hyper={"batch_size": 1},
        classes=["a", "b"],
    )
    (bundle / "card.json").write_text(json.dumps(card.to_json()))  # a valid card: the model itself must be refused
    with pytest.raises(HrtemflowError, match="safe mode.*Lambda"):
        load_bundle(bundle)
    assert not target.exists(), "the Lambda layer's code ran while loading"


def test_checkpoint_with_a_lambda_layer_is_not_loaded_and_training_starts_over(tmp_path, capsys):
    from tests.test_learn_data import make_spec

    from hrtemflow.learn import train as tr

    spec = make_spec(tmp_path, "chirality", samples_per_group=3, shard_size=3, views=1, variants=4, epochs=1, width=4)
    out = tmp_path / "model"
    tr.train(spec, out, base=tmp_path, progress=False)
    target = tmp_path / "PWNED"
    _lambda_model(target).save(out / "checkpoint" / "last.keras")
    target.unlink(missing_ok=True)
    card = tr.train({**spec, "hyper": {**spec["hyper"], "epochs": 2}}, out, base=tmp_path, progress=False)
    printed = capsys.readouterr().out
    assert "cannot be loaded in safe mode" in printed and "starting over" in printed
    assert card.epochs_run == 2 and not target.exists()


# ------------------------------------------------------------------------------------------ config text and shells


def test_which_strings_the_schema_accepts():
    from hrtemflow.campaign.config import load_config

    for name in ("x; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "a b", "../x"):
        cfg = tiny_campaign()
        cfg["campaign"]["name"] = name
        with pytest.raises(ConfigError, match="campaign.name"):
            load_config(cfg, base=ROOT)
    for results in (NASTY, "$(touch PWNED)", "`touch PWNED`", "res'q\"x", "/abs/folder"):
        cfg = tiny_campaign()
        cfg["campaign"]["results"] = results
        cfg["campaign"]["results_outside_base"] = results.startswith("/")  # a scratch folder must be allowed explicitly
        assert load_config(cfg, base=ROOT)["campaign"]["results"] == results  # accepted: the workflow must quote it
    for results in ("../up", "res/../../up", ".."):
        cfg = tiny_campaign()
        cfg["campaign"]["results"] = results
        with pytest.raises(ConfigError, match="campaign.results"):
            load_config(cfg, base=ROOT)


@pytest.mark.slow
def test_workflow_with_shell_metacharacters_in_results_runs_them_never(tmp_path):
    """Plan, MD, imaging, figures and summary for real, results in a folder named like a shell attack."""
    cfg = tiny_campaign()
    cfg["campaign"]["results"] = NASTY
    cfg["families"]["nanoalloy"]["enabled"] = False
    cfg["families"]["amorphous"]["enabled"] = False
    cfg["families"]["cnt"].update(chiralities=[[6, 0]], samples_per_chirality=2, shard_size=2)
    cfg["learning"]["enabled"] = False
    res = run_snakemake(tmp_path, cfg)
    assert res.returncode == 0, res.stderr[-5000:]
    assert pwned_files(tmp_path) == [] and not any((ROOT / n).exists() for n in PWNED)
    r = tmp_path / NASTY
    assert (r / "md" / "cnt-6-0" / "cnt-6-0-s00000.manifest.json").is_file()
    assert (r / "images" / "cnt-6-0" / "cnt-6-0-s00000.zarr" / "zarr.json").is_file()
    assert json.loads((r / "summary" / "campaign.json").read_text())["total"]["samples"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".snakemake", "campaign.yaml", NASTY])


STUB = """#!{python}
import json, sys
with open({record!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture(scope="module")
def shell_commands(tmp_path_factory):
    """Every job's shell command from a dry run of the whole tiny campaign (apply on), run under bash
    with a stub `hrtemflow` that records its arguments: {rule: [argv, ...]}, and the workdir."""
    work = tmp_path_factory.mktemp("shell")
    inputs = work / "in dir;touch PWNED"
    inputs.mkdir()
    cfg = tiny_campaign()
    cfg["campaign"]["results"] = NASTY
    cfg["apply"] = {"enabled": True, "input_dir": inputs.name, "tasks": ["chirality"]}
    res = run_snakemake(work, cfg, "--dry-run", "--printshellcmds")
    assert res.returncode == 0, res.stderr[-4000:]
    jobs, rule, log = [], None, None
    for line in res.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule, log = m.group(1), None
        elif line.startswith("    log: "):
            log = line[len("    log: ") :]
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            jobs.append((rule, log, line[len("Shell command: ") :]))
    stub_dir = work / "stub"
    stub_dir.mkdir()
    record = work / "argv.jsonl"
    (stub_dir / "hrtemflow").write_text(STUB.format(python=sys.executable, record=str(record)))
    (stub_dir / "hrtemflow").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub_dir}{os.pathsep}{os.environ['PATH']}"}
    calls: dict[str, list[list[str]]] = {}
    for rule, log, cmd in jobs:
        if log:
            (work / log).parent.mkdir(parents=True, exist_ok=True)  # Snakemake makes the log folder before a job
        before = record.read_text().count("\n") if record.exists() else 0
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail; {cmd}"], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (rule, cmd, done.stderr)
        lines = record.read_text().splitlines()
        assert len(lines) == before + 1, (rule, cmd)
        calls.setdefault(rule, []).append(json.loads(lines[-1]))
    return work, calls


RULES = {  # rule: the options whose value is a path under results
    "md": ("--structures", "--manifest"),
    "image": ("--out",),
    "md_figure": ("--out",),
    "image_figure": ("--out",),
    "summary": ("--out",),
    "train": ("--out-dir",),
    "evaluate": ("--model-dir", "--out-dir"),
    "apply": ("--bundles", "--out"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_shell_commands_pass_config_text_as_single_arguments(shell_commands, rule):
    work, calls = shell_commands
    assert rule in calls, f"the dry run has no {rule} job"
    assert pwned_files(work) == []
    for argv in calls[rule]:
        for arg in argv:
            if "PWNED" in arg:  # every piece of config text arrives whole, as one argument
                assert NASTY in arg or arg == "in dir;touch PWNED", (rule, arg, argv)
        for opt in RULES[rule]:
            value = argv[argv.index(opt) + 1]
            assert value.startswith(NASTY + "/"), (rule, opt, argv)
    if rule == "apply":
        assert calls[rule][0][1] == "in dir;touch PWNED"


# ------------------------------------------------------------------------------------------ paths


def test_group_names_cannot_escape_and_planned_paths_stay_inside_results():
    from hrtemflow.campaign.config import load_config

    for key, value in (("orderings", ["../../etc"]), ("orderings", ["core-shell/../../x"])):
        cfg = tiny_campaign()
        cfg["families"]["nanoalloy"][key] = value
        with pytest.raises(ConfigError, match="families.nanoalloy.orderings"):
            load_config(cfg, base=ROOT)
    for bad in ([["../", 1]], [[6.5, 0]], [["6", "0"]]):
        cfg = tiny_campaign()
        cfg["families"]["cnt"]["chiralities"] = bad
        with pytest.raises(ConfigError, match="families.cnt.chiralities"):
            load_config(cfg, base=ROOT)
    cfg = load_config(tiny_campaign(), base=ROOT)
    plan = make_plan(cfg)
    results = Path("/w") / cfg["campaign"]["results"]
    planned = [p for s in plan.shards for p in paths(cfg, s).values()]
    planned += [p for t in plan.tasks() for p in train_paths(cfg, t).values()]
    planned += list(spec_texts(plan))
    for p in planned:
        assert Path(os.path.normpath(Path("/w") / p)).is_relative_to(results), p
        assert re.fullmatch(r"[a-z0-9./_-]+", p), p


def test_crafted_spec_names_do_not_choose_where_outputs_go(tmp_path):
    """Spec names are data: `hrtemflow md` and `hrtemflow image` write only the paths given on the command line."""
    from hrtemflow.campaign.config import load_config
    from hrtemflow.campaign.plan import make_plan
    from hrtemflow.campaign.specs import image_spec, md_spec

    cfg = tiny_campaign()
    cfg["families"]["cnt"].update(samples_per_chirality=1, shard_size=1)
    cfg = load_config(cfg, base=ROOT)
    plan = make_plan(cfg)
    shard = next(s for s in plan.shards if s.family == "cnt")
    evil = "../../../../escaped"
    md = {**md_spec(cfg, shard), "group": evil, "shard": evil}
    out = tmp_path / "deep" / "er" / "out"
    (tmp_path / "md.json").write_text(json.dumps(md))
    hrtemflow = str(BIN / "hrtemflow")
    res = subprocess.run(
        [
            hrtemflow,
            "md",
            str(tmp_path / "md.json"),
            "--structures",
            str(out / "x.extxyz"),
            "--manifest",
            str(out / "x.manifest.json"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    img = {
        **image_spec(plan, shard),
        "group": evil,
        "shard": evil,
        "md": {"structures": str(out / "x.extxyz"), "manifest": str(out / "x.manifest.json")},
    }
    (tmp_path / "img.json").write_text(json.dumps(img))
    res = subprocess.run(
        [hrtemflow, "image", str(tmp_path / "img.json"), "--out", str(out / "x.zarr"), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "x.zarr" not in p.parts)
    assert made == ["deep/er/out/x.extxyz", "deep/er/out/x.manifest.json", "img.json", "md.json"], made
    assert not list(tmp_path.parent.rglob("escaped*")) and not (Path("/") / "escaped").exists()
