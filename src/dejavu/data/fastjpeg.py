"""JPEG decoding for the evaluation path (attack, probe): PIL *draft mode* (issue 14.2).

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size directly from the DCT
coefficients, several times faster than a full decode. The evaluation transform
(DESIGN 2.3) resizes the short side to ``round(256/224 * S)`` and centre-crops, so a
reduced decode is used only when **both** sides stay >= that resize target: the resize
remains a (smaller) antialiased downscale and the result differs from the full decode
by a small tolerance, measured by ``bench/bench_jpeg.py`` and bounded in
``tests/data/test_fastjpeg.py``. Images too small to reduce, crops (boxes) and
non-JPEG files are decoded in full, exactly as :func:`dejavu.data.dataset.load_rgb`.
"""

from __future__ import annotations

from PIL import Image

DECODE_DESC = "pil-draft-ge-resize"  # part of embedding cache keys


def draft_side(transform) -> int | None:
    """The short-side resize target of an evaluation transform (its first op, a Resize
    to an int), or None when the transform does not start with one."""
    ops = getattr(transform, "transforms", None)
    if not ops:
        return None
    size = getattr(ops[0], "size", None)
    if type(ops[0]).__name__ != "Resize":
        return None
    if isinstance(size, int):
        return size
    if isinstance(size, (list, tuple)) and len(size) == 1:
        return int(size[0])
    return None


def load_rgb_reduced(path, min_side: int | None) -> Image.Image:
    """RGB image, JPEGs decoded at the largest DCT reduction (1/2, 1/4, 1/8) that keeps
    both sides >= ``min_side`` (``None`` = full decode).

    Args:
        path: image file.
        min_side: the smallest side the decoded image may have.

    Returns:
        The decoded RGB image.
    """
    with Image.open(path) as im:
        if min_side and im.format == "JPEG" and min(im.size) >= 2 * min_side:
            im.draft("RGB", (min_side, min_side))
        return im.convert("RGB")
