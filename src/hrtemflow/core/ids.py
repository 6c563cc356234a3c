"""The id grammar: how groups, shards, samples, images and views are named, and how a name is read back.

One module builds and parses every id, so the plan (which writes them into specs), the imaging stage
(which writes image ids into shards) and the learning stage (which groups images by view, structure
and family) cannot drift apart:

    group   nanoalloy-<ordering> | cnt-<n>-<m> | amorphous
    shard   <group>-s<k:05d>
    sample  <group>-<index:07d>
    image   <sample>-v<view:02d>-o<variant:02d>
    view    <sample>-v<view:02d>

A group's first word is its family. Ids are stable: they derive from (group, index) only, so they
never move when samples are added or the shard size changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from .families import FAMILIES

#: Snakemake wildcard patterns of the names above (group and shard as they appear in paths)
GROUP_PATTERN = r"[a-z0-9]+(-[a-z0-9]+)*"
SHARD_PATTERN = r"[a-z0-9]+(-[a-z0-9]+)*-s\d{5}"
_IMAGE = re.compile(r"^(?P<sample>.+-\d{7})-v(?P<view>\d{2,})-o(?P<variant>\d{2,})$")


def group_name(family: str, key: str | None = None) -> str:
    """A group's name: the family, then its key (an ordering, or a chirality label) if it has one."""
    return family if key is None else f"{family}-{key}"


def chirality_label(n: int, m: int) -> str:
    """The class label of a tube (n, m): "n-m"."""
    return f"{n}-{m}"


def parse_chirality(label: str) -> tuple[int, int]:
    """ "n-m" -> (n, m)."""
    n, m = str(label).split("-")
    return int(n), int(m)


def shard_name(group: str, k: int) -> str:
    return f"{group}-s{k:05d}"


def sample_id(group: str, index: int) -> str:
    return f"{group}-{index:07d}"


def image_id(sample: str, view: int, variant: int) -> str:
    return f"{sample}-v{view:02d}-o{variant:02d}"


def view_id(sample: str, view: int) -> str:
    return f"{sample}-v{view:02d}"


def group_of(sample: str) -> str:
    """The group of a sample id ("cnt-8-4-0000012" -> "cnt-8-4")."""
    return str(sample).rsplit("-", 1)[0]


def family_of(name: str) -> str:
    """The family of any group, shard, sample, image or view id ("cnt-8-4-0000012" -> "cnt")."""
    family = str(name).split("-", 1)[0]
    if family not in FAMILIES:
        raise ValueError(
            f"{name!r} is not an hrtemflow id: its first word {family!r} is not one of {', '.join(FAMILIES)}"
        )
    return family


def parse_image_id(image: str) -> tuple[str, int, int]:
    """(sample id, view, variant) of an image id."""
    m = _IMAGE.match(str(image))
    if m is None:
        raise ValueError(f"{image!r} is not an image id (<sample>-vNN-oNN)")
    return m["sample"], int(m["view"]), int(m["variant"])


def views_of(image_ids: Iterable[str]) -> np.ndarray:
    """Each image's view id: the optics variants of a view share the structure's orientation and position."""
    return np.array([str(i).rsplit("-o", 1)[0] for i in image_ids])


def families_of(ids: Iterable[str]) -> np.ndarray:
    """Each id's family (vectorised `family_of`)."""
    return np.array([family_of(i) for i in ids])
