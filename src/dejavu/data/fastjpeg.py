"""Image decoding, the one leaf every reader uses: :func:`load_rgb` (any image to RGB, one-line
errors) and, for the evaluation path (attack, audit, probe), the full decode by default
(as the original), PIL *draft mode* as an opt-in speed setting (``decode: draft``,
docs/DESIGN.md 7.5).

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size directly from the DCT
coefficients, several times faster than a full decode. The evaluation transform
(DESIGN 2.3) resizes the short side to ``round(256/224 * S)`` and centre-crops, so a
reduced decode is used only when **both** sides stay >= that resize target, and the
resize is then done here from the exact sub-pixel extent of the original (same output
size and geometry as the full path); what remains is the difference between libjpeg's
DCT-domain downscale and PIL's antialiased bilinear from full resolution -- a small
tolerance measured by ``bench/bench_jpeg.py`` and bounded in ``tests/data/test_fastjpeg.py``.
Images too small to reduce, crops (boxes) and non-JPEG files are decoded in full, exactly as
:func:`load_rgb`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dejavu import DejavuError

DECODES = ("exact", "draft")
DECODE_DESC = {"exact": "pil-full", "draft": "pil-draft-ge-resize"}  # part of embedding cache keys
DECODE_HELP = (
    "exact: every image decoded in full, as the original (the default); draft: a JPEG at least twice "
    "the resize target on both sides is decoded at 1/2-1/8 scale by libjpeg (faster, other pixels: "
    "measured against the full decode at the synthetic default's 64 px, neighbour sets overlap 0.988 "
    "on average, only 53-62 of ~275 neighbour rows per X_attk_Y array are identical, confidences differ by up to "
    "0.09; docs/DESIGN.md 7.5). Recorded in results.json and in the embedding cache key"
)


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


def check_decode(decode: str) -> str:
    """``decode`` if it is a known setting, else a one-line :class:`dejavu.DejavuError`."""
    if decode not in DECODES:
        raise DejavuError(f"decode {decode!r}: choose exact or draft")
    return decode


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


def _short_side_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) after resizing the short side to ``side`` as ``torchvision`` Resize(int) does."""
    if w <= h:
        return side, int(side * h / w)
    return int(side * w / h), side


def load_rgb_reduced(path, min_side: int | None) -> Image.Image:
    """RGB image; a JPEG whose both sides are >= 2 * ``min_side`` is decoded at the largest
    DCT reduction (1/2, 1/4, 1/8) that keeps both sides >= ``min_side`` and then resized
    (PIL bilinear, antialiased) to short side ``min_side`` from the exact sub-pixel box of
    the original image (libjpeg rounds the reduced size up), i.e. to the very size and
    geometry the evaluation transform's ``Resize(min_side)`` gives the full decode, which
    then leaves it unchanged. Otherwise (``None``, small image, not a JPEG) a full decode.

    Args:
        path: image file.
        min_side: the evaluation transform's resize target (short side).

    Returns:
        The decoded RGB image.
    """
    if not min_side:
        return load_rgb(path)
    try:
        with Image.open(path) as im:
            if not (im.format == "JPEG" and min(im.size) >= 2 * min_side):
                return to_rgb(im)
            w, h = im.size
            got = im.draft("RGB", (min_side, min_side))
            img = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return load_rgb(path)  # a full decode: it decodes, or raises its one-line error naming the file
    if got is None or img.size == (w, h):
        return img
    box = got[1]  # (0, 0, w / scale, h / scale): the original's extent in reduced pixels
    return img.resize(_short_side_size(w, h, min_side), Image.Resampling.BILINEAR, box=box)
