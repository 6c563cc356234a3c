"""The shard layout: every array and attribute name of an image store, in one place (docs/data-products.md).

An image shard is one Zarr v3 group:

    sample_id (N,) str, image_id (N,) str          the ids (`hrtemflow.core.ids`)
    s<size>/image, s<size>/noise_free, s<size>/clean   (N, size, size) float32, one image per chunk
    s<size>/pixel_size_A (N,)
    s<size>/encoding/<name> (N,)                    compact storage only: how to decode (`store.codec`)
    params/<name> (N,) or (N, d) float64            what each image was taken with
    labels/<name> (N,)                              what each image shows (from the MD manifest)
    attrs: complete (written last), sizes, family, imaging, versions, ...

Every Zarr read and write of a shard goes through `hrtemflow.store` with these names.
"""

from __future__ import annotations

IMAGE_KINDS = ("image", "noise_free", "clean")
SAMPLE_ID = "sample_id"
IMAGE_ID = "image_id"
PARAMS = "params"
LABELS = "labels"
#: params/* arrays of shape (N,) (besides euler_rad (N,3) and shift_A (N,2))
SCALAR_PARAMS = (
    "defocus_A",
    "cs_A",
    "c12_A",
    "phi12_rad",
    "c21_A",
    "phi21_rad",
    "c23_A",
    "phi23_rad",
    "focal_spread_A",
    "convergence_mrad",
    "dose_e_per_A2",
    "energy_eV",
    "fov_A",
    "brightness",
    "contrast",
    "background",
    "mtf_c50",
)
VECTOR_PARAMS = {"euler_rad": 3, "shift_A": 2}
#: the gain of a stored image (imaging.optics.apply_gain), which fresh shot noise undoes to reach the counts
GAIN_PARAMS = ("brightness", "contrast", "background")
#: attrs: a store is complete iff `complete` is true, and it is written last
COMPLETE = "complete"
SIZES = "sizes"
#: attrs: how the images are stored, "float32" or "compact" (integers, `store.codec`); absent = float32
STORAGE = "storage"


def size_group(size: int) -> str:
    return f"s{size}"


def image_key(size: int, kind: str = "image") -> str:
    """The images of one kind ("image", "noise_free" or "clean") at one size."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"image kind {kind!r} is not one of {', '.join(IMAGE_KINDS)}")
    return f"{size_group(size)}/{kind}"


def pixel_size_key(size: int) -> str:
    return f"{size_group(size)}/pixel_size_A"


def param_key(name: str) -> str:
    return f"{PARAMS}/{name}"


def label_key(name: str) -> str:
    return f"{LABELS}/{name}"
