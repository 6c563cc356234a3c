"""Micrograph readers: real files in every format, written by the formats' own writers.

tifffile, mrcfile, rosettasciio (Berkeley EMD), Pillow and numpy write their formats; for the
formats no installed library can write (DigitalMicrograph DM3/DM4, TIA SER/EMI, Velox EMD) the
small writers below follow the published layouts that rosettasciio's readers implement, so the
files are read by the same code that reads the microscopes' files.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from hrtemflow.apply.readers import (
    SUPPORTED_EXTENSIONS,
    Micrograph,
    SizeLimits,
    list_micrographs,
    read_micrograph,
)
from hrtemflow.core.errors import HrtemflowError

REAL_MICROGRAPH = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "soot_hrtem.tif"
REAL_PIXEL_NM = 0.055496

NY, NX = 40, 56  # non-square, so a transposed read cannot pass


@pytest.fixture
def img() -> np.ndarray:
    """A deterministic non-symmetric test image (uint16 counts)."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 4000, size=(NY, NX), dtype=np.uint16)


@pytest.fixture
def stack(img: np.ndarray) -> np.ndarray:
    return np.stack([img, img[::-1], img // 2]).astype(np.float32)


def _one(path: Path, **kw: object) -> Micrograph:
    out = read_micrograph(path, **kw)
    assert len(out) == 1
    m = out[0]
    assert isinstance(m, Micrograph)
    assert m.data.dtype == np.float32 and m.data.ndim == 2
    assert m.source == str(path)
    assert m.frame is None
    json.dumps(m.metadata)  # metadata is JSON-serialisable
    return m


# ---------------------------------------------------------------------------------------------
# minimal writers for formats without a Python writer


def write_dm(
    path: Path,
    data: np.ndarray,
    scale: float,
    unit: str,
    version: int = 3,
    voltage_V: float | None = None,
    declared_shape: tuple[int, ...] | None = None,
) -> None:
    """A DigitalMicrograph DM3/DM4 tag file: header, root group, ImageList/ImageData tags.

    Layout (Gatan DM3/DM4, as read by rsciio.digitalmicrograph): big-endian tag structure,
    tag = type (20 group, 21 data), name length, name, [DM4: 8-byte size], then a group header
    (sorted, open, n tags) or '%%%%', info-array length, info array and the value (little endian).
    """
    be_len = ">q" if version == 4 else ">l"
    e = "<"

    def name_bytes(tag_type: int, name: str) -> bytes:
        b = name.encode("latin-1")
        return bytes([tag_type]) + struct.pack(">h", len(b)) + b

    def sized(body: bytes) -> bytes:
        return (struct.pack(">q", len(body)) if version == 4 else b"") + body

    def data_tag(name: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + struct.pack(be_len, len(info))
        body += b"".join(struct.pack(be_len, i) for i in info) + payload
        return name_bytes(21, name) + sized(body)

    def group(name: str, children: list[bytes]) -> bytes:
        body = bytes([0, 1]) + struct.pack(be_len, len(children)) + b"".join(children)
        return name_bytes(20, name) + sized(body)

    def f32(name: str, v: float) -> bytes:
        return data_tag(name, [6], struct.pack(e + "f", v))

    def f64(name: str, v: float) -> bytes:
        return data_tag(name, [7], struct.pack(e + "d", v))

    def i32(name: str, v: int) -> bytes:
        return data_tag(name, [3], struct.pack(e + "i", v))

    def u32(name: str, v: int) -> bytes:
        return data_tag(name, [5], struct.pack(e + "I", v))

    def text(name: str, s: str) -> bytes:  # strings are arrays of uint16 characters
        return data_tag(name, [20, 4, len(s)], struct.pack(e + f"{len(s)}H", *map(ord, s)))

    if data.dtype.names:  # RGBA: stored as 4-byte pixels, B G R A
        dm_type, el_type, n_el = 23, 5, data.size
        raw = np.empty(data.shape, [("B", "u1"), ("G", "u1"), ("R", "u1"), ("A", "u1")])
        for c in "BGRA":
            raw[c] = data[c]
        payload = raw.tobytes()
    else:
        dm_type, el_type = {np.float32: (2, 6), np.int16: (1, 2), np.uint16: (10, 4)}[data.dtype.type]
        n_el = data.size
        payload = data.astype(data.dtype.newbyteorder("<")).tobytes()
    dims = (declared_shape or data.shape)[::-1]  # DM lists X first
    calib_dims = [
        group(
            "",
            [
                f32("Origin", 0.0),
                f32("Scale", scale if i < 2 else 1.0),
                text("Units", unit if i < 2 else ""),
            ],
        )
        for i in range(len(dims))
    ]
    image_tags = []
    if voltage_V is not None:
        info = [f64("Voltage", voltage_V), text("Microscope", "Test TEM")]
        image_tags.append(group("Microscope Info", info))
    image = group(
        "",
        [
            group(
                "ImageData",
                [
                    group(
                        "Calibrations",
                        [
                            group("Brightness", [f32("Origin", 0.0), f32("Scale", 1.0), text("Units", "Counts")]),
                            group("Dimension", calib_dims),
                        ],
                    ),
                    data_tag("Data", [20, el_type, n_el], payload),
                    i32("DataType", dm_type),
                    group("Dimensions", [u32("", d) for d in dims]),
                    i32("PixelDepth", data.dtype.itemsize),
                ],
            ),
            group("ImageTags", image_tags),
            text("Name", "test image"),
        ],
    )
    root_children = [group("ImageList", [image])]
    root = bytes([0, 1]) + struct.pack(be_len, len(root_children)) + b"".join(root_children)
    body = root + b"\x00" * 8
    header = struct.pack(">l", version) + struct.pack(be_len, len(body)) + struct.pack(">l", 1)
    path.write_bytes(header + body)


def write_ser(path: Path, frames: np.ndarray, pixel_m: float) -> None:
    """A TIA .ser series of 2-D float32 images (series version 0x0210, 4-byte offsets).

    Header, one dimension record, the data/tag offset tables, then per element the image
    calibration, data type, sizes and the rows bottom-up, each followed by its time tag.
    """
    frames = np.asarray(frames, dtype="<f4")
    if frames.ndim == 2:
        frames = frames[None]
    n, ny, nx = frames.shape
    head = struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n)
    dim = struct.pack("<IddII", n, 0.0, 1.0, 0, 0) + struct.pack("<I", 0)
    offsets_at = len(head) + 8 + len(dim)
    first = offsets_at + 8 * n
    elem_size = 50 + ny * nx * 4
    tag_size = 8
    data_offsets = [first + i * (elem_size + tag_size) for i in range(n)]
    tag_offsets = [o + elem_size for o in data_offsets]
    out = bytearray(head + struct.pack("<II", offsets_at, 1) + dim)
    out += struct.pack(f"<{n}I", *data_offsets) + struct.pack(f"<{n}I", *tag_offsets)
    for frame in frames:
        out += struct.pack("<ddIddIHII", 0.0, pixel_m, 0, 0.0, pixel_m, 0, 7, nx, ny)
        out += frame[::-1].tobytes()
        out += struct.pack("<HHI", 0x4152, 0, 0)
    path.write_bytes(bytes(out))


def write_emi(path: Path, kv: float = 300.0) -> None:
    """A TIA .emi: binary wrapper around an <ObjectInfo> XML block (all that is read of it)."""
    xml = (
        "<ObjectInfo><ExperimentalDescription><Root>"
        f"<Data><Label>High tension</Label><Value>{kv}</Value><Unit>kV</Unit></Data>"
        "<Data><Label>Microscope</Label><Value>Test TEM</Value><Unit></Unit></Data>"
        "<Data><Label>Mode</Label><Value>TEM HM Imaging</Value><Unit></Unit></Data>"
        "</Root></ExperimentalDescription>"
        "<AcquireDate>Mon Jan 01 10:00:00 2024</AcquireDate>"
        "<AcquireInfo><CameraNamePath>BM-Ceta</CameraNamePath></AcquireInfo></ObjectInfo>"
    )
    path.write_bytes(b"\x00" * 64 + xml.encode() + b"\x00" * 16)


def write_velox(path: Path, frames: np.ndarray, pixel_m: float) -> None:
    """A Thermo Fisher Velox EMD: HDF5 with /Version and /Data/Image/<id>/{Data,Metadata}.

    Data is (y, x, frame); Metadata is the JSON metadata as a uint8 column per frame.
    """
    import h5py

    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    meta = {
        "BinaryResult": {
            "PixelSize": {"width": repr(pixel_m), "height": repr(pixel_m)},
            "PixelUnitX": "m",
            "PixelUnitY": "m",
            "Offset": {"x": "0", "y": "0"},
            "DetectorIndex": "0",
        },
        "Detectors": {"Detector-0": {"DetectorName": "BM-Ceta", "ExposureTime": "0.1"}},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1700000000"}},
        "Optics": {"AccelerationVoltage": "300000"},
        "Instrument": {"InstrumentClass": "Test TEM"},
        "Scan": {"FrameTime": "0.1"},
    }
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        version = json.dumps({"format": "Velox", "version": "11"}).encode()
        f.create_dataset("Version", data=np.array([version]))
        g = f.create_group("Data/Image/0123456789abcdef")
        g.create_dataset("Data", data=np.moveaxis(frames, 0, -1))
        g.create_dataset("Metadata", data=np.repeat(blob[:, None], frames.shape[0], axis=1))


def write_ncem_emd(path: Path, data: np.ndarray, scale_nm: float) -> None:
    """A Berkeley (NCEM) EMD written by rosettasciio's own writer."""
    from rsciio.emd import file_writer

    names = ["frame", "y", "x"][-data.ndim :]
    axes = [
        {
            "name": n,
            "size": s,
            "scale": scale_nm if n in "xy" else 1.0,
            "offset": 0.0,
            "units": "nm" if n in "xy" else None,
            "navigate": n == "frame",
        }
        for n, s in zip(names, data.shape)
    ]
    signal = {
        "data": data,
        "axes": axes,
        "original_metadata": {},
        "metadata": {"General": {"title": "hrtem"}, "Signal": {"signal_type": ""}},
    }
    file_writer(str(path), signal)


def write_tiff_header_only(path: Path, ny: int, nx: int) -> None:
    """A baseline TIFF whose IFD declares ny x nx 8-bit pixels but holds no pixel data."""
    entries = [
        (256, 4, 1, nx),
        (257, 4, 1, ny),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 128),
        (277, 3, 1, 1),
        (278, 4, 1, ny),
        (279, 4, 1, ny * nx),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)


# ---------------------------------------------------------------------------------------------
# TIFF


@pytest.mark.parametrize(
    ("unit", "px_per_unit"),
    [("nm", 20.0), ("micron", 2e4), ("\\u00B5m", 2e4), ("\\u00C5", 2.0), ("angstrom", 2.0), ("pm", 0.02)],
)
def test_tiff_imagej_calibration(tmp_path: Path, img: np.ndarray, unit: str, px_per_unit: float) -> None:
    import tifffile

    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, img, imagej=True, resolution=(px_per_unit, px_per_unit), metadata={"unit": unit})
    m = _one(p)
    np.testing.assert_array_equal(m.data, img.astype(np.float32))
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["calibration"] == "file"
    assert m.metadata["calibration_source_in_file"] == "imagej"
    assert m.metadata["original_dtype"] == "uint16"


@pytest.mark.parametrize(("resunit", "px_per_unit"), [("CENTIMETER", 2e8), ("INCH", 5.08e8)])
def test_tiff_resolution_tags(tmp_path: Path, img: np.ndarray, resunit: str, px_per_unit: float) -> None:
    import tifffile

    p = tmp_path / "plain.tiff"
    tifffile.imwrite(p, img, resolution=(px_per_unit, px_per_unit), resolutionunit=resunit)
    m = _one(p)
    np.testing.assert_array_equal(m.data, img)
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["calibration_source_in_file"] == "tiff-resolution-tags"


def test_tiff_ome(tmp_path: Path, img: np.ndarray) -> None:
    import tifffile

    p = tmp_path / "ome.tif"
    md = {
        "PhysicalSizeX": 0.05,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.05,
        "PhysicalSizeYUnit": "nm",
    }
    tifffile.imwrite(p, img, ome=True, metadata=md)
    m = _one(p)
    np.testing.assert_array_equal(m.data, img)
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["calibration_source_in_file"] == "ome"


def test_tiff_print_resolution_is_not_a_calibration(tmp_path: Path, img: np.ndarray) -> None:
    """72 dpi (what image editors write) would be 3.5 mm per pixel: refused as uncalibrated."""
    import tifffile

    p = tmp_path / "dpi.tif"
    tifffile.imwrite(p, img, resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(HrtemflowError, match=r"(?s)dpi.tif.*print resolution.*--pixel-size"):
        read_micrograph(p)


def test_tiff_without_calibration(tmp_path: Path, img: np.ndarray) -> None:
    import tifffile

    p = tmp_path / "bare.tif"
    tifffile.imwrite(p, img)
    want = r"(?s)bare.tif.*no pixel-size calibration.*--pixel-size NM.*nm per pixel"
    with pytest.raises(HrtemflowError, match=want):
        read_micrograph(p)
    m = _one(p, pixel_size_nm=0.1)
    assert m.pixel_size_A == pytest.approx(1.0)
    assert m.metadata["calibration"] == "override"


def test_override_beats_file_calibration(tmp_path: Path, img: np.ndarray) -> None:
    import tifffile

    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, img, imagej=True, resolution=(20, 20), metadata={"unit": "nm"})
    m = _one(p, pixel_size_nm=0.08)
    assert m.pixel_size_A == pytest.approx(0.8)
    assert m.metadata["calibration"] == "override"
    assert m.metadata["file_pixel_size_A"] == pytest.approx(0.5)


def test_tiff_rgb(tmp_path: Path, img: np.ndarray) -> None:
    import tifffile

    grey = (img // 16).astype(np.uint8)
    p = tmp_path / "grey_rgb.tif"
    tifffile.imwrite(p, np.stack([grey] * 3, axis=-1), photometric="rgb")
    m = _one(p, pixel_size_nm=0.05)
    np.testing.assert_array_equal(m.data, grey)
    assert m.metadata["colour"] == "rgb-identical-channels"

    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    p = tmp_path / "colour.tif"
    tifffile.imwrite(p, rgb, photometric="rgb")
    m = _one(p, pixel_size_nm=0.05)
    want = 0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]
    np.testing.assert_allclose(m.data, want, rtol=1e-5)
    assert m.metadata["colour"] == "rgb-luminance"


def test_tiff_lzw(tmp_path: Path, img: np.ndarray) -> None:
    """LZW (common from ImageJ and DM exports) needs imagecodecs: read, or say what to install."""
    import importlib.util

    from PIL import Image

    grey = (img // 16).astype(np.uint8)
    p = tmp_path / "lzw.tif"
    Image.fromarray(grey).save(p, compression="tiff_lzw")
    if importlib.util.find_spec("imagecodecs") is None:
        with pytest.raises(HrtemflowError, match=r"lzw.tif is compressed with LZW.*imagecodecs"):
            read_micrograph(p, pixel_size_nm=0.05)
    else:
        np.testing.assert_array_equal(_one(p, pixel_size_nm=0.05).data, grey)


def test_tiff_stack_refused_then_all(tmp_path: Path, stack: np.ndarray) -> None:
    import tifffile

    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, stack, imagej=True, resolution=(20, 20), metadata={"unit": "nm", "axes": "TYX"})
    with pytest.raises(HrtemflowError, match=r"(?s)stack.tif holds 3 frames.*--frames all"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    assert [m.frame for m in out] == [0, 1, 2]
    for m, want in zip(out, stack):
        np.testing.assert_array_equal(m.data, want)
        assert m.pixel_size_A == pytest.approx(0.5)
        assert m.metadata["n_frames"] == 3


# ---------------------------------------------------------------------------------------------
# DigitalMicrograph, EMD, TIA


@pytest.mark.parametrize("version", [3, 4])
def test_dm(tmp_path: Path, img: np.ndarray, version: int) -> None:
    p = tmp_path / f"image.dm{version}"
    data = img.astype(np.float32)
    write_dm(p, data, 0.05, "nm", version=version, voltage_V=300e3)
    m = _one(p)
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["original_unit"] == "nm"
    assert m.metadata["instrument"]["beam_energy_keV"] == pytest.approx(300.0)
    assert m.metadata["title"] == "test image"


def test_dm_int16_angstrom_and_stack(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    p = tmp_path / "a.dm3"
    write_dm(p, img.astype(np.int16), 0.5, "\u00c5")
    m = _one(p)
    np.testing.assert_array_equal(m.data, img.astype(np.int16))
    assert m.pixel_size_A == pytest.approx(0.5)

    p = tmp_path / "s.dm4"
    write_dm(p, stack, 0.05, "nm", version=4)
    with pytest.raises(HrtemflowError, match=r"holds 3 frames.*--frames all"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    assert len(out) == 3
    np.testing.assert_array_equal(out[1].data, stack[1])
    assert out[2].pixel_size_A == pytest.approx(0.5)


def test_dm_rgba(tmp_path: Path, img: np.ndarray) -> None:
    grey = (img // 16).astype(np.uint8)
    rgba = np.empty(grey.shape, [("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    rgba["R"], rgba["G"], rgba["B"], rgba["A"] = grey, grey, grey, 255
    p = tmp_path / "rgb.dm3"
    write_dm(p, rgba, 0.05, "nm")
    m = _one(p)
    np.testing.assert_array_equal(m.data, grey)
    assert m.metadata["colour"] == "rgb-identical-channels"


def test_dm_uncalibrated(tmp_path: Path, img: np.ndarray) -> None:
    """DM's default calibration is scale 1 with no unit: that is no calibration."""
    p = tmp_path / "raw.dm3"
    write_dm(p, img.astype(np.float32), 1.0, "")
    with pytest.raises(HrtemflowError, match=r"(?s)raw.dm3.*no pixel-size calibration.*--pixel-size"):
        read_micrograph(p)
    assert _one(p, pixel_size_nm=0.2).pixel_size_A == pytest.approx(2.0)


def test_emd_berkeley(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    p = tmp_path / "ncem.emd"
    data = img.astype(np.float32)
    write_ncem_emd(p, data, 0.05)
    m = _one(p)
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size_A == pytest.approx(0.5)

    p = tmp_path / "ncem_stack.emd"
    write_ncem_emd(p, stack, 0.05)
    with pytest.raises(HrtemflowError, match="holds 3 frames"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    np.testing.assert_array_equal(out[2].data, stack[2])


def test_emd_velox(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    p = tmp_path / "velox.emd"
    write_velox(p, img, 5e-11)
    m = _one(p)
    np.testing.assert_array_equal(m.data, img)
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["instrument"]["beam_energy_keV"] == pytest.approx(300.0)

    p = tmp_path / "velox_stack.emd"
    write_velox(p, stack, 5e-11)
    with pytest.raises(HrtemflowError, match="holds 3 frames"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    assert len(out) == 3
    np.testing.assert_array_equal(out[1].data, stack[1])


def test_ser_and_emi(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    data = img.astype(np.float32)
    p = tmp_path / "single_1.ser"
    write_ser(p, data, 5e-11)
    m = _one(p)
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size_A == pytest.approx(0.5)

    write_emi(tmp_path / "single.emi", kv=200.0)
    m = _one(tmp_path / "single.emi")
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size_A == pytest.approx(0.5)
    assert m.metadata["instrument"]["beam_energy_keV"] == pytest.approx(200.0)

    p = tmp_path / "series_1.ser"
    write_ser(p, stack, 5e-11)
    with pytest.raises(HrtemflowError, match="holds 3 frames"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    for m, want in zip(out, stack):
        np.testing.assert_array_equal(m.data, want)


def test_emi_without_ser(tmp_path: Path) -> None:
    write_emi(tmp_path / "lonely.emi")
    with pytest.raises(HrtemflowError, match=r"lonely.emi.*lonely_1.ser.*missing"):
        read_micrograph(tmp_path / "lonely.emi")


# ---------------------------------------------------------------------------------------------
# MRC, PNG, NPY


def test_mrc(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    import mrcfile

    data = img.astype(np.float32)
    p = tmp_path / "image.mrc"
    with mrcfile.new(p) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 0.5
    m = _one(p)
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size_A == pytest.approx(0.5)

    p = tmp_path / "stack.mrc"
    with mrcfile.new(p) as mrc:
        mrc.set_data(stack)
        mrc.set_image_stack()
        mrc.voxel_size = 0.5
    with pytest.raises(HrtemflowError, match="holds 3 frames"):
        read_micrograph(p)
    out = read_micrograph(p, frames="all")
    np.testing.assert_array_equal(out[1].data, stack[1])


def test_mrc_uncalibrated_and_default_voxel(tmp_path: Path, img: np.ndarray) -> None:
    import mrcfile

    p = tmp_path / "nocal.mrc"
    with mrcfile.new(p) as mrc:
        mrc.set_data(img.astype(np.float32))
    with pytest.raises(HrtemflowError, match=r"no pixel-size calibration.*--pixel-size"):
        read_micrograph(p)
    p = tmp_path / "one.mrc"
    with mrcfile.new(p) as mrc:
        mrc.set_data(img.astype(np.float32))
        mrc.voxel_size = 1.0
    with pytest.raises(HrtemflowError, match=r"1 Å per pixel, the default.*--pixel-size"):
        read_micrograph(p)


def test_png_never_calibrated(tmp_path: Path, img: np.ndarray) -> None:
    from PIL import Image

    p = tmp_path / "image.png"
    Image.fromarray(img).save(p)  # 16-bit greyscale
    with pytest.raises(HrtemflowError, match=r"image.png.*no pixel-size calibration.*--pixel-size"):
        read_micrograph(p)
    m = _one(p, pixel_size_nm=0.05)
    np.testing.assert_array_equal(m.data, img)
    assert m.pixel_size_A == pytest.approx(0.5)

    rgb = np.stack([(img // 16).astype(np.uint8)] * 3, axis=-1)
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    m = _one(p, pixel_size_nm=0.05)
    np.testing.assert_array_equal(m.data, rgb[..., 0])


def test_npy(tmp_path: Path, img: np.ndarray, stack: np.ndarray) -> None:
    p = tmp_path / "image.npy"
    np.save(p, img.astype(np.float64))
    with pytest.raises(HrtemflowError, match=r"no pixel-size calibration.*--pixel-size"):
        read_micrograph(p)
    m = _one(p, pixel_size_nm=0.05)
    np.testing.assert_array_equal(m.data, img)
    p = tmp_path / "stack.npy"
    np.save(p, stack)
    with pytest.raises(HrtemflowError, match=r"holds 3 frames.*--frames all"):
        read_micrograph(p, pixel_size_nm=0.05)
    assert len(read_micrograph(p, pixel_size_nm=0.05, frames="all")) == 3


def test_real_micrograph() -> None:
    if not REAL_MICROGRAPH.is_file():
        pytest.skip(f"real micrograph not found at {REAL_MICROGRAPH} (shared data not present)")
    with pytest.raises(HrtemflowError, match=r"--pixel-size"):
        read_micrograph(REAL_MICROGRAPH)
    m = _one(REAL_MICROGRAPH, pixel_size_nm=REAL_PIXEL_NM)
    assert m.data.shape == (512, 512)
    assert m.pixel_size_A == pytest.approx(0.55496)
    assert np.isfinite(m.data).all() and m.data.std() > 0


def test_real_micrograph_cut_in_half(tmp_path: Path) -> None:
    if not REAL_MICROGRAPH.is_file():
        pytest.skip(f"real micrograph not found at {REAL_MICROGRAPH} (shared data not present)")
    blob = REAL_MICROGRAPH.read_bytes()
    p = tmp_path / "half.tif"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(HrtemflowError, match=r"(?s)half.tif.*truncated"):
        read_micrograph(p, pixel_size_nm=REAL_PIXEL_NM)


# ---------------------------------------------------------------------------------------------
# bad files


def test_truncated_files(tmp_path: Path, img: np.ndarray) -> None:
    import mrcfile
    import tifffile

    files = {}
    files["t.tif"] = lambda p: tifffile.imwrite(p, img, imagej=True, resolution=(20, 20), metadata={"unit": "nm"})
    files["t.npy"] = lambda p: np.save(p, img)
    files["t.dm3"] = lambda p: write_dm(p, img.astype(np.float32), 0.05, "nm")
    files["t_1.ser"] = lambda p: write_ser(p, img.astype(np.float32), 5e-11)
    files["t.emd"] = lambda p: write_velox(p, img, 5e-11)

    def mrc(p: Path) -> None:
        with mrcfile.new(p) as m:
            m.set_data(img.astype(np.float32))
            m.voxel_size = 0.5

    files["t.mrc"] = mrc
    for name, write in files.items():
        p = tmp_path / name
        write(p)
        blob = p.read_bytes()
        p.write_bytes(blob[: len(blob) // 2])  # cut in half
        with pytest.raises(HrtemflowError, match=rf"(?s){name}.*(truncated|corrupt|cannot read)"):
            read_micrograph(p, pixel_size_nm=0.05)


def test_unknown_empty_missing(tmp_path: Path) -> None:
    p = tmp_path / "image.xyz"
    p.write_bytes(b"data")
    with pytest.raises(HrtemflowError, match=r"image.xyz.*unsupported file type.*\.tif"):
        read_micrograph(p)
    p = tmp_path / "empty.tif"
    p.touch()
    with pytest.raises(HrtemflowError, match=r"empty.tif is empty"):
        read_micrograph(p)
    with pytest.raises(HrtemflowError, match=r"missing.mrc does not exist"):
        read_micrograph(tmp_path / "missing.mrc")


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_garbage_in_every_format(tmp_path: Path, ext: str) -> None:
    """Random bytes under any supported extension: a clear error, never a library traceback."""
    p = tmp_path / f"garbage{ext}"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(HrtemflowError, match=rf"garbage{ext}"):
        read_micrograph(p, pixel_size_nm=0.05)


def test_tiny_images(tmp_path: Path) -> None:
    import tifffile

    p = tmp_path / "one.npy"
    np.save(p, np.ones((1, 1), np.float32))
    with pytest.raises(HrtemflowError, match=r"one.npy.*1 x 1 pixels, too small.*16 x 16"):
        read_micrograph(p, pixel_size_nm=0.05)
    p = tmp_path / "small.tif"
    tifffile.imwrite(p, np.ones((8, 300), np.uint8))
    with pytest.raises(HrtemflowError, match=r"8 x 300 pixels, too small"):
        read_micrograph(p, pixel_size_nm=0.05)


def _huge_npy(p: Path) -> None:
    with open(p, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (40000, 40000)})


def _huge_mrc(p: Path) -> None:
    import mrcfile

    with mrcfile.new(p) as m:
        m.set_data(np.zeros((16, 16), np.float32))
        m.voxel_size = 0.5
    head = bytearray(p.read_bytes()[:1024])
    head[0:8] = struct.pack("<ii", 40000, 40000)
    p.write_bytes(bytes(head))


def _huge_dm(p: Path) -> None:
    """A DM3 whose dimensions say 40000 x 40000 around a 16 x 16 data block."""
    write_dm(p, np.zeros((16, 16), np.float32), 0.05, "nm", declared_shape=(40000, 40000))


def _huge_ser(p: Path) -> None:
    write_ser(p, np.zeros((16, 16), np.float32), 5e-11)
    blob = bytearray(p.read_bytes())
    offsets_at = struct.unpack("<I", blob[22:26])[0]
    first = struct.unpack("<I", blob[offsets_at : offsets_at + 4])[0]
    blob[first + 42 : first + 50] = struct.pack("<II", 40000, 40000)
    p.write_bytes(bytes(blob[: first + 50]))


def _huge_png(p: Path) -> None:
    """Signature and an IHDR chunk declaring 40000 x 40000 8-bit grey pixels, no image data."""
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)


def _huge_emd(p: Path) -> None:
    """A Velox EMD whose image dataset is declared 40000 x 40000 but never written (chunked)."""
    import h5py

    write_velox(p, np.zeros((16, 16), np.float32), 5e-11)
    with h5py.File(p, "a") as f:
        g = f["Data/Image/0123456789abcdef"]
        del g["Data"]
        g.create_dataset("Data", shape=(40000, 40000, 1), dtype="f4", chunks=(256, 256, 1))


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("huge.npy", _huge_npy),
        ("huge.mrc", _huge_mrc),
        ("huge.tif", lambda p: write_tiff_header_only(p, 40000, 40000)),
        ("huge.dm3", _huge_dm),
        ("huge_1.ser", _huge_ser),
        ("huge.png", _huge_png),
        ("huge.emd", _huge_emd),
    ],
)
def test_huge_header_refused_without_allocating(tmp_path: Path, name: str, write) -> None:
    p = tmp_path / name
    write(p)
    with pytest.raises(HrtemflowError):  # first call: imports the libraries outside the measurement
        read_micrograph(p, pixel_size_nm=0.05)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(HrtemflowError, match=rf"(?s){name}.*40000 x 40000 pixels.*over the limit"):
            read_micrograph(p, pixel_size_nm=0.05)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5.0
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MiB: the data were allocated"


def test_size_limits_are_configurable(tmp_path: Path, img: np.ndarray) -> None:
    p = tmp_path / "image.npy"
    np.save(p, img)
    with pytest.raises(HrtemflowError, match=r"over the limit of 32 px per side"):
        read_micrograph(p, pixel_size_nm=0.05, limits=SizeLimits(max_side=32))


def test_nan_data(tmp_path: Path, img: np.ndarray) -> None:
    p = tmp_path / "nan.npy"
    np.save(p, np.full((32, 32), np.nan, np.float32))
    with pytest.raises(HrtemflowError, match=r"nan.npy.*no finite values"):
        read_micrograph(p, pixel_size_nm=0.05)
    p = tmp_path / "inf.npy"
    np.save(p, np.full((32, 32), np.inf))
    with pytest.raises(HrtemflowError, match=r"no finite values"):
        read_micrograph(p, pixel_size_nm=0.05)
    some = img.astype(np.float32)
    some[0, :3] = np.nan
    p = tmp_path / "some.npy"
    np.save(p, some)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reader warns through metadata["warnings"], not Python warnings
        m = _one(p, pixel_size_nm=0.05)
    assert np.isfinite(m.data).all() and m.metadata["nonfinite_pixels_filled"] == 3
    (note,) = m.metadata["warnings"]
    assert "some.npy" in note and "3 NaN/inf pixels replaced by the median" in note and "\n" not in note


def test_pickle_complex_and_1d_refused(tmp_path: Path) -> None:
    p = tmp_path / "obj.npy"
    np.save(p, np.array([[{"a": 1}] * 20] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(HrtemflowError, match=r"obj.npy.*pickle"):
        read_micrograph(p, pixel_size_nm=0.05)
    p = tmp_path / "wave.npy"
    np.save(p, np.ones((32, 32), np.complex64))
    with pytest.raises(HrtemflowError, match=r"wave.npy.*complex"):
        read_micrograph(p, pixel_size_nm=0.05)
    p = tmp_path / "line.npy"
    np.save(p, np.ones(100, np.float32))
    with pytest.raises(HrtemflowError, match=r"line.npy.*not an image"):
        read_micrograph(p, pixel_size_nm=0.05)


def test_bad_options(tmp_path: Path, img: np.ndarray) -> None:
    p = tmp_path / "image.npy"
    np.save(p, img)
    with pytest.raises(HrtemflowError, match="frames must be one of"):
        read_micrograph(p, pixel_size_nm=0.05, frames="first")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(HrtemflowError, match=r"--pixel-size must be a positive number of nm"):
            read_micrograph(p, pixel_size_nm=bad)


def test_list_micrographs(tmp_path: Path) -> None:
    names = ["b.tif", "a.dm4", "c.PNG", "scan.emi", "scan_1.ser", "other_1.ser", "notes.txt", ".hidden.tif"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.tif").mkdir()
    got = [p.name for p in list_micrographs(tmp_path)]
    assert got == ["a.dm4", "b.tif", "c.PNG", "other_1.ser", "scan.emi"]
    with pytest.raises(HrtemflowError, match="is not a folder"):
        list_micrographs(tmp_path / "b.tif")
