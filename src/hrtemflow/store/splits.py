"""Train, validation and test by structure: no structure's images are on two sides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..core.ids import group_of


def _structure_hash(sample_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"hrtemflow-split:{sample_id}".encode()).digest()[:8], "little")


#: how the split is made, as a model card says it
METHOD = "by structure (sample_id): per group, ranked by sha256 of the id (hrtemflow.store.splits.split_structures)"


def split_structures(sample_ids: Sequence[str], val: float, test: float) -> dict[str, str]:
    """Map each structure (sample id) to train, val or test.

    Within each group (a chirality, an ordering, amorphous) structures are ranked by a stable hash of
    their id and the lowest go to test, the next to val: fractions are met exactly per group, every
    class is on every side even in a demo of 4 structures per class (a group of >= 3 gives at least
    one to val and test), and a structure's side depends only on its id and its group's membership.
    """
    by_group: dict[str, list[str]] = {}
    for s in sorted(set(map(str, sample_ids))):
        by_group.setdefault(group_of(s), []).append(s)
    side = {}
    for members in by_group.values():
        members.sort(key=_structure_hash)
        n = len(members)
        n_test, n_val = round(n * test), round(n * val)
        if n >= 3:
            n_test, n_val = max(1, n_test), max(1, n_val)
        while n_test + n_val >= n and n_test + n_val > 0:  # always keep one for training
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        for i, s in enumerate(members):
            side[s] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return side
