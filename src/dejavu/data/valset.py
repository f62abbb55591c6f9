"""Annotated validation images as a held-out control (``dejavu attack --control VAL``,
docs/DESIGN.md 2.5), in ImageNet's ILSVRC2012 val layouts.

**flat** (as the tar extracts): ``VAL/ILSVRC2012_val_00000001.JPEG``, the class from the box
file's ``<object><name>``; **sorted** into class folders: ``VAL/<wnid>/<image>`` (a box file
naming another wnid is an error). Box files ``<stem>.xml`` are found in ``BOXES``
(``--control-bboxes``, default ``VAL``) as ``BOXES/<stem>.xml``, ``BOXES/<wnid>/<stem>.xml`` or
``BOXES/Annotation/<wnid>/<stem>.xml``; images without one are left out (the periphery crop
needs boxes). Every wnid must be a training class (labels are its indices); images are indexed
class by class, files sorted within a class (ImageFolder's order for the sorted layout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dejavu import DejavuError
from dejavu.data.annotations import AnnotationError, read_voc_xml
from dejavu.data.imagefolder import IMG_EXTENSIONS, DatasetIndex


@dataclass
class ValSet:
    """Annotated validation images: ``index`` (paths and train-class labels), box files."""

    index: DatasetIndex
    ann_paths: list[Path]
    layout: str  # flat | sorted

    def ann_path(self, i: int) -> Path:
        return self.ann_paths[int(i)]

    def halves(self) -> dict[str, np.ndarray]:
        """Two halves playing the roles of A and B: alternate within each class, first to A."""
        return alternate_halves(np.arange(len(self.index.relpaths)), self.index.targets)

    def describe(self) -> dict:
        return {
            "kind": "val",
            "images": str(self.index.root),
            "layout": self.layout,
            "num_images": len(self.index.relpaths),
            "fingerprint": self.index.fingerprint.to_dict(),
        }


def alternate_halves(idx: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Split ``idx`` (sorted) alternately within each class of ``targets[idx]``.

    Args:
        idx: int64 indices (any order; sorted first).
        targets: class of every index position (indexed by ``idx``).

    Returns:
        ``{"A": first, third, ... of each class; "B": second, fourth, ...}``, sorted int64.
    """
    idx = np.sort(np.asarray(idx, dtype=np.int64))
    out: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    for c in np.unique(targets[idx]):
        m = idx[targets[idx] == c]
        out["A"].append(m[0::2])
        out["B"].append(m[1::2])
    return {h: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for h, v in out.items()}


def _box_dirs(boxes: Path) -> list[Path]:
    return [boxes / "Annotation", boxes] if (boxes / "Annotation").is_dir() else [boxes]


def _find_box(dirs: list[Path], wnid: str | None, stem: str) -> Path | None:
    for d in dirs:
        for cand in ((d / f"{stem}.xml"), (d / wnid / f"{stem}.xml") if wnid else None):
            if cand is not None and cand.is_file():
                return cand
    return None


def _xml_wnid(path: Path) -> str:
    try:
        names = {n for n in read_voc_xml(path).names if n}
    except AnnotationError as e:
        raise DejavuError(str(e)) from None
    if len(names) != 1:
        raise DejavuError(f"{path}: expected one class name in <object><name>, found {sorted(names) or 'none'}")
    return names.pop()


def _image_files(folder: Path) -> list[str]:
    """The image names in ``folder``, sorted; one that is not a regular file (a FIFO, socket,
    device or broken link: reading it would block or fail) is refused, naming it."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.lower().endswith(IMG_EXTENSIONS) and not e.is_dir():
                if not e.is_file():
                    raise DejavuError(
                        f"{e.path}: not a regular file (a FIFO, socket, device or broken link); remove it"
                    )
                out.append(e.name)
    return sorted(out)


def scan_valset(images: str | os.PathLike, boxes: str | os.PathLike | None, classes: list[str]) -> ValSet:
    """Index the annotated validation images of ``images`` (module docstring) against the
    training ``classes``.

    Args:
        images: the validation folder (flat ``VAL/<image>`` or sorted ``VAL/<wnid>/<image>``).
        boxes: the box folder (``<stem>.xml``, ``<wnid>/<stem>.xml`` or ``Annotation/...``);
            None: ``images`` itself.
        classes: the training set's class names (wnids), whose indices become the labels.

    Returns:
        The :class:`ValSet` of the images that have a box file, class by class.

    Raises:
        DejavuError: a missing folder, no image or no box file, a wnid that is not a
            training class, a box naming another class than its folder, or an unreadable box.
    """
    root = Path(images)
    if not root.is_dir():
        raise DejavuError(f"{root}: validation image folder not found")
    bdir = Path(boxes) if boxes is not None else root
    if not bdir.is_dir():
        raise DejavuError(f"{bdir}: validation box folder not found")
    dirs = _box_dirs(bdir)
    cls_idx = {c: i for i, c in enumerate(classes)}
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    layout = "sorted" if subdirs else "flat"
    found: list[tuple[str, str | None]] = []  # (relpath, folder wnid)
    if subdirs:
        unknown = [w for w in subdirs if w not in cls_idx]
        if unknown:
            raise DejavuError(
                f"{root / unknown[0]}: class {unknown[0]} is not a class of the training set "
                f"({len(classes)} classes; {len(unknown)} such folder(s))"
            )
        for w in subdirs:
            found += [(f"{w}/{f}", w) for f in _image_files(root / w)]
    else:
        found = [(f, None) for f in _image_files(root)]
    if not found:
        raise DejavuError(f"{root}: no validation images (expected VAL/<image> or VAL/<wnid>/<image>)")
    rel, targets, anns = [], [], []
    for relpath, folder in found:
        stem = os.path.splitext(relpath.rsplit("/", 1)[-1])[0]
        box = _find_box(dirs, folder, stem)
        if box is None:
            continue
        wnid = _xml_wnid(box) if folder is None else folder
        if folder is not None:
            named = _xml_wnid(box)
            if named != folder:
                raise DejavuError(f"{box}: names class {named} but the image is in folder {folder}")
        if wnid not in cls_idx:
            raise DejavuError(f"{box}: class {wnid} is not a class of the training set ({len(classes)} classes)")
        rel.append(relpath)
        targets.append(cls_idx[wnid])
        anns.append(box)
    if not rel:
        raise DejavuError(
            f"{root}: no validation image has a box file in {bdir} "
            f"(expected <stem>.xml, <wnid>/<stem>.xml or Annotation/<wnid>/<stem>.xml)"
        )
    order = np.argsort(np.asarray(targets), kind="stable")  # class-contiguous, sorted within
    index = DatasetIndex(
        root=root, classes=list(classes), relpaths=[rel[i] for i in order], targets=np.asarray(targets, np.int64)[order]
    )
    return ValSet(index, [anns[i] for i in order], layout)
