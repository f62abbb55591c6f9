"""A torch Dataset over a subset of a :class:`DatasetIndex`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from dejavu import DejavuError
from dejavu.data.fastjpeg import draft_side, load_rgb_reduced
from dejavu.data.imagefolder import DatasetIndex


def to_rgb(im: Image.Image) -> Image.Image:
    """``im.convert("RGB")``, except that 16-bit and other integer or float grey images
    (PIL modes ``I;16*``, ``I``, ``F``), which PIL clips at 255 (a mid-grey 16-bit PNG came
    out white), are scaled to 8 bits first: ``I;16*`` by 1/257; ``I``/``F`` by 1/257 when a
    value exceeds 255 (16-bit data), else as they are.

    Args:
        im: an opened image.

    Returns:
        The RGB image.
    """
    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16") or (a.size and np.nanmax(a) > 255):
        a = a / 257.0
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")


def load_rgb(path) -> Image.Image:
    """Decode an image file to RGB, whatever its mode (CMYK, grayscale, palette, RGBA) and
    whatever its extension says (ImageNet has a PNG named ``.JPEG``: PIL reads the content).

    A corrupt, truncated or unreadable file raises a one-line :class:`DejavuError` naming it
    (PIL's own errors do not say which file)."""
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DejavuError(f"{path}: cannot decode image ({detail})") from None


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
