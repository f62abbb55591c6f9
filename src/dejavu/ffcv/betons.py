"""Writing and reading ``.beton`` files (the original's write_ffcv_dataset.py,
gen_betons.sh, gen_val_beton.sh and its bounding-box-crop betons).

Files written by :func:`write_betons` into ``OUT``:

* ``<npc>_per_class_{A,B}.beton`` -- the training sets ``train_{A,B}.npy``;
* ``val.beton`` -- the partition's ``val_set.npy``;
* ``<npc>_per_class_bbox_{A,B}.beton`` -- the attacked sets ``bbox_{A,B}.npy``: per image
  the periphery crop of :mod:`dejavu.attack.crops` (or the whole image when it has none),
  with ``valid`` = 1 (crop) or -1 (no attackable crop), as the original's ``good`` flag.

Every beton holds ``image`` (RGB, JPEG quality ``quality``, longer side at most
``max_res``), ``label`` and ``index`` (the global ImageFolder index), in the order of its
index file; crop betons add ``valid`` and the crop box ``x0 y0 x1 y1`` in pixels of the
original image. A ``<name>.beton.json`` beside each records how it was made (fingerprint,
index file, options, crop counts). Betons are written under a temporary name and renamed
when complete.

Readers check contents, not names: :func:`check_beton` compares a beton's labels (and
indices, when it has them) with the dataset, so betons of the original code work too.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, UsageError, __version__, formats
from dejavu.attack.config import AttackConfig
from dejavu.attack.crops import OLD_SEARCH_KEY, PERIPHERY_SEARCHES, compute_crops, old_search_name, resolve_min_crop_px
from dejavu.config import check_choices
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.ffcv import require_ffcv
from dejavu.io import atomic_write_json
from dejavu.partition import Partition, load_index_file
from dejavu.utils import progress

FORMAT = formats.BETON
KINDS = ("train", "val", "bbox")
BOX_FIELDS = ("x0", "y0", "x1", "y1")


@dataclass
class BetonOptions:
    """How images are stored, and the crop of bbox betons (as ``dejavu attack``'s flags)."""

    max_res: int = 512
    quality: int = 90
    write_mode: str = field(default="jpg", metadata={"choices": ("jpg", "raw")})
    workers: int = 1
    periphery_search: str = field(default="paper", metadata={"choices": tuple(PERIPHERY_SEARCHES)})
    min_crop_px: float | None = None  # None: the dataset's own (default_min_crop_px; 100 for ImageNet)

    def validate(self) -> None:
        """Every value allowed: the fields' choices (the one check, :mod:`dejavu.config`), then ranges."""
        check_choices(self)
        if self.max_res < 1 or not 1 <= self.quality <= 100 or self.workers < 1:
            raise UsageError(
                f"need --max-res >= 1, 1 <= --quality <= 100 and --workers >= 1 "
                f"(got {self.max_res}, {self.quality}, {self.workers})"
            )

    def record(self) -> dict[str, Any]:
        """The options as a beton's ``.json`` records them: the spelling of format ``dejavu-beton/1``
        (``crop_algo: periphery | largest-empty`` for the periphery search)."""
        old = {"periphery_search": (OLD_SEARCH_KEY, old_search_name(self.periphery_search))}
        return dict(old.get(k, (k, v)) for k, v in asdict(self).items())


def beton_name(kind: str, npc: int | None = None, which: str = "") -> str:
    """File name of a beton: ``300_per_class_A.beton``, ``val.beton``, ``300_per_class_bbox_A.beton``.

    Args:
        kind: ``"train"``, ``"bbox"`` or ``"val"``.
        npc: images per class (not used for ``val``).
        which: ``"A"`` or ``"B"`` (not used for ``val``).

    Returns:
        The file name (no folder).
    """
    if kind == "val":
        return "val.beton"
    return f"{npc}_per_class_{'bbox_' if kind == 'bbox' else ''}{which}.beton"


# ----------------------------------------------------------------------------- writing


class _Samples:
    """Indexable source for ``ffcv.writer.DatasetWriter`` (forked into its workers).

    Sample ``j`` is image ``idx[j]``: ``(image, label, index)``, plus ``(valid, x0, y0, x1,
    y1)`` when ``boxes`` is given (a row of -1 = no crop: the whole image, valid -1).
    A failing image does not raise (ffcv's writer would then wait forever for it): the
    error is appended to ``err_path`` and a 1x1 placeholder written; the caller refuses
    the file afterwards."""

    def __init__(self, index: DatasetIndex, idx: np.ndarray, boxes: np.ndarray | None, err_path: str):
        self.index, self.idx, self.boxes, self.err_path = index, idx, boxes, err_path

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, j: int) -> tuple:
        g = int(self.idx[j])
        try:
            img = load_rgb(self.index.path(g))
        except Exception as e:
            with open(self.err_path, "a") as f:
                f.write(f"{self.index.path(g)}: cannot read image ({e})\n".replace("\n", " ").strip() + "\n")
            img = None
        arr = np.zeros((1, 1, 3), np.uint8) if img is None else np.asarray(img)
        sample: tuple = (arr, int(self.index.targets[g]), g)
        if self.boxes is None:
            return sample
        b = [int(v) for v in self.boxes[j]]
        if b[0] < 0 or img is None:
            return (*sample, -1, 0, 0, arr.shape[1], arr.shape[0])
        x0, y0, x1, y1 = (int(v) for v in b)
        return (np.asarray(img.crop((x0, y0, x1, y1))), *sample[1:], 1, *b)


def _fields(opts: BetonOptions, crops: bool) -> dict[str, Any]:
    from ffcv.fields import IntField, RGBImageField

    fields: dict[str, Any] = {
        "image": RGBImageField(write_mode=opts.write_mode, max_resolution=opts.max_res, jpeg_quality=opts.quality),
        "label": IntField(),
        "index": IntField(),
    }
    if crops:
        fields.update({name: IntField() for name in ("valid", *BOX_FIELDS)})
    return fields


@contextlib.contextmanager
def _labelled_progress(desc: str) -> Iterator[None]:
    """ffcv's writer draws an unlabelled tqdm bar; swap in ours (labelled, and off with
    DEJAVU_NO_PROGRESS=1) for the duration of one write."""
    import ffcv.writer as fw

    old = fw.tqdm
    fw.tqdm = lambda total: progress(None, desc=desc, total=total)  # type: ignore[arg-type]
    try:
        yield
    finally:
        fw.tqdm = old


def write_beton(
    path: Path,
    index: DatasetIndex,
    idx: np.ndarray,
    opts: BetonOptions,
    boxes: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write one beton atomically (temporary name, then rename) and its ``.json`` record.

    Args:
        path: final file name.
        index: the dataset.
        idx: global indices, in beton order.
        opts: storage options.
        boxes: ``(len(idx), 4)`` crop boxes (rows of -1: no crop) for a crop beton.
        meta: extra fields for the ``.json`` record.

    Returns:
        ``path``.
    """
    require_ffcv("dejavu betons")
    from ffcv.writer import MIN_PAGE_SIZE, DatasetWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    errs = path.with_name(f".{path.name}.{os.getpid()}.errors")
    errs.unlink(missing_ok=True)
    try:
        src = _Samples(index, idx, boxes, str(errs))
        with _labelled_progress(f"write {path.name}"):
            # small sets: ffcv's smallest page (2 MiB) instead of its default 8 MiB per page
            page = MIN_PAGE_SIZE if len(idx) < 2000 else 4 * MIN_PAGE_SIZE
            writer = DatasetWriter(str(tmp), _fields(opts, boxes is not None), page_size=page, num_workers=opts.workers)
            writer.from_indexed_dataset(src, chunksize=max(1, min(100, len(idx) // (4 * opts.workers))))
        if errs.exists():
            lines = errs.read_text().splitlines()
            raise DejavuError(f"{lines[0]}; {len(lines)} image(s) failed, {path} not written")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        errs.unlink(missing_ok=True)
    record = {
        "format": FORMAT,
        "dejavu_version": __version__,
        "file": path.name,
        "num_images": len(idx),
        "fields": list(_fields(opts, boxes is not None)),
        "options": opts.record(),
        "fingerprint": index.fingerprint.to_dict(),
        "bytes": path.stat().st_size,
        **(meta or {}),
    }
    atomic_write_json(path.with_name(path.name + ".json"), record)
    return path


@dataclass
class _PlannedBeton:
    name: str
    kind: str
    npc: int | None
    which: str
    source: str  # the index file, relative to the partition


def plan_betons(npcs: list[int], kinds: list[str]) -> list[_PlannedBeton]:
    """The betons of ``npcs`` and ``kinds``, in writing order.

    Args:
        npcs: images per class of the partition's splits.
        kinds: any of ``"train"``, ``"bbox"`` (A and B each) and ``"val"``.

    Returns:
        One job per beton: its file name, kind, npc, set and index file (relative to the
        partition), per npc train then bbox, ``val.beton`` last.
    """
    jobs = []
    for npc in npcs:
        for kind in ("train", "bbox"):
            if kind in kinds:
                jobs += [
                    _PlannedBeton(
                        beton_name(kind, npc, w),
                        kind,
                        npc,
                        w,
                        f"{npc}_per_class/{'bbox' if kind == 'bbox' else 'train'}_{w}.npy",
                    )
                    for w in "AB"
                ]
    if "val" in kinds:
        jobs.append(_PlannedBeton("val.beton", "val", None, "", "val_set.npy"))
    return jobs


def _crop_boxes(
    index: DatasetIndex, paths: DataPaths, idx: np.ndarray, opts: BetonOptions, desc: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per image of ``idx``: its crop box, or -1s; plus the crop counts and settings."""
    min_px = resolve_min_crop_px(opts.min_crop_px, paths.images)
    cfg = AttackConfig(crop="periphery", periphery_search=opts.periphery_search)
    sc = compute_crops(index, paths.annotation_dir, idx, cfg, min_px, desc=desc)
    boxes = np.full((len(idx), 4), -1, np.int64)
    pos = {int(g): j for j, g in enumerate(idx)}
    for g, b in zip(sc.indices.tolist(), sc.boxes):
        boxes[pos[g]] = b
    info = {
        "crop": {
            "algo": old_search_name(opts.periphery_search),
            "min_crop_px": min_px,
            "counts": sc.counts,
            "annotation_error_examples": sc.errors[:20],
        }
    }
    return boxes, info


def write_betons(
    paths: DataPaths,
    partition: str | os.PathLike,
    npcs: list[int],
    out: str | os.PathLike,
    opts: BetonOptions | None = None,
    kinds: list[str] | None = None,
    force: bool = False,
    skip_existing: bool = False,
) -> list[Path]:
    """Write the betons of a partition (module docstring); returns the files written.

    Refuses (before writing anything) when a target exists, unless ``force`` (overwrite)
    or ``skip_existing`` (keep it).

    Args:
        paths: the dataset's images (and boxes, needed for ``bbox``).
        partition: the partition folder (its fingerprint must match the dataset's).
        npcs: images per class of the splits to write.
        out: the output folder.
        opts: resolution, JPEG quality, write mode, crop settings (default: :class:`BetonOptions`).
        kinds: any of :data:`KINDS` (default: all).
        force: overwrite existing betons.
        skip_existing: keep existing betons and write only the missing ones.

    Returns:
        The paths of the betons written, in :func:`plan_betons` order.

    Raises:
        UsageError: bad options or ``kinds``, or ``bbox`` without bounding boxes.
        DejavuError: FFCV missing, an unknown npc, a fingerprint mismatch, or an existing beton
            without ``force``/``skip_existing``.
    """
    opts = opts or BetonOptions()
    opts.validate()
    kinds = list(kinds or KINDS)
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise UsageError(f"--sets: unknown {', '.join(bad)}; choose from {', '.join(KINDS)}")
    require_ffcv("dejavu betons")
    out = Path(out)
    index = scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    missing = sorted(set(npcs) - set(part.npcs))
    if missing:
        raise DejavuError(f"{part.root}: no {missing[0]}_per_class split (have {part.npcs}); check --npc")
    if "bbox" in kinds and paths.annotation_dir is None:
        raise UsageError(
            "bbox betons need bounding boxes: pass --bboxes DIR or --data ROOT (or leave bbox out of --sets)"
        )
    jobs = plan_betons(npcs, kinds)
    exists = [j for j in jobs if (out / j.name).exists()]
    if exists and not (force or skip_existing):
        raise DejavuError(
            f"{out / exists[0].name}: already exists; pass --force to overwrite or --skip-existing to keep it"
        )
    if skip_existing and not force:
        jobs = [j for j in jobs if j not in exists]
    written = []
    for j in jobs:
        idx = load_index_file(part.root / j.source, index)
        meta: dict[str, Any] = {
            "kind": j.kind,
            "npc": j.npc,
            "set": j.which or None,
            "index_file": str(part.root / j.source),
            "partition": str(part.root),
        }
        boxes = None
        if j.kind == "bbox":
            boxes, info = _crop_boxes(index, paths, idx, opts, desc=f"crops {j.name}")
            meta.update(info)
        written.append(write_beton(out / j.name, index, idx, opts, boxes, meta))
    return written


# ----------------------------------------------------------------------------- reading


class BetonFile:
    """Random access to the samples of a beton without a Loader: metadata columns and
    images decoded with PIL (used by the attack and the tests; training uses
    :mod:`dejavu.ffcv.loader`). Picklable: the file is mapped lazily per process."""

    def __init__(self, path: str | os.PathLike):
        require_ffcv("reading a .beton")
        from ffcv.reader import Reader

        self.path = Path(path)
        if not self.path.is_file():
            raise DejavuError(f"{self.path}: beton not found")
        try:
            r = Reader(str(self.path))
        except (AssertionError, ValueError, IndexError, OSError) as e:
            raise DejavuError(f"{self.path}: not a readable .beton file ({e})") from None
        self.fields = list(r.field_names)
        self.metadata = r.metadata
        self._col = dict(zip(self.fields, self.metadata.dtype.names))  # ffcv names columns f0, f1, ...
        if "image" not in self.fields or "label" not in self.fields:
            raise DejavuError(f"{self.path}: a beton of images needs fields image and label, has {self.fields}")
        table = np.sort(r.alloc_table, order="ptr")
        self._ptrs, self._sizes = table["ptr"].astype(np.int64), table["size"].astype(np.int64)
        self._mm: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.metadata)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mm": None}

    def column(self, name: str) -> np.ndarray:
        """An integer field of every sample (``label``, ``index``, ``valid``, ``x0`` ...)."""
        if name not in self.fields:
            raise DejavuError(f"{self.path}: no field {name!r} (has {', '.join(self.fields)})")
        return np.asarray(self.metadata[self._col[name]], dtype=np.int64)

    def image(self, i: int):
        """Sample ``i``'s image as an RGB PIL image (JPEG decoded by PIL)."""
        from PIL import Image

        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        mode, w, h, ptr = (
            int(v) for v in self.metadata[self._col["image"]][int(i)][["mode", "width", "height", "data_ptr"]]
        )
        if mode == 1:  # raw
            return Image.fromarray(np.asarray(self._mm[ptr : ptr + w * h * 3]).reshape(h, w, 3))
        k = int(np.searchsorted(self._ptrs, ptr))
        if k >= len(self._ptrs) or self._ptrs[k] != ptr:
            raise DejavuError(f"{self.path}: sample {i} points outside the allocation table (corrupt file?)")
        with Image.open(io.BytesIO(self._mm[ptr : ptr + self._sizes[k]].tobytes())) as im:
            return im.convert("RGB")


def check_beton(bf: BetonFile, index: DatasetIndex, idx: np.ndarray, what: str) -> None:
    """Refuse a beton whose samples are not ``idx`` in order (labels, and indices when stored).

    Args:
        bf: the opened beton.
        index: the dataset (labels come from its targets).
        idx: int64 dataset indices the beton must hold, in order.
        what: names the index file in messages.

    Raises:
        DejavuError: a different sample count, or a label (or stored index) that differs.
    """
    idx = np.asarray(idx, np.int64)
    if len(bf) != len(idx):
        raise DejavuError(
            f"{bf.path}: holds {len(bf)} images but {what} has {len(idx)}; "
            "write it from this index file with dejavu betons"
        )
    checks = [("label", index.targets[idx])] + ([("index", idx)] if "index" in bf.fields else [])
    for name, want in checks:
        got = bf.column(name)
        bad = np.flatnonzero(got != want)
        if len(bad):
            j = int(bad[0])
            raise DejavuError(
                f"{bf.path}: sample {j} has {name} {int(got[j])} but {what} expects "
                f"{int(want[j])}; the beton was written for other images"
            )


class BetonCrops:
    """``(transform(crop), position)`` for the valid samples of a bbox beton that match the
    attack's own crop decisions (global ``indices`` and pixel ``boxes``, in order)."""

    def __init__(self, path: str | os.PathLike, indices: np.ndarray, boxes: np.ndarray, transform: Callable):
        self.bf = BetonFile(path)
        for name in ("index", "valid", *BOX_FIELDS):
            self.bf.column(name)  # raises when missing
        valid = np.flatnonzero(self.bf.column("valid") > 0)
        got_idx = self.bf.column("index")[valid]
        got_boxes = np.stack([self.bf.column(n)[valid] for n in BOX_FIELDS], 1) if len(valid) else np.zeros((0, 4))
        same = len(valid) == len(indices) and np.array_equal(got_idx, indices) and np.array_equal(got_boxes, boxes)
        if not same:
            raise DejavuError(
                f"{self.bf.path}: its crops differ from this attack's ({len(valid)} valid crops vs "
                f"{len(indices)}); it was written for another set, crop algorithm or min crop "
                "size: rewrite it with dejavu betons (same --min-crop-px/--periphery-search), or drop "
                "--crops-betons"
            )
        self.positions = valid
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        return self.transform(self.bf.image(int(self.positions[i]))), i


@dataclass(frozen=True)
class BetonCropDatasets:
    """The crops of sets A and B from ``FOLDER/<npc>_per_class_bbox_{A,B}.beton``: the
    ``crop_datasets`` of :func:`dejavu.attack.run.attack` (a :class:`dejavu.attack.search.CropDatasets`)."""

    folder: str
    npc: int

    def __call__(self, which: str, indices: np.ndarray, boxes: np.ndarray, transform: Callable) -> BetonCrops:
        """The :class:`BetonCrops` of set ``which`` (A/B) holding exactly the attack's crops ``indices``
        (int64 dataset indices) and ``boxes`` (pixels ``x0 y0 x1 y1``), in order; each item
        ``(transform(crop), position)``.

        Raises:
            DejavuError: the beton is missing, lacks the crop fields, or holds other crops.
        """
        return BetonCrops(Path(self.folder) / beton_name("bbox", self.npc, which), indices, boxes, transform)


def crop_datasets(cfg: AttackConfig) -> BetonCropDatasets | None:
    """The crop source ``cfg.crops_betons`` names (None when unset): what every caller of
    :func:`dejavu.attack.run.attack` passes as ``crop_datasets`` (``dejavu attack --crops-betons``).

    Raises:
        DejavuError: ``crops_betons`` set without ffcv (the install command named), before any work.
    """
    if not cfg.crops_betons:
        return None
    require_ffcv("--crops-betons")
    return BetonCropDatasets(cfg.crops_betons, cfg.npc)
