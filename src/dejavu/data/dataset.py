"""A torch Dataset over a subset of a :class:`DatasetIndex`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dejavu.data.fastjpeg import draft_side, load_rgb, load_rgb_reduced
from dejavu.data.imagefolder import DatasetIndex


class IndexedImages:
    """``(transform(image), label, global_index)`` for ``indices`` of ``index``."""

    def __init__(
        self, index: DatasetIndex, indices: np.ndarray, transform: Callable | None = None, draft: bool = False
    ):
        self.index = index
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        # draft=True (evaluation transforms only): JPEG draft-mode decode, dejavu.data.fastjpeg
        self.draft_side = draft_side(transform) if draft else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        g = int(self.indices[i])
        p = self.index.path(g)
        img = load_rgb_reduced(p, self.draft_side) if self.draft_side else load_rgb(p)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.index.targets[g]), g
