"""A torch Dataset over a subset of a :class:`DatasetIndex`."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from dejavu.data.imagefolder import DatasetIndex


def load_rgb(path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class IndexedImages:
    """``(transform(image), label, global_index)`` for ``indices`` of ``index``."""

    def __init__(self, index: DatasetIndex, indices: np.ndarray, transform: Callable | None = None):
        self.index = index
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        g = int(self.indices[i])
        img = load_rgb(self.index.path(g))
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.index.targets[g]), g
