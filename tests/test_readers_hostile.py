"""Hostile input to the micrograph readers never crashes, hangs, eats memory or silently answers wrong.

For every file `read_micrograph` either returns finite float32 images (saying in their metadata
where it changed the pixels) or raises `HrtemflowError` with one line of at most 1000 characters
that names the file; never another exception, never more than 10 s, never more than 2 GiB.

- the reported defects, one test each (MRC extended header, palette/MinIsWhite TIFFs, float32
  ranges, constant images, warnings as metadata, .emi names and companions, channel errors);
- properties over generated hostile files (hypothesis): truncated files of every format, random
  bytes under every extension, absurd header sizes (in a subprocess capped at 2 GiB of address
  space), odd dtypes, palette / MinIsWhite / overflowing images;
- a committed corpus in tests/data/hostile/readers/ (README.md there), run as a table.

`python tests/test_readers_hostile.py --write-corpus` rewrites the corpus and its README.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hrtemflow.apply.readers import SUPPORTED_EXTENSIONS, Micrograph, list_micrographs, read_micrograph
from hrtemflow.core.errors import HrtemflowError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_readers, also in the capped subprocess
from test_readers import write_dm, write_ncem_emd, write_ser, write_velox  # noqa: E402

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "data" / "hostile" / "readers"
MESSAGE_LIMIT = 1000
SECONDS = 10.0
MEMORY_CAP = 2 * 2**30
PIXEL_NM = 0.05

# hypothesis: small examples, no database folder in the checkout, 10 s per example;
# HRTEMFLOW_HOSTILE_SCALE=10 runs ten times as many examples (a deeper search, minutes)
SCALE = float(os.environ.get("HRTEMFLOW_HOSTILE_SCALE", "1"))
PROPERTY = settings(
    max_examples=max(1, int(40 * SCALE)),
    deadline=int(SECONDS * 1000),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------------------------
# the contract


def check_outcome(path: Path, **kw: Any) -> list[Micrograph] | HrtemflowError:
    """Read `path` and check the contract; the Micrographs, or the HrtemflowError raised."""
    kw.setdefault("pixel_size_nm", PIXEL_NM)
    kw.setdefault("frames", "all")
    t0 = time.perf_counter()
    try:
        out = read_micrograph(path, **kw)
    except HrtemflowError as exc:
        check_message(str(exc), path)
        assert "not enough memory" not in str(exc), f"a small file exhausted memory: {exc}"
        result: list[Micrograph] | HrtemflowError = exc
    else:
        assert out, f"{path}: no image and no error"
        for m in out:
            assert isinstance(m, Micrograph)
            assert m.data.dtype == np.float32 and m.data.ndim == 2, (m.data.dtype, m.data.shape)
            assert np.isfinite(m.data).all(), f"{path}: non-finite pixels returned"
            json.dumps(m.metadata, allow_nan=False)
            for note in m.metadata.get("warnings", []):
                check_message(note, path)
        result = out
    elapsed = time.perf_counter() - t0
    assert elapsed < SECONDS, f"{path.name}: {elapsed:.1f} s"
    return result


def check_message(text: str, path: Path) -> None:
    assert len(text.splitlines()) == 1, f"not one line: {text!r}"
    assert len(text) <= MESSAGE_LIMIT, f"{len(text)} characters: {text[:200]}..."
    assert path.name in text, f"the file {path.name!r} is not named: {text}"


def refused(path: Path, phrase: str, **kw: Any) -> str:
    got = check_outcome(path, **kw)
    assert isinstance(got, HrtemflowError), f"{path.name} was read, expected a refusal with {phrase!r}"
    assert phrase.lower() in str(got).lower(), f"{phrase!r} not in: {got}"
    return str(got)


def read_one(path: Path, **kw: Any) -> Micrograph:
    got = check_outcome(path, **kw)
    assert not isinstance(got, HrtemflowError), f"{path.name} refused: {got}"
    assert len(got) == 1
    return got[0]


# ---------------------------------------------------------------------------------------------
# small files of every format

RNG_IMAGE = np.random.default_rng(11).integers(0, 4000, size=(20, 24)).astype(np.uint16)


def write_mrc(path: Path, data: np.ndarray, voxel: float = 0.5) -> Path:
    import mrcfile

    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
    return path


def patch_mrc(path: Path, **fields: int) -> Path:
    """Overwrite int32 header fields (little-endian) of an MRC file: nx ny nz mode mz ispg nsymbt."""
    at = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "mz": 36, "ispg": 88, "nsymbt": 92}
    blob = bytearray(path.read_bytes())
    for name, value in fields.items():
        blob[at[name] : at[name] + 4] = struct.pack("<i", value)
    path.write_bytes(bytes(blob))
    return path


def write_png(path: Path, data: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(data).save(path)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_png_ihdr(path: Path, width: int, height: int, depth: int = 8, colour: int = 0, rows: int = 20) -> Path:
    """A PNG whose IHDR says width x height (any values) around the data of a small grey image."""
    raw = b"".join(b"\x00" + bytes(range(24)) for _ in range(rows))
    ihdr = struct.pack(">IIBBBBB", width % 2**32, height % 2**32, depth % 256, colour % 256, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_tiff_raw(
    path: Path,
    width: int,
    length: int,
    bps: int = 16,
    spp: int = 1,
    photometric: int = 1,
    rowsperstrip: int | None = None,
    bytecount: int | None = None,
    sampleformat: int = 1,
    payload: bytes | None = None,
) -> Path:
    """A baseline little-endian TIFF with any tag values around `payload` (default: 20 x 24 uint16)."""
    payload = RNG_IMAGE.tobytes() if payload is None else payload
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, length),
        (258, 3, 1, bps),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 8),
        (277, 3, 1, spp),
        (278, 4, 1, length if rowsperstrip is None else rowsperstrip),
        (279, 4, 1, len(payload) if bytecount is None else bytecount),
        (339, 3, 1, sampleformat),
    ]
    ifd_at = 8 + len(payload)
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        value %= 2**16 if typ == 3 else 2**32
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + payload + ifd)
    return path


def write_tia_emi(path: Path, kv: float = 300.0, mode: str = "TEM HM Imaging", blocks: int = 1) -> Path:
    """A TIA .emi: binary bytes around `blocks` <ObjectInfo> XML blocks (block n: n * 100 V more)."""
    xml = b""
    for n in range(blocks):
        xml += (
            "<ObjectInfo><ExperimentalDescription><Root>"
            f"<Data><Label>High tension</Label><Value>{kv + n * 0.1}</Value><Unit>kV</Unit></Data>"
            "<Data><Label>Microscope</Label><Value>Test TEM</Value><Unit></Unit></Data>"
            f"<Data><Label>Mode</Label><Value>{mode}</Value><Unit></Unit></Data>"
            "</Root></ExperimentalDescription>"
            "<AcquireDate>Mon Jan 01 10:00:00 2024</AcquireDate>"
            "<AcquireInfo><CameraNamePath>BM-Ceta</CameraNamePath></AcquireInfo></ObjectInfo>"
        ).encode() + b"\x00" * 8
    path.write_bytes(b"\x00" * 64 + xml + b"\x00" * 16)
    return path


def write_valid(fmt: str, folder: Path) -> Path:
    """One small valid file of `fmt` in `folder` holding RNG_IMAGE (as float32 where the format needs it)."""
    import tifffile

    data = RNG_IMAGE.astype(np.float32)
    if fmt == "tif":
        p = folder / "valid.tif"
        tifffile.imwrite(p, RNG_IMAGE, imagej=True, resolution=(20, 20), metadata={"unit": "nm"})
    elif fmt == "tif-zlib":
        p = folder / "valid.tiff"
        tifffile.imwrite(p, RNG_IMAGE, compression="zlib")
    elif fmt == "png":
        p = write_png(folder / "valid.png", RNG_IMAGE)
    elif fmt == "npy":
        p = folder / "valid.npy"
        np.save(p, data)
    elif fmt == "mrc":
        p = write_mrc(folder / "valid.mrc", data)
    elif fmt in ("dm3", "dm4"):
        p = folder / f"valid.{fmt}"
        write_dm(p, data, 0.05, "nm", version=int(fmt[-1]))
    elif fmt == "ser":
        p = folder / "valid_1.ser"
        write_ser(p, data, 5e-11)
    elif fmt == "emi":
        p = write_tia_emi(folder / "valid.emi")
        write_ser(folder / "valid_1.ser", data, 5e-11)
    elif fmt == "emd-velox":
        p = folder / "valid.emd"
        write_velox(p, data, 5e-11)
    elif fmt == "emd-ncem":
        p = folder / "valid.emd"
        write_ncem_emd(p, data, 0.05)
    else:
        raise ValueError(fmt)
    return p


FORMATS = ("tif", "tif-zlib", "png", "npy", "mrc", "dm3", "dm4", "ser", "emi", "emd-velox", "emd-ncem")


# ---------------------------------------------------------------------------------------------
# defect 1: MRC header parsed (struct) and checked before mrcfile allocates


def test_mrc_extended_header_beyond_the_file_is_refused_before_allocating(tmp_path: Path) -> None:
    """nsymbt = 2 GiB in a small file: mrcfile (even header_only) would allocate it before any check."""
    p = patch_mrc(write_mrc(tmp_path / "ext.mrc", np.zeros((100, 120), np.float32) + RNG_IMAGE[0, 0]), nsymbt=2**31 - 1)
    assert p.stat().st_size < 50_000
    with pytest.raises(HrtemflowError):  # import the libraries outside the measurement
        read_micrograph(p, pixel_size_nm=PIXEL_NM)
    tracemalloc.start()
    try:
        text = refused(p, "extended header of 2147483647 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "beyond the end of the file" in text
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.0f} MiB: the header's size was allocated"


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"nx": 40000, "ny": 40000}, "40000 x 40000 pixels"),
        ({"nz": 2**31 - 1}, "over the limit"),
        ({"nz": 0}, "empty image"),
        ({"mode": 101}, "mode 101 (4-bit packed integers) is not supported"),
        ({"mode": 3}, "mode 3 (complex 16-bit integers) is not supported"),
        ({"mode": 7}, "unknown MRC data mode 7"),
        ({"nsymbt": -5}, "negative extended-header size"),
        ({"nsymbt": 4096}, "truncated"),
        ({"ispg": 401, "mz": 0}, "mz = 0"),
    ],
)
def test_mrc_header_is_checked_before_mrcfile_reads(tmp_path: Path, fields: dict[str, int], phrase: str) -> None:
    p = patch_mrc(write_mrc(tmp_path / "bad.mrc", RNG_IMAGE.astype(np.float32)), **fields)
    refused(p, phrase)


def test_mrc_byte_order_from_the_stamp_or_by_plausibility(tmp_path: Path) -> None:
    data = RNG_IMAGE.astype(np.float32)
    big = write_mrc(tmp_path / "big.mrc", data.astype(">f4"))
    m = read_one(big, pixel_size_nm=None)
    np.testing.assert_array_equal(m.data, data)
    assert m.metadata["mrc_byte_order"] == "big-endian" and m.pixel_size_A == pytest.approx(0.5)

    blob = bytearray(big.read_bytes())
    blob[212:216] = b"\x00\x00\x00\x00"  # no stamp: the mode is only valid big-endian
    (tmp_path / "nostamp.mrc").write_bytes(bytes(blob))
    m = read_one(tmp_path / "nostamp.mrc")
    np.testing.assert_array_equal(m.data, data)
    (note,) = m.metadata["warnings"]
    assert "unrecognised MRC machine stamp 00000000" in note and "big-endian" in note

    blob[208:212] = b"XXXX"
    (tmp_path / "nomap.mrc").write_bytes(bytes(blob))
    refused(tmp_path / "nomap.mrc", "no 'MAP' identifier")


# ---------------------------------------------------------------------------------------------
# defect 2: photometric correctness, float32 ranges, constant images, warnings as metadata


def test_palette_tiff_is_read_through_its_colour_map(tmp_path: Path) -> None:
    import tifffile

    idx = (np.arange(20 * 24).reshape(20, 24) % 200).astype(np.uint8)
    grey = np.tile((255 - np.arange(256, dtype=np.uint16)) * 257, (3, 1))  # an inverted grey ramp
    p = tmp_path / "palette_grey.tif"
    tifffile.imwrite(p, idx, photometric="palette", colormap=grey)
    m = read_one(p)
    np.testing.assert_array_equal(m.data, grey[0][idx].astype(np.float32))
    assert m.metadata["photometric"] == "palette" and m.metadata["colour"] == "palette-grey"

    cmap = np.stack([np.arange(256) * 257, (255 - np.arange(256)) * 100, np.full(256, 5000)]).astype(np.uint16)
    p = tmp_path / "palette_colour.tif"
    tifffile.imwrite(p, idx, photometric="palette", colormap=cmap)
    m = read_one(p)
    lum = 0.2125 * cmap[0].astype(np.float32) + 0.7154 * cmap[1].astype(np.float32) + 0.0721 * cmap[2]
    np.testing.assert_allclose(m.data, lum[idx], rtol=1e-6)
    assert m.metadata["colour"] == "palette-luminance"


@pytest.mark.parametrize(
    ("dtype", "how"),
    [(np.uint8, "255 - value"), (np.uint16, "65535 - value"), (np.bool_, "1 - value"), (np.float32, "-value")],
)
def test_miniswhite_tiff_is_inverted(tmp_path: Path, dtype: type, how: str) -> None:
    import tifffile

    data = (RNG_IMAGE > 2000) if dtype is np.bool_ else RNG_IMAGE.astype(dtype) // (20 if dtype is np.uint8 else 1)
    p = tmp_path / "miniswhite.tif"
    tifffile.imwrite(p, data, photometric="miniswhite")
    m = read_one(p)
    if dtype is np.bool_:
        want = 1 - data.astype(np.float32)
    elif dtype is np.float32:
        want = -data
    else:
        want = np.iinfo(dtype).max - data.astype(np.float32)
    np.testing.assert_array_equal(m.data, want)
    assert m.metadata["photometric"] == "miniswhite" and m.metadata["inverted"] == how


def test_tiff_colour_spaces_that_are_not_intensity_are_refused(tmp_path: Path) -> None:
    import tifffile

    p = tmp_path / "cmyk.tif"
    tifffile.imwrite(p, np.stack([RNG_IMAGE // 16] * 4, axis=-1).astype(np.uint8), photometric="separated")
    refused(p, "CMYK")


def affine_expected(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    """(x - lo) / (hi - lo) * 1000 in extended precision: Python integers or long double."""
    if x.dtype.kind in "iub":
        lo_i, span = int(lo), int(hi) - int(lo)
        return np.array([(int(v) - lo_i) * 1000 / span for v in x.ravel()]).reshape(x.shape)
    xl = x.astype(np.longdouble)
    lo_l, hi_l = np.longdouble(lo), np.longdouble(hi)
    return ((xl - lo_l) / (hi_l - lo_l) * 1000).astype(np.float64)


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("f32_1e38.npy", lambda u: (1e37 + u * 3e38).astype(np.float32)),
        ("f32_1e30.npy", lambda u: (-1e30 + u * 2e30).astype(np.float32)),
        ("f64_1e300.npy", lambda u: u * 1e300),
        ("f64_beyond_f32.npy", lambda u: 1e39 + u * 1e40),
        ("f64_pm1.7e308.npy", lambda u: np.where(u > 0.5, 1.7e308, -1.7e308) * u),
        ("f64_offset_1e9.npy", lambda u: 1e9 + np.round(u)),
        ("f32_offset_1e7.npy", lambda u: (1e7 + np.round(u)).astype(np.float32)),
        ("f64_1e-30.npy", lambda u: 1e-30 * u),
        ("f64_subnormal.npy", lambda u: 5e-324 * np.round(u * 3)),
        ("i64_near_max.npy", lambda u: np.int64(2**63 - 3) + np.round(u * 2).astype(np.int64)),
        ("i64_min_to_max.npy", lambda u: np.where(u > 0.5, np.int64(2**63 - 1), np.int64(-(2**63)))),
        ("u64_max.npy", lambda u: np.uint64(2**64 - 4) + np.round(u * 3).astype(np.uint64)),
    ],
)
def test_intensity_beyond_float32_is_mapped_affinely(tmp_path: Path, name: str, values: Any) -> None:
    """Huge, tiny or offset ranges neither overflow, vanish nor lose their contrast in float32."""
    u = np.random.default_rng(3).random((20, 24))
    x = values(u)
    p = tmp_path / name
    np.save(p, x)
    m = read_one(p)
    rescaled = m.metadata["intensity_rescaled"]
    assert rescaled["to"] == [0.0, 1000.0]
    lo, hi = x.min(), x.max()
    assert rescaled["from"] == [lo.item(), hi.item()]
    np.testing.assert_allclose(m.data, affine_expected(x, lo, hi), atol=1e-3)
    assert m.data.min() == 0.0 and m.data.max() == 1000.0
    assert len(np.unique(m.data)) == len(np.unique(x)), "distinct input values were merged"
    assert any("intensity mapped affinely" in w for w in m.metadata["warnings"])


def test_ordinary_ranges_are_not_rescaled(tmp_path: Path) -> None:
    for name, x in [
        ("u16.npy", RNG_IMAGE),
        ("u32.npy", RNG_IMAGE.astype(np.uint32) * 1000),
        ("f64.npy", RNG_IMAGE * 1e-3),
        ("counts.npy", 30000.0 + RNG_IMAGE),
    ]:
        np.save(tmp_path / name, x)
        m = read_one(tmp_path / name)
        assert "intensity_rescaled" not in m.metadata, name
        np.testing.assert_array_equal(m.data, x.astype(np.float32))


@pytest.mark.parametrize(
    ("name", "x", "phrase"),
    [
        ("zeros.npy", np.zeros((20, 24), np.float32), "every pixel is 0"),
        ("sevens.npy", np.full((20, 24), 7, np.uint16), "every pixel is 7"),
        ("saturated.npy", np.full((20, 24), 1e300), "every pixel is 1e+300"),
        ("nan_and_one.npy", np.where(RNG_IMAGE > 2000, np.nan, 1.0), "every finite pixel is 1"),
    ],
)
def test_constant_image_is_refused(tmp_path: Path, name: str, x: np.ndarray, phrase: str) -> None:
    np.save(tmp_path / name, x)
    text = refused(tmp_path / name, "has no contrast")
    assert phrase in text


def test_reader_warnings_are_metadata_not_python_warnings(tmp_path: Path) -> None:
    x = RNG_IMAGE.astype(np.float64) * 1e300
    x[0, :2] = [np.nan, -np.inf]
    p = tmp_path / "noisy.npy"
    np.save(p, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = read_one(p)
    assert m.metadata["nonfinite_pixels_filled"] == 2
    assert len(m.metadata["warnings"]) == 2
    assert "2 NaN/inf pixels replaced by the median" in m.metadata["warnings"][1]
    assert m.data[0, 0] == m.data[0, 1] == np.float32(np.median(m.data[~np.isnan(x) & np.isfinite(x)]))


# ---------------------------------------------------------------------------------------------
# defect 3: .emi names with glob characters, companions with long indices and any case


@pytest.mark.parametrize("stem", ["scan[1]", "a*b", "what?", "[x]", "x]y[z"])
def test_emi_name_with_glob_characters(tmp_path: Path, stem: str) -> None:
    write_tia_emi(tmp_path / f"{stem}.emi", kv=200.0)
    write_ser(tmp_path / f"{stem}_1.ser", RNG_IMAGE.astype(np.float32), 5e-11)
    write_ser(tmp_path / "decoy_1.ser", RNG_IMAGE[::-1].astype(np.float32), 5e-11)  # what a glob might hit
    m = read_one(tmp_path / f"{stem}.emi", pixel_size_nm=None)
    np.testing.assert_array_equal(m.data, RNG_IMAGE.astype(np.float32))
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["instrument"]["beam_energy_keV"] == pytest.approx(200.0)
    assert [p.name for p in list_micrographs(tmp_path)] == sorted(["decoy_1.ser", f"{stem}.emi"])


def test_emi_companions_with_long_indices_and_upper_case(tmp_path: Path) -> None:
    write_tia_emi(tmp_path / "Scan.EMI", kv=300.0, blocks=12)
    frames = {"Scan_1.SER": 1.0, "Scan_002.ser": 2.0, "Scan_10.ser": 10.0, "Scan_11.Ser": 11.0}
    for name, k in frames.items():
        write_ser(tmp_path / name, RNG_IMAGE.astype(np.float32) * k, 5e-11)
    out = check_outcome(tmp_path / "Scan.EMI")
    assert not isinstance(out, HrtemflowError), out
    assert len(out) == 4
    for m, (index, k) in zip(out, [(1, 1.0), (2, 2.0), (10, 10.0), (11, 11.0)]):
        np.testing.assert_array_equal(m.data, RNG_IMAGE.astype(np.float32) * k)
        # block n of the .emi holds 300 + (n - 1) * 0.1 kV: each .ser has its own block's metadata
        assert m.metadata["instrument"]["beam_energy_keV"] == pytest.approx(300.0 + (index - 1) * 0.1)
    assert [p.name for p in list_micrographs(tmp_path)] == ["Scan.EMI"]


def test_emi_mode_still_decides_the_units(tmp_path: Path) -> None:
    """rsciio takes the units from the .emi's first block: a diffraction pattern stays reciprocal."""
    write_tia_emi(tmp_path / "dp.emi", mode="TEM Diffraction")
    write_ser(tmp_path / "dp_12.ser", RNG_IMAGE.astype(np.float32), 5e-11)
    refused(tmp_path / "dp.emi", "reciprocal space", pixel_size_nm=None)


def test_emi_problems_name_the_emi_and_its_ser(tmp_path: Path) -> None:
    write_tia_emi(tmp_path / "cut.emi")
    write_ser(tmp_path / "cut_3.ser", RNG_IMAGE.astype(np.float32), 5e-11)
    blob = (tmp_path / "cut_3.ser").read_bytes()
    (tmp_path / "cut_3.ser").write_bytes(blob[: len(blob) // 2])
    text = refused(tmp_path / "cut.emi", "cut_3.ser")
    assert "truncated" in text
    (tmp_path / "cut_3.ser").write_bytes(blob)
    (tmp_path / "cut.emi").write_bytes(b"\x00" * 100)
    refused(tmp_path / "cut.emi", "no <ObjectInfo> metadata block")


def test_list_micrographs_leaves_out_exactly_the_companions(tmp_path: Path) -> None:
    names = [
        "run.emi",
        "run_1.ser",
        "run_10.ser",
        "run_0007.SER",
        "RUN_2.ser",  # case-insensitive: still run.emi's
        "run_x.ser",  # not an index: listed
        "run_1_1.ser",  # belongs to a run_1.emi, which is absent: listed
        "run.1.ser",
        "lone_1.ser",
        "sq[1].emi",
        "sq[1]_12.ser",
        "sq1_1.ser",  # what the glob sq[1]_*.ser would have matched: listed
        "UP.EMI",
        "UP_3.SER",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    got = [p.name for p in list_micrographs(tmp_path)]
    assert got == sorted(
        ["run.emi", "run_x.ser", "run_1_1.ser", "run.1.ser", "lone_1.ser", "sq[1].emi", "sq1_1.ser", "UP.EMI"]
    )


# ---------------------------------------------------------------------------------------------
# defect 4: channel-count errors name the file; long paths keep messages to one short line


@pytest.mark.parametrize("channels", [5, 6, 8])
def test_colour_channel_errors_name_the_file(tmp_path: Path, channels: int) -> None:
    import tifffile

    x = np.stack([RNG_IMAGE + i for i in range(channels)], axis=-1)
    p = tmp_path / f"multi{channels}.tif"
    tifffile.imwrite(p, x, photometric="minisblack", planarconfig="contig")
    refused(p, f"{channels} channels")
    p = tmp_path / f"multi{channels}.npy"
    np.save(p, x)
    refused(p, f"{channels} channels")


def test_two_channel_npy_is_grey_and_alpha(tmp_path: Path) -> None:
    p = tmp_path / "grey_alpha.npy"
    np.save(p, np.stack([RNG_IMAGE, np.full_like(RNG_IMAGE, 255)], axis=-1))
    m = read_one(p)
    np.testing.assert_array_equal(m.data, RNG_IMAGE)
    assert m.metadata["colour"] == "grey"


def test_messages_stay_one_short_line_for_long_paths(tmp_path: Path) -> None:
    folder = tmp_path
    for i in range(6):
        folder = folder / (f"level{i}_" + "d" * 200)
    folder.mkdir(parents=True)
    p = folder / ("n" * 200 + ".npy")
    np.save(p, np.zeros((20, 24)))
    assert len(str(p)) > MESSAGE_LIMIT
    text = refused(p, "no contrast")
    assert text.startswith(".../")
    p.write_bytes(b"garbage\nwith\rline\x85breaks")
    refused(p, "cannot read")


# ---------------------------------------------------------------------------------------------
# sizes: NPY shapes whose product wraps int64, HDF5 datasets that were never written


def test_npy_shape_whose_product_wraps_int64_is_refused(tmp_path: Path) -> None:
    """(2**63 - 1)**2 is 1 modulo 2**64: a product in int64 would call this a single 64 x 64 image."""
    p = tmp_path / "wrap.npy"
    with open(p, "wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": (2**63 - 1, 2**63 - 1, 64, 64)}
        np.lib.format.write_array_header_2_0(fh, header)
        fh.write(np.ones((64, 64), np.float32).tobytes())
    refused(p, "over the limit")


@pytest.mark.parametrize("version", [2, 3])
def test_npy_header_length_is_checked_before_numpy_reads_it(tmp_path: Path, version: int) -> None:
    """numpy reads the declared header length (here 1.7 GB) before its own max_header_size check."""
    p = tmp_path / "header.npy"
    p.write_bytes(b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", 0x66000000) + b"{'descr': '<f4'")
    tracemalloc.start()
    try:
        refused(p, "header claims 1711276032 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize("shape", [(65536, 65536, 65536), (2**32 - 1, 2**32 - 1)])
def test_dm_absurd_declared_shape_is_refused_at_once(tmp_path: Path, shape: tuple[int, ...]) -> None:
    """rsciio's lazy pass with chunks="auto" spent minutes and GiBs on a 65536^3 graph before our size check."""
    p = tmp_path / "absurd.dm4"
    write_dm(p, RNG_IMAGE.astype(np.float32), 0.05, "nm", version=4, declared_shape=shape)
    refused(p, "over the limit")


@pytest.mark.parametrize("what", ["data", "metadata"])
def test_emd_dataset_never_written_is_refused_without_reading_it(tmp_path: Path, what: str) -> None:
    import h5py

    p = tmp_path / f"unwritten_{what}.emd"
    write_velox(p, RNG_IMAGE.astype(np.float32), 5e-11)
    with h5py.File(p, "a") as f:
        g = f["Data/Image/0123456789abcdef"]
        if what == "data":  # within the size limits: reading it would allocate 1 GiB of fill value
            del g["Data"]
            g.create_dataset("Data", shape=(16384, 16384, 1), dtype="f4", chunks=(256, 256, 1))
        else:
            del g["Metadata"]
            g.create_dataset("Metadata", shape=(3 * 2**30, 1), dtype="u1", chunks=(2**20, 1))
    tracemalloc.start()
    try:
        refused(p, "stores only 0 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


# ---------------------------------------------------------------------------------------------
# properties (hypothesis)


@dataclass
class _Valid:
    """Valid files of every format, written once per process."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hrtemflow-valid-")))
    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def files(self, fmt: str) -> dict[str, bytes]:
        """{file name: bytes}; the first is the one to read."""
        if fmt not in self.blobs:
            sub = self.folder / fmt
            sub.mkdir()
            main = write_valid(fmt, sub)
            others = sorted(p for p in sub.iterdir() if p != main)
            self.blobs[fmt] = {p.name: p.read_bytes() for p in [main, *others]}
        return self.blobs[fmt]


VALID = _Valid()


def _materialise(files: dict[str, bytes], folder: Path) -> Path:
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder / next(iter(files))


@PROPERTY
@given(fmt=st.sampled_from(FORMATS), cut=st.floats(0.0, 1.0, exclude_max=True), companion=st.booleans())
def truncated_files_property(fmt: str, cut: float, companion: bool) -> None:
    files = dict(VALID.files(fmt))
    names = list(files)
    target = names[1] if companion and len(names) > 1 else names[0]
    files[target] = files[target][: int(len(files[target]) * cut)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _materialise(files, Path(tmp))
        got = check_outcome(path)
        if not isinstance(got, HrtemflowError):  # only bytes that hold nothing were cut: the same image
            assert len(got) == 1
            np.testing.assert_array_equal(got[0].data, RNG_IMAGE.astype(np.float32))


MAGIC = {
    ".dm3": [struct.pack(">l", 3)],
    ".dm4": [struct.pack(">l", 4)],
    ".emd": [b"\x89HDF\r\n\x1a\n"],
    ".ser": [struct.pack("<HHH", 0x4949, 0x0197, 0x0210), struct.pack("<HHH", 0x4949, 0x0197, 0x0220)],
    ".emi": [b"\x00" * 16 + b"<ObjectInfo>"],
    ".mrc": [b"\x00" * 208 + b"MAP DD\x00\x00"],
    ".mrcs": [b"\x00" * 208 + b"MAP \x11\x11\x00\x00"],
    ".tif": [b"II*\x00", b"MM\x00*"],
    ".tiff": [b"II+\x00\x08\x00\x00\x00"],
    ".png": [b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"],
    ".npy": [b"\x93NUMPY\x01\x00", b"\x93NUMPY\x02\x00", b"\x93NUMPY\x03\x00"],
}


@PROPERTY
@given(
    ext=st.sampled_from(SUPPORTED_EXTENSIONS + (".TIF", ".EMI")),
    data=st.data(),
    body=st.binary(min_size=1, max_size=3000),
)
def random_bytes_property(ext: str, data: st.DataObject, body: bytes) -> None:
    magic = MAGIC.get(ext.lower(), [b""])
    prefix = data.draw(st.sampled_from([b"", *magic]), label="prefix")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"random{ext}"
        if ext.lower() == ".mrc" and prefix:  # a whole random header around the map id
            body = (body * (1024 // len(body) + 1))[:1024]
            blob = body[:208] + prefix[208:] + body[216:]
        else:
            blob = prefix + body
        path.write_bytes(blob)
        if ext.lower() == ".emi" and data.draw(st.booleans(), label="with a .ser"):
            write_ser(Path(tmp) / f"random_{data.draw(st.integers(1, 30))}.ser", RNG_IMAGE.astype(np.float32), 5e-11)
        check_outcome(path)


I32 = st.one_of(
    st.sampled_from([0, 1, -1, 15, 16, 17, 20, 24, 16384, 16385, 40000, 2**16, 2**24, 2**31 - 1, -(2**31)]),
    st.integers(-(2**31), 2**31 - 1),
)
U32 = st.one_of(
    st.sampled_from([0, 1, 16, 20, 24, 16384, 16385, 40000, 2**16, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
HUGE = st.one_of(U32, st.sampled_from([2**62, 2**63 - 1, 2**64 + 1]), st.integers(0, 2**63))


def _absurd_mrc(d: st.DataObject, folder: Path) -> Path:
    p = write_mrc(folder / "absurd.mrc", RNG_IMAGE.astype(np.float32))
    names = d.draw(st.sets(st.sampled_from(["nx", "ny", "nz", "mode", "mz", "ispg", "nsymbt"]), min_size=1))
    patch_mrc(p, **{n: d.draw(I32, label=n) for n in sorted(names)})
    if d.draw(st.booleans(), label="scramble stamp"):
        blob = bytearray(p.read_bytes())
        blob[212:216] = d.draw(st.sampled_from([b"\x11\x11\x00\x00", b"\x00\x00\x00\x00", b"DA\x00\x00"]))
        p.write_bytes(bytes(blob))
    return p


def _absurd_npy(d: st.DataObject, folder: Path) -> Path:
    p = folder / "absurd.npy"
    shape = tuple(d.draw(st.lists(HUGE, min_size=1, max_size=4), label="shape"))
    descr = d.draw(st.sampled_from(["<f4", ">f8", "|u1", "<i8", "<c8", "|b1", "<f2", "<U4", "|V8", "<M8[s]"]))
    with open(p, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(RNG_IMAGE.tobytes()[: d.draw(st.integers(0, RNG_IMAGE.nbytes), label="data bytes")])
    return p


def _absurd_png(d: st.DataObject, folder: Path) -> Path:
    return write_png_ihdr(
        folder / "absurd.png",
        d.draw(U32, label="width"),
        d.draw(U32, label="height"),
        d.draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]), label="depth"),
        d.draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]), label="colour"),
    )


def _absurd_tiff(d: st.DataObject, folder: Path) -> Path:
    return write_tiff_raw(
        folder / "absurd.tif",
        d.draw(U32, label="width"),
        d.draw(U32, label="length"),
        bps=d.draw(st.sampled_from([1, 8, 16, 32, 64, 0, 3, 12, 65535]), label="bps"),
        spp=d.draw(st.sampled_from([1, 2, 3, 4, 5, 0, 65535]), label="spp"),
        photometric=d.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 32844, 65535]), label="photometric"),
        rowsperstrip=d.draw(st.one_of(st.none(), U32), label="rowsperstrip"),
        bytecount=d.draw(st.one_of(st.none(), U32), label="bytecount"),
        sampleformat=d.draw(st.sampled_from([1, 2, 3, 4, 6]), label="sampleformat"),
    )


def _absurd_ser(d: st.DataObject, folder: Path) -> Path:
    p = folder / "absurd_1.ser"
    write_ser(p, np.stack([RNG_IMAGE, RNG_IMAGE[::-1]]).astype(np.float32), 5e-11)
    blob = bytearray(p.read_bytes())
    offsets_at = struct.unpack("<I", blob[22:26])[0]
    first = struct.unpack("<I", blob[offsets_at : offsets_at + 4])[0]
    fields = {
        "total": (14, "<I", U32),
        "valid": (18, "<I", U32),
        "offsets_at": (22, "<I", U32),
        "ndim": (26, "<I", U32),
        "dim_size": (30, "<I", U32),
        "first_offset": (offsets_at, "<I", U32),
        "dtype": (first + 40, "<H", st.integers(0, 2**16 - 1)),
        "nx": (first + 42, "<I", U32),
        "ny": (first + 46, "<I", U32),
    }
    for name in sorted(d.draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))):
        at, fmt, strategy = fields[name]
        blob[at : at + struct.calcsize(fmt)] = struct.pack(fmt, d.draw(strategy, label=name))
    p.write_bytes(bytes(blob))
    return p


def _absurd_dm(d: st.DataObject, folder: Path) -> Path:
    p = folder / "absurd.dm4"
    shape = tuple(d.draw(st.lists(U32, min_size=1, max_size=3), label="declared shape"))
    write_dm(p, RNG_IMAGE.astype(np.float32), 0.05, "nm", version=4, declared_shape=shape)
    return p


def _absurd_emd(d: st.DataObject, folder: Path) -> Path:
    import h5py

    p = folder / "absurd.emd"
    write_velox(p, RNG_IMAGE.astype(np.float32), 5e-11)
    shape = tuple(d.draw(st.lists(st.integers(1, 2**20), min_size=1, max_size=3), label="dataset shape"))
    which = d.draw(st.sampled_from(["Data", "Metadata"]), label="dataset")
    with h5py.File(p, "a") as f:
        g = f["Data/Image/0123456789abcdef"]
        del g[which]
        g.create_dataset(which, shape=shape, dtype="f4" if which == "Data" else "u1", chunks=True)
    return p


ABSURD = {
    "mrc": _absurd_mrc,
    "npy": _absurd_npy,
    "png": _absurd_png,
    "tif": _absurd_tiff,
    "ser": _absurd_ser,
    "dm4": _absurd_dm,
    "emd": _absurd_emd,
}


@settings(PROPERTY, max_examples=max(1, int(60 * SCALE)))
@given(fmt=st.sampled_from(sorted(ABSURD)), d=st.data())
def absurd_headers_property(fmt: str, d: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check_outcome(ABSURD[fmt](d, Path(tmp)))


def run_capped(property_name: str, timeout: float = 240.0) -> None:
    """Run a property of this module in a fresh Python whose address space is capped at 2 GiB (where the
    platform has RLIMIT_AS: Linux; elsewhere the property runs without the cap)."""
    code = (
        "import sys\n"
        "try:\n"
        "    import resource\n"
        "    soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        f"    cap = {MEMORY_CAP} if hard == resource.RLIM_INFINITY else min({MEMORY_CAP}, hard)\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))\n"
        "except (ImportError, AttributeError, ValueError, OSError):\n"
        "    pass\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import test_readers_hostile as t\n"
        f"t.{property_name}()\n"
        "print('property held')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout
        )
    assert r.returncode == 0 and "property held" in r.stdout, f"{property_name} failed:\n{r.stdout}\n{r.stderr}"


def test_absurd_header_sizes_under_a_2gib_cap() -> None:
    """MRC nx/ny/nz/nsymbt/mode, NPY shapes, PNG IHDR, TIFF tags, SER sizes, DM and HDF5 dimensions."""
    run_capped("absurd_headers_property")


def test_truncated_and_random_files_under_a_2gib_cap() -> None:
    """Every format cut at any length (also an .emi's .ser), and random bytes under every extension."""
    run_capped("truncated_files_property")
    run_capped("random_bytes_property")


# odd dtypes and ranges: the pixels are what the file holds, or an affine map of it that says so

ODD_DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "uint32", "int32", "int64", "uint64"]
ODD_DTYPES += ["float16", "float32", "float64", "complex64"]
MRC_DTYPES = {"int8", "int16", "uint16", "float16", "float32", "complex64"}
TIFF_DTYPES = set(ODD_DTYPES) - {"complex64"}


def write_container(container: str, x: np.ndarray, folder: Path) -> Path:
    import tifffile

    if container == "npy":
        p = folder / "odd.npy"
        np.save(p, x)
    elif container == "tif":
        p = folder / "odd.tif"
        tifffile.imwrite(p, x, photometric="minisblack")
    else:
        p = write_mrc(folder / "odd.mrc", x)
    return p


def check_pixels(x: np.ndarray, got: list[Micrograph] | HrtemflowError, path: Path) -> None:
    """The reader's answer for an image `x` of any dtype: exact, an announced affine map, or a reasoned refusal."""
    if x.dtype.kind == "c":
        assert isinstance(got, HrtemflowError) and "complex" in str(got), got
        return
    finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
    if not finite.any():
        assert isinstance(got, HrtemflowError) and "no finite values" in str(got), got
        return
    values = x[finite]
    if values.min() == values.max():
        assert isinstance(got, HrtemflowError) and "has no contrast" in str(got), got
        return
    assert not isinstance(got, HrtemflowError), f"{path.name} refused: {got}"
    (m,) = got
    out, md = m.data, m.metadata
    assert out.shape == x.shape
    lo, hi = values.min(), values.max()
    work = np.float64 if x.dtype.kind in "biu" or x.dtype.itemsize <= 8 else np.longdouble
    magnitude = max(abs(work(lo)), abs(work(hi)))
    relative = float(work(hi) / magnitude - work(lo) / magnitude)
    if magnitude > 1e15 or relative * float(magnitude) < 1e-15 or relative < 2**-12:
        assert "intensity_rescaled" in md, f"range [{lo}, {hi}] kept: float32 cannot carry it"
    if "intensity_rescaled" in md:
        assert md["intensity_rescaled"]["from"] == [lo.item(), hi.item()]
        np.testing.assert_allclose(out[finite], affine_expected(values, lo, hi), atol=1e-2)
    else:
        np.testing.assert_array_equal(out[finite], values.astype(np.float32))
    if not finite.all():
        assert md["nonfinite_pixels_filled"] == int((~finite).sum())
        assert np.all(out[~finite] == np.float32(np.median(out[finite])))
    else:
        assert "nonfinite_pixels_filled" not in md
    order = np.argsort(values, kind="stable")  # the map is monotone: no pixel changes rank
    assert np.all(np.diff(out[finite][order].astype(np.float64)) >= 0)
    assert len(np.unique(out)) >= 2, "contrast lost: the image came out blank"


@PROPERTY
@given(d=st.data(), dtype=st.sampled_from(ODD_DTYPES), ny=st.integers(16, 20), nx=st.integers(16, 20))
def odd_dtypes_property(d: st.DataObject, dtype: str, ny: int, nx: int) -> None:
    containers = ["npy"] + (["tif"] if dtype in TIFF_DTYPES else []) + (["mrc"] if dtype in MRC_DTYPES else [])
    container = d.draw(st.sampled_from(containers), label="container")
    x = d.draw(hnp.arrays(np.dtype(dtype), (ny, nx)), label="image")
    with tempfile.TemporaryDirectory() as tmp:
        p = write_container(container, x, Path(tmp))
        check_pixels(x, check_outcome(p), p)


@st.composite
def extreme_ranges(draw: Any) -> np.ndarray:
    """offset + pattern * step: magnitudes up to the dtype's range, contrasts down to its resolution."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    top = 38 if dtype is np.float32 else 307
    offset_exp = draw(st.integers(-top, top))
    step_exp = draw(st.integers(-top - 7, offset_exp + 1))
    offset = draw(st.sampled_from([0.0, 1.0, -1.0, 3.7])) * 10.0**offset_exp
    step = 10.0**step_exp
    pattern = draw(hnp.arrays(np.int64, (16, 18), elements=st.integers(0, draw(st.integers(1, 255)))))
    with np.errstate(over="ignore", invalid="ignore"):
        x = (offset + pattern * step).astype(dtype)
    return x


@PROPERTY
@given(x=extreme_ranges(), container=st.sampled_from(["npy", "tif", "mrc"]))
def extreme_ranges_property(x: np.ndarray, container: str) -> None:
    if container == "mrc" and x.dtype != np.float32:
        container = "npy"
    with tempfile.TemporaryDirectory() as tmp:
        p = write_container(container, x, Path(tmp))
        check_pixels(x, check_outcome(p), p)


@PROPERTY
@given(
    idx=hnp.arrays(np.uint8, (16, 20)),
    cmap=hnp.arrays(np.uint16, (3, 256)),
    grey=st.booleans(),
)
def palette_property(idx: np.ndarray, cmap: np.ndarray, grey: bool) -> None:
    """A palette TIFF shows its colour map's grey value, or its colours' Rec. 709 luminance."""
    import tifffile

    if grey:
        cmap = np.repeat(cmap[:1], 3, axis=0)
        shown = cmap[0][idx]
    else:
        r, g, b = (c.astype(np.float32) for c in cmap)
        shown = (0.2125 * r + 0.7154 * g + 0.0721 * b)[idx]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "palette.tif"
        tifffile.imwrite(p, idx, photometric="palette", colormap=cmap)
        got = check_outcome(p)
        check_pixels(shown, got, p)
    if not isinstance(got, HrtemflowError):
        assert got[0].metadata["photometric"] == "palette"


@PROPERTY
@given(d=st.data(), dtype=st.sampled_from(["bool", "uint8", "uint16", "int16", "float32"]))
def miniswhite_property(d: st.DataObject, dtype: str) -> None:
    """A MinIsWhite TIFF shows max - value (1 - value, -1 - value, -value), in the file's dtype."""
    import tifffile

    x = d.draw(hnp.arrays(np.dtype(dtype), (16, 20)), label="image")
    if x.dtype.kind == "b":
        shown = ~x
    elif x.dtype.kind == "u":
        shown = np.iinfo(x.dtype).max - x
    elif x.dtype.kind == "i":
        shown = ~x
    else:
        shown = -x
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "miniswhite.tif"
        tifffile.imwrite(p, x, photometric="miniswhite")
        got = check_outcome(p)
        check_pixels(shown, got, p)
    if not isinstance(got, HrtemflowError):
        assert got[0].metadata["photometric"] == "miniswhite" and "inverted" in got[0].metadata


def test_odd_dtypes() -> None:
    """bool, int8 ... uint64, float16, float64 with inf/NaN, complex: in NPY, TIFF and MRC."""
    odd_dtypes_property()


def test_huge_tiny_and_offset_ranges() -> None:
    """1e38, 1e-30, 1e9 + a contrast of 1 ...: never inf/NaN, never blank, the contrast kept."""
    extreme_ranges_property()


def test_palette_images() -> None:
    palette_property()


def test_miniswhite_images() -> None:
    miniswhite_property()


# ---------------------------------------------------------------------------------------------
# the corpus: tests/data/hostile/readers


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    refused: str | None = None  # a phrase of the refusal; None: read
    metadata: dict[str, Any] = field(default_factory=dict)  # expected values; ... for "present"
    frames: int = 1
    warning: str | None = None  # a phrase of one of metadata["warnings"]


def _corpus_cases() -> list[Case]:
    R = Case
    return [
        R("mrc_nsymbt_2gib.mrc", "MRC whose extended header (nsymbt) claims 2 GiB", "extended header of 2147483647"),
        R("mrc_40000x40000.mrc", "MRC header declaring 40000 x 40000 pixels", "40000 x 40000 pixels"),
        R("mrc_mode_101.mrc", "MRC in mode 101 (4-bit packed), which mrcfile cannot read", "mode 101"),
        R("mrc_volume_stack_mz0.mrc", "MRC volume stack (ispg 401) with mz = 0", "mz = 0"),
        R("mrc_no_map_id.mrc", "MRC without the 'MAP ' identifier", "no 'MAP' identifier"),
        R("mrc_big_endian.mrc", "valid big-endian MRC", metadata={"mrc_byte_order": "big-endian"}),
        R(
            "mrc_bad_machine_stamp.mrc",
            "MRC with a zeroed machine stamp (byte order from the mode)",
            warning="unrecognised MRC machine stamp",
        ),
        R("npy_40000x40000.npy", "NPY header declaring 40000 x 40000 float32, no data", "over the limit"),
        R(
            "npy_shape_wraps_int64.npy",
            "NPY shape (2**63-1, 2**63-1, 64, 64): its int64 product is 1",
            "over the limit",
        ),
        R("npy_complex64.npy", "complex exit wave", "complex-valued"),
        R("npy_object.npy", "pickled object array", "pickle"),
        R("npy_constant.npy", "a blank frame (all 7)", "has no contrast"),
        R("npy_all_nan.npy", "only NaN", "no finite values"),
        R("npy_five_channels.npy", "(y, x, 5) array", "5 channels"),
        R("npy_float64_1e300.npy", "float64 up to 1e300", metadata={"intensity_rescaled": ...}),
        R("npy_float32_1e38.npy", "float32 near its maximum", metadata={"intensity_rescaled": ...}),
        R("npy_offset_1e9_contrast_1.npy", "1e9 + 0 or 1 (float64)", metadata={"intensity_rescaled": ...}),
        R("npy_tiny_1e-30.npy", "values around 1e-30", metadata={"intensity_rescaled": ...}),
        R("npy_int64_2e62.npy", "int64 around 2**62, contrast 2", metadata={"intensity_rescaled": ...}),
        R("npy_nan_pixels.npy", "three NaN pixels", metadata={"nonfinite_pixels_filled": 3}, warning="NaN/inf"),
        R("tif_palette_inverted_grey.tif", "palette TIFF, inverted grey map", metadata={"colour": "palette-grey"}),
        R("tif_palette_colour.tif", "palette TIFF, colour map", metadata={"colour": "palette-luminance"}),
        R("tif_miniswhite_uint8.tif", "MinIsWhite 8-bit TIFF", metadata={"inverted": "255 - value"}),
        R("tif_miniswhite_bilevel.tif", "MinIsWhite 1-bit TIFF", metadata={"inverted": "1 - value"}),
        R("tif_cmyk.tif", "CMYK (separated) TIFF", "CMYK"),
        R("tif_five_channels.tif", "TIFF with 5 samples per pixel", "5 channels"),
        R("tif_40000x40000.tif", "TIFF tags declaring 40000 x 40000 pixels", "40000 x 40000 pixels"),
        R("tif_float32_1e38.tif", "float32 TIFF near its maximum", metadata={"intensity_rescaled": ...}),
        R("tif_truncated.tif", "TIFF cut in half", "truncated"),
        R("png_40000x40000.png", "PNG IHDR declaring 40000 x 40000 pixels", "40000 x 40000 pixels"),
        R("png_truncated.png", "PNG cut in half", "cannot read"),
        R("dm3_40000x40000.dm3", "DM3 dimensions 40000 x 40000 around 16 x 16 data", "40000 x 40000 pixels"),
        R("ser_40000x40000_1.ser", "TIA .ser element header saying 40000 x 40000", "40000 x 40000 pixels"),
        R("emd_never_written.emd", "Velox EMD whose image dataset was never written", "stores only 0 bytes"),
        R("garbage.dm4", "random bytes", "cannot read"),
        R("scan[1].emi", "TIA .emi whose name holds glob characters", metadata={"instrument": ...}),
        R("scan[1]_1.ser", "its .ser, read on its own", metadata={"reader": "rsciio.tia"}),
        R("MULTI.EMI", "upper-case .emi with MULTI_1.SER and MULTI_10.ser", metadata={"instrument": ...}, frames=2),
        R("MULTI_1.SER", "upper-case .ser, read on its own", metadata={"reader": "rsciio.tia"}),
        R("MULTI_10.ser", "two-digit index .ser, read on its own", metadata={"reader": "rsciio.tia"}),
    ]


CORPUS_CASES = _corpus_cases()


def build_corpus(folder: Path) -> None:
    """Write every corpus file (each < 20 KB) and README.md into `folder`."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    u = rng.random((20, 24))
    img = RNG_IMAGE.astype(np.float32)
    f = folder

    write_mrc(f / "mrc_nsymbt_2gib.mrc", img)
    patch_mrc(f / "mrc_nsymbt_2gib.mrc", nsymbt=2**31 - 1)
    write_mrc(f / "mrc_40000x40000.mrc", img)
    patch_mrc(f / "mrc_40000x40000.mrc", nx=40000, ny=40000)
    write_mrc(f / "mrc_mode_101.mrc", img)
    patch_mrc(f / "mrc_mode_101.mrc", mode=101)
    write_mrc(f / "mrc_volume_stack_mz0.mrc", img)
    patch_mrc(f / "mrc_volume_stack_mz0.mrc", ispg=401, mz=0)
    blob = bytearray(write_mrc(f / "mrc_no_map_id.mrc", img).read_bytes())
    blob[208:212] = b"\x00\x00\x00\x00"
    (f / "mrc_no_map_id.mrc").write_bytes(bytes(blob))
    write_mrc(f / "mrc_big_endian.mrc", img.astype(">f4"))
    blob = bytearray((f / "mrc_big_endian.mrc").read_bytes())
    blob[212:216] = b"\x00\x00\x00\x00"
    (f / "mrc_bad_machine_stamp.mrc").write_bytes(bytes(blob))

    with open(f / "npy_40000x40000.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (40000, 40000)})
    with open(f / "npy_shape_wraps_int64.npy", "wb") as fh:
        shape = (2**63 - 1, 2**63 - 1, 64, 64)
        np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
        fh.write(np.ones((32, 64), np.float32).tobytes())
    np.save(f / "npy_complex64.npy", (img * np.exp(1j * u)).astype(np.complex64))
    np.save(f / "npy_object.npy", np.array([[1, 2], [3, 4]], dtype=object), allow_pickle=True)
    np.save(f / "npy_constant.npy", np.full((20, 24), 7.0, np.float32))
    np.save(f / "npy_all_nan.npy", np.full((20, 24), np.nan, np.float32))
    np.save(f / "npy_five_channels.npy", np.stack([RNG_IMAGE + i for i in range(5)], axis=-1))
    np.save(f / "npy_float64_1e300.npy", u * 1e300)
    np.save(f / "npy_float32_1e38.npy", (1e37 + u * 3e38).astype(np.float32))
    np.save(f / "npy_offset_1e9_contrast_1.npy", 1e9 + np.round(u))
    np.save(f / "npy_tiny_1e-30.npy", u * 1e-30)
    np.save(f / "npy_int64_2e62.npy", np.int64(2**62) + np.round(u * 2).astype(np.int64))
    nan = img.copy()
    nan[0, :3] = np.nan
    np.save(f / "npy_nan_pixels.npy", nan)

    idx = (RNG_IMAGE % 256).astype(np.uint8)
    tifffile.imwrite(
        f / "tif_palette_inverted_grey.tif",
        idx,
        photometric="palette",
        colormap=np.tile((255 - np.arange(256, dtype=np.uint16)) * 257, (3, 1)),
    )
    cmap = np.stack([np.arange(256) * 257, (255 - np.arange(256)) * 100, np.full(256, 5000)]).astype(np.uint16)
    tifffile.imwrite(f / "tif_palette_colour.tif", idx, photometric="palette", colormap=cmap)
    tifffile.imwrite(f / "tif_miniswhite_uint8.tif", idx, photometric="miniswhite")
    tifffile.imwrite(f / "tif_miniswhite_bilevel.tif", RNG_IMAGE > 2000, photometric="miniswhite")
    tifffile.imwrite(f / "tif_cmyk.tif", np.stack([idx] * 4, axis=-1), photometric="separated")
    tifffile.imwrite(
        f / "tif_five_channels.tif",
        np.stack([idx + i for i in range(5)], axis=-1),
        photometric="minisblack",
        planarconfig="contig",
    )
    write_tiff_raw(f / "tif_40000x40000.tif", 40000, 40000)
    tifffile.imwrite(f / "tif_float32_1e38.tif", (1e37 + u * 3e38).astype(np.float32))
    tifffile.imwrite(f / "tif_truncated.tif", RNG_IMAGE)
    blob = (f / "tif_truncated.tif").read_bytes()
    (f / "tif_truncated.tif").write_bytes(blob[: len(blob) // 2])

    write_png_ihdr(f / "png_40000x40000.png", 40000, 40000)
    write_png(f / "png_truncated.png", RNG_IMAGE)
    blob = (f / "png_truncated.png").read_bytes()
    (f / "png_truncated.png").write_bytes(blob[: len(blob) // 2])

    write_dm(f / "dm3_40000x40000.dm3", np.zeros((16, 16), np.float32), 0.05, "nm", declared_shape=(40000, 40000))
    write_ser(f / "ser_40000x40000_1.ser", np.zeros((16, 16), np.float32), 5e-11)
    blob = bytearray((f / "ser_40000x40000_1.ser").read_bytes())
    first = struct.unpack("<I", blob[struct.unpack("<I", blob[22:26])[0] :][:4])[0]
    blob[first + 42 : first + 50] = struct.pack("<II", 40000, 40000)
    (f / "ser_40000x40000_1.ser").write_bytes(bytes(blob[: first + 50]))

    import h5py

    write_velox(f / "emd_never_written.emd", img, 5e-11)
    with h5py.File(f / "emd_never_written.emd", "a") as h:
        g = h["Data/Image/0123456789abcdef"]
        del g["Data"]
        g.create_dataset("Data", shape=(8192, 8192, 1), dtype="f4", chunks=(256, 256, 1))
    (f / "garbage.dm4").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())

    write_tia_emi(f / "scan[1].emi", kv=300.0)
    write_ser(f / "scan[1]_1.ser", img, 5e-11)
    write_tia_emi(f / "MULTI.EMI", kv=200.0, blocks=10)
    write_ser(f / "MULTI_1.SER", img, 5e-11)
    write_ser(f / "MULTI_10.ser", img[::-1].copy(), 5e-11)

    (f / "README.md").write_text(corpus_readme(), encoding="utf-8")


def corpus_readme() -> str:
    lines = [
        "# Hostile micrograph files",
        "",
        "Each file is run through `hrtemflow.apply.readers.read_micrograph` (with `pixel_size_nm=0.05`,",
        "`frames='all'`) by `tests/test_readers_hostile.py::test_hostile_corpus`: a refusal must be an",
        "`HrtemflowError` of one line (at most 1000 characters) naming the file and holding the phrase below;",
        "a read must give finite float32 images with the metadata below. Every file is under 20 KB.",
        "Rewrite them (and this file) with `python tests/test_readers_hostile.py --write-corpus`.",
        "",
        "| file | what it is | expected outcome |",
        "| --- | --- | --- |",
    ]
    for c in CORPUS_CASES:
        if c.refused is not None:
            outcome = f"refused: “{c.refused}”"
        else:
            keys = ", ".join(f"{k}" if v is ... else f"{k} = {v}" for k, v in c.metadata.items())
            outcome = f"read ({c.frames} image{'s' if c.frames > 1 else ''})" + (f": metadata {keys}" if keys else "")
            if c.warning:
                outcome += f"; warning “{c.warning}”"
        lines.append(f"| `{c.name}` | {c.what} | {outcome} |")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", CORPUS_CASES, ids=[c.name for c in CORPUS_CASES])
def test_hostile_corpus(case: Case) -> None:
    path = CORPUS / case.name
    assert path.is_file(), f"{path} missing: run python tests/test_readers_hostile.py --write-corpus"
    if case.refused is not None:
        refused(path, case.refused)
        return
    got = check_outcome(path)
    assert not isinstance(got, HrtemflowError), f"{case.name} refused: {got}"
    assert len(got) == case.frames
    for m in got:
        for key, want in case.metadata.items():
            assert key in m.metadata, f"{case.name}: no {key} in {sorted(m.metadata)}"
            if want is not ...:
                assert m.metadata[key] == want, (key, m.metadata[key])
        if case.warning:
            assert any(case.warning in w for w in m.metadata.get("warnings", [])), m.metadata.get("warnings")


def test_hostile_corpus_is_small_and_documented() -> None:
    files = sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md")
    assert files == sorted(c.name for c in CORPUS_CASES), "a file without a table row, or a row without a file"
    for name in files:
        assert (CORPUS / name).stat().st_size < 20_000, name
    assert (CORPUS / "README.md").read_text(encoding="utf-8") == corpus_readme(), "README.md is out of date"


def test_hostile_corpus_folder_listing() -> None:
    listed = {p.name for p in list_micrographs(CORPUS)}
    assert {"scan[1].emi", "MULTI.EMI", "ser_40000x40000_1.ser"} <= listed
    assert not {"scan[1]_1.ser", "MULTI_1.SER", "MULTI_10.ser"} & listed


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-corpus"]:
        sys.exit("usage: python tests/test_readers_hostile.py --write-corpus")
    for old in CORPUS.glob("*"):
        old.unlink()
    build_corpus(CORPUS)
    print(f"wrote {len(CORPUS_CASES)} files and README.md to {CORPUS}")
