"""`hrtemflow predict` on hostile arguments, bundles and folders: every refusal one line (<= 1 kB)
naming what is wrong, never a traceback, never a memory blow-up; a folder run goes on past bad files,
lists them with their reasons and exits non-zero; outputs never collide."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hrtemflow.apply.outputs import UniqueNames, bundle_keys, output_names
from hrtemflow.cli import main
from test_learn_data import make_spec


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny real chirality bundle (fringe shards, one epoch) with its ood.npz."""
    from hrtemflow.learn import train as tr
    from hrtemflow.learn.bundle import fit_bundle_ood

    root = tmp_path_factory.mktemp("predict-hostile")
    spec = make_spec(root, "chirality", epochs=1, batch_size=16, width=4)
    out = root / "models" / "chirality"
    tr.train(spec, out, base=root, progress=False)
    fit_bundle_ood(spec, out, base=root, max_images=64)
    return out


def _image(path: Path, n: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, rng.poisson(100, (n, n)).astype(np.float32)) if path.suffix == ".npy" else tifffile.imwrite(
        path, rng.poisson(100, (n, n)).astype(np.uint16)
    )
    return path


def _refused(capsys, argv: list[str], *fragments: str) -> str:
    """The command exits 2 with one 'error:' line (<= 1 kB) holding every fragment."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    line = err[-1]
    assert line.startswith("hrtemflow predict: error: ") and len(line) <= 1000, line
    for f in fragments:
        assert f in line, line
    return line


def _px(bundle: Path) -> str:
    return str(json.loads((bundle / "card.json").read_text())["pixel_size_A"] / 10)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--box", "inf,0,10,10"], "finite"),
        (["--box", "0,0,1e400,10"], "finite"),
        (["--box", "nan,0,10,10"], "finite"),
        (["--box", "0,0,10"], "four numbers"),
        (["--box", "10,0,5,10"], "x0 < x1"),
        (["--stride-fraction", "nan"], "--stride-fraction"),
        (["--stride-fraction", "0"], "--stride-fraction"),
        (["--window-px", "3"], "--window-px"),
        (["--window-px", "100000"], "--window-px"),
        (["--table-rows", "-1"], "--table-rows"),
        (["--pixel-size", "1e-9"], "--pixel-size"),
        (["--pixel-size", "inf"], "--pixel-size"),
        (["--max-pixels", "10"], "--max-pixels"),
        (["--temperature", "chirality=0"], "positive"),
        (["--temperature", "chirality=nan"], "positive"),
        (["--temperature", "chiralty=1.5"], "no bundle of task 'chiralty'"),
        (["--temperature", "denoise=1.5"], "no bundle of task 'denoise'"),
    ],
)
def test_every_argument_is_checked_before_any_work(bundle, tmp_path, capsys, extra, fragment):
    img = _image(tmp_path / "m.npy")
    _refused(
        capsys,
        [
            "predict",
            str(img),
            "--bundles",
            str(bundle),
            "--out",
            str(tmp_path / "o"),
            "--pixel-size",
            _px(bundle),
            *extra,
        ],
        fragment,
    )
    assert not (tmp_path / "o").exists()  # nothing written


def test_out_that_is_not_a_folder(bundle, tmp_path, capsys):
    img = _image(tmp_path / "m.npy")
    (tmp_path / "file").write_text("mine")
    for out in (tmp_path / "file", Path("/dev/null")):
        _refused(
            capsys,
            ["predict", str(img), "--bundles", str(bundle), "--out", str(out), "--pixel-size", _px(bundle)],
            "is not a folder",
        )
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize(
    ("card", "fragment"),
    [
        ("[]", "not a JSON object"),
        ("null", "not a JSON object"),
        ('{"kind": "classification"}', "task: missing"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        ("{", "not readable JSON"),
        ("CARD", "eps"),
    ],
)
def test_bad_cards_are_refused_naming_the_bundle(bundle, tmp_path, capsys, card, fragment):
    bad = tmp_path / "bad-bundle"
    shutil.copytree(bundle, bad)
    if card == "CARD":  # eps 0 would give NaN probabilities on a blank window
        obj = json.loads((bundle / "card.json").read_text())
        obj["normalisation"]["eps"] = 0
        (bad / "card.json").write_text(json.dumps(obj))
    else:
        (bad / "card.json").write_bytes(card if isinstance(card, bytes) else card.encode())
    img = _image(tmp_path / "m.npy")
    _refused(
        capsys,
        ["predict", str(img), "--bundles", str(bad), "--out", str(tmp_path / "o"), "--pixel-size", "0.1"],
        str(bad),
        fragment,
    )


def test_regions_csv_with_an_extra_field_and_non_finite_numbers(bundle, tmp_path, capsys):
    img = _image(tmp_path / "m.npy")
    for body, fragment in (
        ("x0,y0,x1,y1,label\n0,0,40,40,a,b\n", "line 2: 6 fields"),
        ("x0,y0,x1,y1\n0,0,inf,40\n", "finite"),
        ("x0,y0,x1,y1\n0,0,1e400,40\n", "finite"),
    ):
        csv = tmp_path / "r.csv"
        csv.write_text(body)
        _refused(
            capsys,
            [
                "predict",
                str(img),
                "--bundles",
                str(bundle),
                "--out",
                str(tmp_path / "o"),
                "--pixel-size",
                _px(bundle),
                "--regions",
                str(csv),
            ],
            fragment,
        )


def test_a_coarse_pixel_is_refused_before_allocation_and_a_folder_goes_on(bundle, tmp_path, capsys):
    """--pixel-size 2 nm on a frame read at a bundle's ~0.1 nm would upsample it 20x (GBs): refused per
    file; in a folder the good file is analysed, the bad one listed with its reason, exit 1."""
    img = _image(tmp_path / "one" / "big.npy", n=2048)
    line = _refused(
        capsys,
        ["predict", str(img), "--bundles", str(bundle), "--out", str(tmp_path / "o1"), "--pixel-size", "2"],
        "big.npy",
        "--max-pixels",
    )
    assert "would be" in line
    folder = tmp_path / "mixed"
    _image(folder / "good.npy")
    tifffile.imwrite(folder / "tiny.tif", np.ones((4, 4), np.uint16))  # too small to analyse
    (folder / "broken.mrc").write_bytes(b"\x00" * 50)
    code = main(
        [
            "predict",
            str(folder),
            "--bundles",
            str(bundle),
            "--out",
            str(tmp_path / "o2"),
            "--pixel-size",
            _px(bundle),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "2 file(s) failed" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    status = {Path(r["source"]).name: r["status"] for r in summary["micrographs"]}
    assert status == {"good.npy": "ok", "tiny.tif": "failed", "broken.mrc": "failed"}
    assert all(r["reason"] and "\n" not in r["reason"] for r in summary["micrographs"] if r["status"] == "failed")


def test_absurd_pixel_size_stays_under_two_gigabytes(bundle, tmp_path):
    """In a fresh process: a 4k frame at --pixel-size 1000 times the bundle's is refused from the cards,
    before Keras loads; the process's peak memory stays far below 2 GiB."""
    img = _image(tmp_path / "frame.npy", n=4096)
    code = (
        "import sys\nfrom hrtemflow.cli import main\nfrom hrtemflow.core.usage import peak_rss\n"
        f"rc = main(['predict', {str(img)!r}, '--bundles', {str(bundle)!r}, '--out', {str(tmp_path / 'o')!r}, "
        "'--pixel-size', '50', '--quiet'])\n"
        "print('KERAS', 'keras' in sys.modules)\n"
        "print('PEAK', peak_rss()); sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    peak = int(res.stdout.split("PEAK")[1])
    assert peak < 2 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"
    assert "KERAS False" in res.stdout, "the refusal waited on Keras: sizes are checked from the cards first"
    assert "--max-pixels" in res.stderr.strip().splitlines()[-1]


def test_outputs_cannot_collide(bundle, tmp_path, capsys):
    """Stems equal but for case, an input named like an output, a stem like a frame folder, two bundles of
    the same task in folders of the same name: every output lands in its own place, none overwritten."""
    folder = tmp_path / "in"
    for name, seed in (
        ("a.tif", 1),
        ("a.TIF", 2),
        ("A.npy", 3),
        ("summary.json.npy", 4),
        ("x_f000.npy", 5),
    ):
        _image(folder / name, seed=seed)
    stack = np.random.default_rng(7).poisson(100, (2, 96, 96)).astype(np.float32)
    np.save(folder / "x.npy", stack)
    twin = tmp_path / "other" / bundle.name
    shutil.copytree(bundle, twin)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(folder),
            "--bundles",
            str(bundle),
            str(twin),
            "--out",
            str(out),
            "--pixel-size",
            _px(bundle),
            "--frames",
            "all",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    dirs = [r["out_dir"] for r in summary["micrographs"]]
    assert len(dirs) == 7 and len({d.casefold() for d in dirs}) == 7  # 6 files, one of them 2 frames
    assert all(Path(d).parent == out for d in dirs)
    for r in summary["micrographs"]:
        pred = json.loads((Path(r["out_dir"]) / "predictions.json").read_text())
        assert pred["source"] == r["source"] and pred["frame"] == r["frame"]
    assert set(summary["bundles"]) == {"chirality@chirality", "chirality@chirality_2"}


def test_unique_names_by_construction():
    names = UniqueNames()
    got = output_names(
        [Path(p) for p in ("a.tif", "a.TIF", "A.png", "summary.json.npy", "...tif", "summary.csv.png")], names
    )
    assert len({v.casefold() for v in got.values()}) == len(got)
    assert got[Path("summary.json.npy")] != "summary.json" and not got[Path("...tif")].startswith(".")
    assert names.claim("a_tif") not in got.values()
    assert bundle_keys(["chirality", "chirality", "denoise"], ["m", "m", "d"]) == [
        "chirality@m",
        "chirality@m_2",
        "denoise",
    ]
