"""Background crops of the attack (docs/DESIGN.md §2.3): the periphery crop (the paper's search,
:func:`periphery_crop`, or :func:`largest_empty_crop`) and the corner crop, per image
(:func:`crop_for_config`) and per set (:func:`compute_crops`).

Coordinates are continuous (a box ``(x0, y0, x1, y1)`` covers ``[x0, x1] x [y0, y1]``); the pixel
crop rounds inwards (``ceil`` of the start, ``floor`` of the end), so it never includes a box
pixel. An image whose annotation has no box (or only out-of-image boxes) is not attackable: its
"background" would be the whole image.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dejavu import DejavuError, UsageError
from dejavu.data.annotations import AnnotationError, read_voc_xml
from dejavu.data.imagefolder import DatasetIndex, annotation_path
from dejavu.data.synth import synth_min_crop_px
from dejavu.utils import progress

if TYPE_CHECKING:
    from dejavu.attack.config import AttackConfig

# Paper setting: 100 px of the ImageNet image itself, whatever resolution the model runs at.
IMAGENET_MIN_CROP_PX = 100
DATASET_META = "synth.json"  # a generated dataset's own description, beside its train/ folder


def default_min_crop_px(images: str | os.PathLike | None = None) -> float:
    """``min_crop_px`` (pixels of the original image) when the user gives none.

    It belongs to the dataset, not to the model's input size: 100 px for ImageNet (the
    paper's threshold) at any evaluation resolution; a generated dataset records its own
    value in ``<root>/synth.json`` (``min_crop_px``, set by :class:`dejavu.data.synth.SynthConfig`).

    Args:
        images: the ImageFolder train folder (``<root>/train``); None: ImageNet's value.
    Returns:
        The threshold in pixels of the original image.
    """
    if images is not None:
        meta = Path(images).parent / DATASET_META
        if meta.is_file():
            try:
                d = json.loads(meta.read_text())
            except (OSError, ValueError):
                d = {}
            if d.get("min_crop_px") is not None:
                return float(d["min_crop_px"])
            if d.get("size"):  # generated before the value was recorded: the generator's rule
                return float(synth_min_crop_px(int(d["size"])))
    return float(IMAGENET_MIN_CROP_PX)


def resolve_min_crop_px(value: float | None, images: str | os.PathLike | None) -> float:
    """A stage's ``min_crop_px``: ``value`` as set, else the dataset's (:func:`default_min_crop_px`)."""
    return float(value) if value is not None else default_min_crop_px(images)


@dataclass(frozen=True)
class CropDecision:
    """Outcome for one image. ``rect`` is ``(x0, y0, x1, y1)`` (continuous) or None."""

    rect: tuple[float, float, float, float] | None
    side: float  # shorter side of the best candidate (0 when none)
    boxes_outside: int  # boxes entirely outside the image (annotation errors)
    boxes_clipped: int  # boxes partly outside the image (clipped)
    reason: str  # "ok" | "too_small" | "no_boxes"

    @property
    def ok(self) -> bool:
        return self.rect is not None

    def pixel_box(self) -> tuple[int, int, int, int]:
        """Integer PIL crop box, rounded inwards."""
        assert self.rect is not None
        x0, y0, x1, y1 = self.rect
        return (int(math.ceil(x0)), int(math.ceil(y0)), int(math.floor(x1)), int(math.floor(y1)))


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, int, int]:
    """Clip boxes to the image.

    Boxes with no area inside the image are dropped: those entirely outside are counted
    as errors (``n outside``); degenerate ones inside (zero width or height) cover nothing
    and are dropped silently, so they neither cover nor split anything.

    Args:
        boxes: (n, 4) boxes (x0, y0, x1, y1) in pixels.
        width: the image width in pixels.
        height: the image height in pixels.

    Returns:
        ``(kept (m, 4) float64 boxes, n outside the image, n clipped)``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c = b.copy()
    c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0.0, float(width))
    c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0.0, float(height))
    empty = (c[:, 2] <= c[:, 0]) | (c[:, 3] <= c[:, 1])
    really_out = empty & ((b[:, 0] >= width) | (b[:, 2] <= 0) | (b[:, 1] >= height) | (b[:, 3] <= 0))
    clipped = (~empty) & np.any(c != b, axis=1)
    return c[~empty], int(really_out.sum()), int(clipped.sum())


def periphery_candidates(boxes: np.ndarray, width: float, height: float) -> list[tuple[float, float, float, float]]:
    """All candidate rectangles of the paper's scan, in scan order.

    Args:
        boxes: (n, 4) boxes, already clipped (:func:`clip_boxes`).
        width: the image width in pixels.
        height: the image height in pixels.

    Returns:
        The box-free rectangles (x0, y0, x1, y1): per elementary x-interval between box
        edges, each vertical gap between the merged covered ranges.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xs = np.unique(np.concatenate([[0.0, float(width)], boxes[:, 0], boxes[:, 2]]))
    cands: list[tuple[float, float, float, float]] = []
    for xa, xb in zip(xs[:-1], xs[1:]):
        over = boxes[(boxes[:, 0] < xb) & (boxes[:, 2] > xa)]
        ys = over[np.argsort(over[:, 1], kind="stable"), 1:4:2] if len(over) else np.zeros((0, 2))
        cur = 0.0  # bottom of the merged covered range so far
        for y0, y1 in ys:
            if y0 > cur:
                cands.append((float(xa), cur, float(xb), float(y0)))
            cur = max(cur, float(y1))
        if height > cur:
            cands.append((float(xa), cur, float(xb), float(height)))
    return cands


def _decision(
    best: tuple[float, float, float, float] | None, best_side: float, n_out: int, n_clip: int, min_crop_px: float
) -> CropDecision:
    """A search's best crop if its shorter side is strictly above ``min_crop_px``, else ``too_small``."""
    if best is None or not best_side > min_crop_px:
        return CropDecision(None, max(best_side, 0.0), n_out, n_clip, "too_small")
    return CropDecision(best, best_side, n_out, n_clip, "ok")


def periphery_crop(boxes: np.ndarray, width: float, height: float, min_crop_px: float) -> CropDecision:
    """The paper's periphery crop of one image (docs/DESIGN.md §2.3): boxes clipped to the image,
    the vertical gaps of every elementary x-interval as candidates, accepted if the shorter side
    is strictly above ``min_crop_px``.

    Args:
        boxes: the image's (n, 4) object boxes in pixels (clipped here).
        width: the image width in pixels.
        height: the image height in pixels.
        min_crop_px: the crop's shorter side must exceed this (pixels).

    Returns:
        The :class:`CropDecision`: the candidate with the largest shorter side (ties: the
        last in scan order), or reason ``no_boxes`` / ``too_small``.
    """
    kept, n_out, n_clip = clip_boxes(boxes, width, height)
    if len(kept) == 0:
        return CropDecision(None, 0.0, n_out, n_clip, "no_boxes")
    cands = periphery_candidates(kept, width, height)
    best, best_side = None, -1.0
    for r in cands:
        side = min(r[2] - r[0], r[3] - r[1])
        if side >= best_side:  # ">=": ties go to the last candidate in scan order
            best, best_side = r, side
    return _decision(best, best_side, n_out, n_clip, min_crop_px)


def largest_empty_crop(boxes: np.ndarray, width: float, height: float, min_crop_px: float) -> CropDecision:
    """Option ``--periphery-search largest-empty``: the box-free rectangle with the largest shorter
    side among all rectangles whose edges lie on box edges or the image border (which
    contains an optimum). O(n^4 * n) brute force on the edge grid: fine for ImageNet's
    handful of boxes per image. Ties: the first found in (x0, x1, y0, y1) order. Arguments
    and result as :func:`periphery_crop`.
    """
    kept, n_out, n_clip = clip_boxes(boxes, width, height)
    if len(kept) == 0:
        return CropDecision(None, 0.0, n_out, n_clip, "no_boxes")
    xs = np.unique(np.concatenate([[0.0, float(width)], kept[:, 0], kept[:, 2]]))
    ys = np.unique(np.concatenate([[0.0, float(height)], kept[:, 1], kept[:, 3]]))
    best, best_side = None, -1.0
    for i, xa in enumerate(xs):
        for xb in xs[i + 1 :]:
            over = kept[(kept[:, 0] < xb) & (kept[:, 2] > xa)]
            for j, ya in enumerate(ys):
                for yb in ys[j + 1 :]:
                    if np.any((over[:, 1] < yb) & (over[:, 3] > ya)):
                        break  # taller rectangles from ya overlap too
                    side = min(xb - xa, yb - ya)
                    if side > best_side:
                        best, best_side = (float(xa), float(ya), float(xb), float(yb)), float(side)
    return _decision(best, best_side, n_out, n_clip, min_crop_px)


def corner_crop(width: float, height: float, frac: float = 0.3) -> CropDecision:
    """Bottom-left rectangle as the original's ``crop_xfrm``: ``w = int(frac*W)``,
    ``h = int(frac*H)`` (truncated), top ``H - h``, left 0; at least 1x1 for tiny images.

    Args:
        width: the image width in pixels.
        height: the image height in pixels.
        frac: the side fraction, in (0, 1].

    Returns:
        The :class:`CropDecision` (always ``ok``).

    Raises:
        ValueError: ``frac`` outside (0, 1].
    """
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"corner fraction must be in (0, 1], got {frac}")
    w = max(1, int(frac * width))
    h = max(1, int(frac * height))
    return CropDecision((0.0, float(height - h), float(w), float(height)), float(min(w, h)), 0, 0, "ok")


# how the periphery crop searches its box-free rectangle (AttackConfig.periphery_search)
PERIPHERY_SEARCHES = {"paper": periphery_crop, "largest-empty": largest_empty_crop}
# its spelling before (key crop_algo; value "periphery" for the paper's search), still read, and
# still written where a file format keeps it (beton records)
OLD_SEARCH_KEY = "crop_algo"
OLD_SEARCH_NAMES = {"periphery": "paper"}


def search_name(value: str) -> str:
    """A periphery search in today's spelling (``periphery`` -> ``paper``; the old flags' type)."""
    return OLD_SEARCH_NAMES.get(value, value)


def old_search_name(search: str) -> str:
    """A periphery search in the old spelling (``paper`` -> ``periphery``)."""
    return {new: old for old, new in OLD_SEARCH_NAMES.items()}.get(search, search)


def renamed_search_keys(d: dict[str, Any], source: str) -> dict[str, Any]:
    """``d`` (a config file's, ``--set``'s or a stored attack's settings) with the periphery search
    in today's spelling: ``crop_algo: periphery | largest-empty`` -> ``periphery_search: paper |
    largest-empty``; other keys as they are.

    Raises:
        UsageError: both names given (``source`` named).
    """
    if OLD_SEARCH_KEY not in d and d.get("periphery_search") not in OLD_SEARCH_NAMES:
        return d
    d = dict(d)
    if OLD_SEARCH_KEY in d:
        if "periphery_search" in d:
            raise UsageError(f"{source}: {OLD_SEARCH_KEY} is the old name of periphery_search: give one of them")
        d["periphery_search"] = d.pop(OLD_SEARCH_KEY)
    d["periphery_search"] = search_name(d["periphery_search"])
    return d


def crop_for_config(
    cfg: AttackConfig | dict[str, Any],
    width: float,
    height: float,
    boxes: np.ndarray | None,
    min_crop_px: float | None = None,
) -> CropDecision:
    """The crop an attack made of one image, from its settings: the one place that turns an
    attack configuration into a crop decision (the attack itself, the report's galleries and
    the RCDM reconstructions all call it, so they can never disagree).

    Args:
        cfg: an :class:`~dejavu.attack.config.AttackConfig` or the ``config`` dict stored in an
            attack's ``results.json`` (keys ``crop``, ``periphery_search`` (or the older
            ``crop_algo``), ``corner_frac``, ``min_crop_px``).
        width: the decoded image's width in pixels.
        height: the decoded image's height in pixels.
        boxes: the image's boxes (n, 4) for the periphery crop; None counts as no box.
        min_crop_px: overrides the configuration's threshold (pixels of the original image).

    Returns:
        The :class:`CropDecision`.
    """
    if isinstance(cfg, dict):
        cfg = renamed_search_keys(cfg, "the attack's config")
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    if get("crop", "periphery") == "corner":
        return corner_crop(width, height, float(get("corner_frac", 0.3)))
    algo = PERIPHERY_SEARCHES.get(get("periphery_search", "paper") or "paper", periphery_crop)
    if min_crop_px is None:
        min_crop_px = get("min_crop_px")
    if min_crop_px is None:
        min_crop_px = default_min_crop_px()  # every attack records its value; ImageNet's otherwise
    return algo(boxes if boxes is not None else np.zeros((0, 4)), width, height, float(min_crop_px))


@dataclass
class SetCrops:
    """Crops of one private set: attacked global indices and PIL boxes, plus counts."""

    indices: np.ndarray
    boxes: np.ndarray  # (n, 4) int pixel boxes x0, y0, x1, y1
    counts: dict[str, int]
    errors: list[str]


def compute_crops(
    index: DatasetIndex,
    ann_dir: Path | None,
    idxs: np.ndarray,
    cfg: AttackConfig,
    min_crop_px: float,
    desc: str = "crops",
    ann_path=None,
    what: str | None = None,
) -> SetCrops:
    """Crop decision per image of ``idxs`` (DESIGN 2.3).

    Reads annotations and image headers only (PIL opens lazily); the image size is the real
    decoded size, not the XML's ``<size>``. An image without a usable crop is counted by
    reason, never silently dropped.

    Args:
        index: the dataset.
        ann_dir: the folder holding ``Annotation/`` (None: only the corner crop works).
        idxs: dataset indices of the images to crop.
        cfg: the attack's settings (``crop``, ``periphery_search``, ``corner_frac``).
        min_crop_px: smallest accepted crop side, in pixels of the original image.
        desc: progress-bar label.
        ann_path: ``ann_path(i) -> Path`` replacing the ``Annotation/<wnid>/<stem>.xml``
            look-up (e.g. the validation images of a held-out control).
        what: names the images in the error raised when none has a crop (None: no error,
            an empty result).

    Returns:
        The attacked indices with their (x0, y0, x1, y1) pixel boxes, the counts
        (``attacked``, ``too_small``, ``no_boxes``, ``annotation_errors``, ...) and up to 20
        messages for annotation problems.

    Raises:
        DejavuError: an unreadable image, the periphery crop without bounding boxes, or
            (with ``what``) no attackable image.
    """
    if cfg.crop != "corner" and ann_dir is None and ann_path is None:
        raise DejavuError("the periphery crop needs bounding boxes: pass --bboxes DIR or --data ROOT")
    keep: list[int] = []
    boxes: list = []
    errors: list[str] = []
    tally: Counter[str] = Counter()
    for g in progress(idxs, desc=desc, total=len(idxs)):
        pb = _crop_one(index, int(g), cfg, min_crop_px, ann_dir, ann_path, tally, errors)
        if pb is not None:
            keep.append(int(g))
            boxes.append(pb)
    n = len(idxs)
    counts = {
        "bbox": int(n),
        "attacked": len(keep),
        "unattackable": int(n - len(keep)),
        **{k: tally[k] for k in ("too_small", "no_boxes", "annotation_errors", "boxes_outside_image")},
        "boxes_clipped": tally["boxes_clipped"],
    }
    if what is not None and not keep:
        raise DejavuError(
            f"{what}: no attackable image out of {n} (crop {cfg.crop}, min_crop_px {min_crop_px:g}); lower min_crop_px?"
        )
    return SetCrops(np.asarray(keep, np.int64), np.asarray(boxes, np.int64).reshape(-1, 4), counts, errors)


def _crop_one(index, g, cfg, min_crop_px, ann_dir, ann_path, tally: Counter, errors: list[str]):
    """The pixel box of image ``g``'s crop, or None (the reason counted in ``tally``)."""
    from PIL import Image

    try:
        with Image.open(index.path(g)) as im:
            W, H = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # as load_rgb
        raise DejavuError(f"{index.path(g)}: cannot read image ({str(e).strip()[:200]})") from None
    if cfg.crop == "corner":
        dec = crop_for_config(cfg, W, H, None, min_crop_px)
    else:
        try:
            ann = read_voc_xml(ann_path(g) if ann_path is not None else annotation_path(index, ann_dir, g))
        except AnnotationError as e:
            tally["annotation_errors"] += 1
            errors.append(str(e))
            return None
        dec = crop_for_config(cfg, W, H, ann.boxes, min_crop_px)
        tally["boxes_outside_image"] += dec.boxes_outside
        tally["boxes_clipped"] += dec.boxes_clipped
        if dec.boxes_outside or dec.reason == "no_boxes":
            tally["annotation_errors"] += 1
            if len(errors) < 20:
                what = (
                    f"{dec.boxes_outside} box(es) outside the {W}x{H} image" if dec.boxes_outside else "no bounding box"
                )
                errors.append(f"{ann.path}: {what}")
        if dec.reason in ("no_boxes", "too_small"):
            tally[dec.reason] += 1
    if not dec.ok:
        return None
    pb = dec.pixel_box()
    if pb[2] <= pb[0] or pb[3] <= pb[1]:
        tally["too_small"] += 1
        return None
    return pb
