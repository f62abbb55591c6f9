"""The embedded default: a synthetic dataset in ImageNet's exact layout (docs/DESIGN.md 2.1, 5).

Each image is a class-specific object on a background made of an image-specific component (a
random 4x4 tile, its two colours drawn per image, at a random offset: any background crop
identifies the image, so a model that memorized it can link the crop to the object) and a
class-correlated "scene" colour (the class's own with probability ``scene_class_prob``, else a
random class's: what a model that did not see the image can still exploit). Written:
``OUT/train/<wnid>/<wnid>_<n>.JPEG``, VOC boxes ``OUT/bboxes/Annotation/<wnid>/<wnid>_<n>.xml``
for the annotated fraction (pixels, max exclusive, bounding exactly the object's pixels),
``OUT/classes.txt``, ``OUT/synth.json`` (the parameters) and, with ``val_per_class``,
``OUT/val`` and ``OUT/val_bboxes``. The recipe is the one that made a deja vu gap measurable on
a CPU.
"""

from __future__ import annotations

import colorsys
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dejavu import DejavuError
from dejavu.data.annotations import voc_xml_string
from dejavu.io import atomic_write_json, atomic_write_text, check_can_write, write_error
from dejavu.utils import progress

SHAPES = (
    "disc", "square", "triangle", "plus", "ring",
    "diamond", "cross", "bars", "ell", "frame",
)  # fmt: skip

# Ten well-separated base colours; more classes get evenly spaced hues.
_BASE_COLOURS = np.array(
    [
        [0.90, 0.10, 0.10], [0.10, 0.70, 0.15], [0.15, 0.25, 0.95], [0.95, 0.85, 0.10],
        [0.85, 0.15, 0.85], [0.10, 0.85, 0.90], [0.95, 0.55, 0.05], [0.55, 0.25, 0.05],
        [0.55, 0.55, 0.95], [0.05, 0.40, 0.35],
    ]
)  # fmt: skip


# SynthConfig fields that are also flags of ``dejavu data synth`` (the rest: --set key=value)
SYNTH_FLAGS = ("classes", "per_class", "val_per_class", "size", "annotated_fraction", "seed")


@dataclass(frozen=True)
class SynthConfig:
    """The synthetic dataset's recipe (``dejavu data synth``: flags, ``--config``, ``--set``)."""

    classes: int = field(default=10, metadata={"help": "number of classes"})
    per_class: int = field(default=300, metadata={"help": "train images per class"})
    size: int = field(default=32, metadata={"help": "image side in pixels"})
    annotated_fraction: float = field(
        default=0.4, metadata={"help": "fraction of images with a bounding-box file (like ImageNet)"}
    )
    val_per_class: int = field(default=0, metadata={"help": "held-out images per class written to OUT/val"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    box_min: float = 0.5  # object box side, fraction of the image side
    box_max: float = 0.62
    pattern_weight: float = 0.6  # image-specific component; scene colour gets the rest
    scene_class_prob: float = 0.3
    noise: float = 0.02
    colour_jitter: float = 0.05  # per-image variation of the object colour
    jpeg_quality: int = 95
    # The attack's crop threshold for this dataset, in its own pixels (ImageNet: 100 px), written
    # to synth.json so the attack uses it at any model resolution; None: synth_min_crop_px(size).
    min_crop_px: int | None = None

    def validate(self) -> None:
        if self.classes < 2:
            raise DejavuError("synth: --classes must be >= 2")
        if self.per_class < 1:
            raise DejavuError("synth: --per-class must be >= 1")
        if self.size < 16:
            raise DejavuError("synth: --size must be >= 16 pixels")
        if not 0.0 <= self.annotated_fraction <= 1.0:
            raise DejavuError("synth: --annotated-fraction must be in [0, 1]")
        if not 0.0 < self.box_min <= self.box_max < 1.0:
            raise DejavuError("synth: need 0 < box_min <= box_max < 1")
        if self.min_crop_px is not None and not 0 <= self.min_crop_px < self.size:
            raise DejavuError(f"synth: min_crop_px must be in [0, size), got {self.min_crop_px}")


def synth_min_crop_px(size: int) -> int:
    """The synthetic default's crop threshold: a quarter of the image side (8 px at 32 px).

    The object box covers 50-62% of the side flush with one edge, leaving 12-16 px strips
    at 32 px: ImageNet's 100/224 ratio (14 px) would leave most images unattackable."""
    return max(1, int(size) // 4)


def wnid(c: int) -> str:
    """A WordNet-id-like class folder name."""
    return f"n9{c:07d}"


def class_colour(c: int) -> np.ndarray:
    if c < len(_BASE_COLOURS):
        return _BASE_COLOURS[c]
    h = (c * 0.61803398875) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, 0.85, 0.9))


def class_name(c: int) -> str:
    return f"{SHAPES[c % len(SHAPES)]}_{c}"


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if shape == "disc":
        return u**2 + v**2 <= 1.0
    if shape == "square":
        return (au <= 1) & (av <= 1)
    if shape == "triangle":
        return au <= (v + 1) / 2 + 1e-9
    if shape == "plus":
        return (au <= 0.3) | (av <= 0.3)
    if shape == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if shape == "diamond":
        return au + av <= 1.0 + 1e-9
    if shape == "cross":
        return np.abs(au - av) <= 0.3
    if shape == "bars":
        return au >= 0.4
    if shape == "ell":
        return (u <= -0.4) | (v >= 0.4)
    if shape == "frame":
        return np.maximum(au, av) >= 0.6
    raise ValueError(shape)


def _object_alpha(shape: str, w: int, h: int, ss: int = 4) -> np.ndarray:
    """Coverage in [0, 1] of each of the ``h x w`` pixels, by ss x ss supersampling."""
    xs = (np.arange(w * ss) + 0.5) / (w * ss) * 2 - 1
    ys = (np.arange(h * ss) + 0.5) / (h * ss) * 2 - 1
    u, v = np.meshgrid(xs, ys)
    m = _shape_mask(shape, u, v).astype(np.float32)
    return m.reshape(h, ss, w, ss).mean(axis=(1, 3))


def render(
    cfg: SynthConfig, c: int, rng: np.random.Generator, draw_object: bool = True
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One image (H, W, 3) uint8 and its tight box (xmin, ymin, xmax, ymax), xmax/ymax exclusive.

    ``draw_object=False`` renders the same background without the object (for tests).

    Args:
        cfg: the generator's settings (size, noise, box range, ...).
        c: the class id (chooses shape and colour).
        rng: the image's own generator (its draws fix the image).
        draw_object: paint the object.

    Returns:
        ``(image, box)``.
    """
    S = cfg.size
    # image-specific pattern: a random 4x4 binary tile, 2 colours, random offset
    cell = max(1, S // 16)
    tile = rng.integers(0, 2, size=(4, 4))
    c0, c1 = rng.uniform(0.2, 0.8, size=(2, 3))
    period = 4 * cell
    oy, ox = rng.integers(0, period, size=2)
    yy = ((np.arange(S) + oy) // cell) % 4
    xx = ((np.arange(S) + ox) // cell) % 4
    bits = tile[yy[:, None], xx[None, :]][..., None]
    pattern = np.where(bits == 1, c1, c0)
    scene_c = c if rng.random() < cfg.scene_class_prob else int(rng.integers(0, cfg.classes))
    scene = class_colour(scene_c)
    img = cfg.pattern_weight * pattern + (1 - cfg.pattern_weight) * scene

    # the object: box of 0.5-0.62 of the side, flush with a random side
    bw = int(round(rng.uniform(cfg.box_min, cfg.box_max) * S))
    bh = int(round(rng.uniform(cfg.box_min, cfg.box_max) * S))
    side = int(rng.integers(0, 4))  # 0 left, 1 right, 2 top, 3 bottom
    if side in (0, 1):
        x0 = 0 if side == 0 else S - bw
        y0 = int(rng.integers(0, S - bh + 1))
    else:
        y0 = 0 if side == 2 else S - bh
        x0 = int(rng.integers(0, S - bw + 1))
    alpha = _object_alpha(SHAPES[c % len(SHAPES)], bw, bh)
    shown = alpha if draw_object else np.zeros_like(alpha)
    colour = np.clip(class_colour(c) + rng.normal(0, cfg.colour_jitter, size=3), 0, 1)
    region = img[y0 : y0 + bh, x0 : x0 + bw]
    img[y0 : y0 + bh, x0 : x0 + bw] = region * (1 - shown[..., None]) + colour * shown[..., None]
    img = img + rng.normal(0, cfg.noise, size=img.shape)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    ys, xs = np.nonzero(alpha > 0)
    box = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    return out, box


def _write_class(args: tuple[SynthConfig, str, int, int, str]) -> int:
    try:
        return _write_class_files(*args)
    except OSError as e:  # a read-only or full disk: one line naming the file
        raise write_error(e.filename or args[1], e) from None


def _write_class_files(cfg: SynthConfig, out: str, split_id: int, c: int, split: str) -> int:
    out_p = Path(out)
    n = cfg.per_class if split == "train" else cfg.val_per_class
    img_dir = out_p / split / wnid(c)
    ann_dir = out_p / ("bboxes" if split == "train" else "val_bboxes") / "Annotation" / wnid(c)
    img_dir.mkdir(parents=True, exist_ok=True)
    # exactly round(F * n) annotated images per class, at random positions
    sel_rng = np.random.default_rng([cfg.seed, split_id, c, 1_000_003])
    n_ann = int(round(cfg.annotated_fraction * n))
    annotated = np.zeros(n, dtype=bool)
    annotated[sel_rng.choice(n, size=n_ann, replace=False)] = True
    if n_ann:
        ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, split_id, c, i])
        arr, box = render(cfg, c, rng)
        stem = f"{wnid(c)}_{i}"
        Image.fromarray(arr).save(img_dir / f"{stem}.JPEG", quality=cfg.jpeg_quality)
        if annotated[i]:
            xml = voc_xml_string(f"{stem}", wnid(c), cfg.size, cfg.size, [box], wnid(c))
            (ann_dir / f"{stem}.xml").write_text(xml)
    return n


def generate(out: str | os.PathLike, cfg: SynthConfig = SynthConfig(), force: bool = False, workers: int = 1) -> Path:
    """Write the synthetic dataset to ``out``; deterministic in ``cfg`` (any ``workers``).

    Args:
        out: the dataset root; gets ``train/``, ``bboxes/Annotation/``, ``val/`` and
            ``val_bboxes/Annotation/`` (when ``cfg.val_per_class`` > 0), ``classes.txt``
            and ``synth.json``.
        cfg: the generator's settings.
        force: overwrite an existing non-empty ``out`` (its four subfolders are removed first).
        workers: processes, one class at a time each.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: ``out`` is not empty and ``force`` is False, or ``cfg`` is invalid.
    """
    cfg.validate()
    out = check_can_write(Path(out), force=force)
    if out.exists() and force:
        for sub in ("train", "bboxes", "val", "val_bboxes"):
            shutil.rmtree(out / sub, ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(out, e) from None

    jobs = [(cfg, str(out), 0, c, "train") for c in range(cfg.classes)]
    if cfg.val_per_class > 0:
        jobs += [(cfg, str(out), 1, c, "val") for c in range(cfg.classes)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            for _ in progress(ex.map(_write_class, jobs), desc="synth", total=len(jobs), unit="class"):
                pass
    else:
        for job in progress(jobs, desc="synth", unit="class"):
            _write_class(job)
    atomic_write_text(out / "classes.txt", "".join(f"{wnid(c)} {class_name(c)}\n" for c in range(cfg.classes)))
    meta = {
        **asdict(cfg),
        "min_crop_px": cfg.min_crop_px if cfg.min_crop_px is not None else synth_min_crop_px(cfg.size),
    }
    atomic_write_json(out / "synth.json", {"generator": "dejavu.data.synth", **meta})
    return out
