"""The global index of a dataset: ``torchvision.datasets.ImageFolder`` order.

Why our own scanner instead of instantiating ``ImageFolder``: it gives the
relative paths (needed for annotation look-up and the fingerprint) without
importing torch, and lists each class folder once (ImageNet: 1.28M files in
seconds). ``tests/data/test_imagefolder.py`` checks that the order is identical
to ``torchvision.datasets.folder.make_dataset``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, UsageError
from dejavu.io import abspath

# torchvision.datasets.folder.IMG_EXTENSIONS, compared case-insensitively as torchvision does.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a dataset's index order: classes, file count, hash of sorted relative paths."""

    num_classes: int
    num_files: int
    classes_sha256: str
    paths_sha256: str

    @property
    def id(self) -> str:
        """Short identifier, stable across machines (depends only on names and order)."""
        h = hashlib.sha256(f"{self.num_classes}|{self.num_files}|{self.classes_sha256}|{self.paths_sha256}".encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "num_classes": self.num_classes,
            "num_files": self.num_files,
            "classes_sha256": self.classes_sha256,
            "paths_sha256": self.paths_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fingerprint:
        """The fingerprint a file recorded; a malformed one is a :class:`DejavuError`."""
        try:
            return cls(
                num_classes=int(d["num_classes"]),
                num_files=int(d["num_files"]),
                classes_sha256=str(d["classes_sha256"]),
                paths_sha256=str(d["paths_sha256"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            raise DejavuError(f"malformed dataset fingerprint {str(d)[:80]}") from None

    def check(self, other: Fingerprint | dict[str, Any], what: str = "index file") -> None:
        """Raise a clear error when an artifact was made on another dataset.

        Args:
            other: the fingerprint the artifact recorded (or its dict form).
            what: names the artifact in the message.

        Raises:
            DejavuError: the fingerprints' ids differ.
        """
        if isinstance(other, dict):
            other = Fingerprint.from_dict(other)
        if other.id != self.id:
            raise DejavuError(
                f"{what} was made on dataset {other.id} ({other.num_files} files, "
                f"{other.num_classes} classes) but this dataset is {self.id} "
                f"({self.num_files} files, {self.num_classes} classes)"
            )


@dataclass
class DatasetIndex:
    """Images of an ImageFolder tree in ImageFolder order."""

    root: Path
    classes: list[str]
    relpaths: list[str]  # relative to root, '/'-separated
    targets: np.ndarray  # int64 class index per image
    fingerprint: Fingerprint = field(init=False)

    def __post_init__(self) -> None:
        ch = hashlib.sha256("\n".join(self.classes).encode()).hexdigest()
        ph = hashlib.sha256("\n".join(self.relpaths).encode()).hexdigest()
        self.fingerprint = Fingerprint(len(self.classes), len(self.relpaths), ch, ph)

    def __len__(self) -> int:
        return len(self.relpaths)

    def path(self, i: int) -> Path:
        return self.root / self.relpaths[int(i)]

    @cached_property
    def stems(self) -> list[str]:
        """File name without extension (e.g. ``n01440764_10026``): the annotation key."""
        return [os.path.splitext(p.rsplit("/", 1)[-1])[0] for p in self.relpaths]

    @cached_property
    def class_slices(self) -> list[slice]:
        """Images of class c are the contiguous range ``class_slices[c]`` (ImageFolder order)."""
        starts = np.searchsorted(self.targets, np.arange(len(self.classes) + 1))
        return [slice(int(starts[c]), int(starts[c + 1])) for c in range(len(self.classes))]

    def check_indices(self, idx: np.ndarray, what: str) -> np.ndarray:
        """Check an array of dataset indices against this dataset.

        Args:
            idx: the indices.
            what: names the array (e.g. its file) in errors.

        Returns:
            ``idx`` as int64.

        Raises:
            DejavuError: not 1-D integers, empty, or an index outside ``0..len(self)-1``.
        """
        idx = np.asarray(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DejavuError(f"{what}: expected a 1-D integer index array, got {idx.dtype} {idx.shape}")
        if idx.size == 0:
            raise DejavuError(f"{what}: empty index")
        if idx.min() < 0 or idx.max() >= len(self):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise DejavuError(f"{what}: index {bad} out of range for a dataset of {len(self)} images")
        return idx.astype(np.int64)


def _shown(path: str) -> str:
    """``path`` printable whatever its bytes (a name that is not UTF-8 shown escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class _Walk:
    """The dataset walk: symlinked folders are followed (as ImageFolder does) but no folder
    is entered twice, no file is listed twice, and only regular files are images. A folder
    or file reached a second time (a symlink loop, a second link to a folder, a link to an
    image already listed), an image name that is a FIFO, socket, device or broken link, and
    a folder or image name that is not UTF-8 are refused, naming the path: the first would
    list images twice (copies of training images in the public set), the others would block
    or fail later. Plain files cost no ``stat`` (type and inode come from the listing)."""

    def __init__(self, root: str) -> None:
        self.seen: dict[tuple[int, int], str] = {}
        self._once(root, os.stat(root))

    def _once(self, path: str, st: os.stat_result | tuple[int, int]) -> None:
        key = (st.st_dev, st.st_ino) if isinstance(st, os.stat_result) else st
        first = self.seen.setdefault(key, path)
        if first != path:
            raise DejavuError(
                f"{_shown(path)}: the same {'folder' if os.path.isdir(path) else 'file'} as {_shown(first)} "
                "(a symlink loop or a second link): its images would be listed twice; remove the link"
            )

    @staticmethod
    def _utf8(e: os.DirEntry) -> None:
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            raise DejavuError(f"{_shown(e.path)}: name is not valid UTF-8; rename it") from None

    def listing(self, path: str) -> list[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DejavuError(f"{_shown(path)}: cannot list folder ({e.strerror})") from None

    def subdir(self, e: os.DirEntry) -> bool:
        """Is ``e`` a folder (through symlinks)? Each is entered once: a second time is an error."""
        if not e.is_dir():
            return False
        self._utf8(e)
        self._once(e.path, e.stat())
        return True

    def _image(self, e: os.DirEntry, dev: int) -> bool:
        if not e.name.lower().endswith(IMG_EXTENSIONS) or e.is_dir():
            return False
        self._utf8(e)
        if not e.is_file():
            raise DejavuError(
                f"{_shown(e.path)}: not a regular file (a FIFO, socket, device or broken link); "
                "an image must be a file: remove it"
            )
        self._once(e.path, e.stat() if e.is_symlink() else (dev, e.inode()))
        return True

    def images(self, cdir: str) -> list[str]:
        """The image files under ``cdir`` in ``sorted(os.walk(cdir, followlinks=True))`` order."""
        found: list[tuple[str, list[str]]] = []
        stack = [cdir]
        while stack:
            d = stack.pop()
            entries, dev = self.listing(d), os.stat(d).st_dev
            found.append((d, [e.name for e in entries if self._image(e, dev)]))
            stack.extend(e.path for e in entries if self.subdir(e))
        found.sort(key=lambda t: t[0])
        return [os.path.join(d, f) for d, files in found for f in files]


def scan_imagefolder(root: str | os.PathLike) -> DatasetIndex:
    """Index ``root`` in ``torchvision.datasets.ImageFolder``'s order, walked safely
    (:class:`_Walk`: no folder or file twice, regular files only, UTF-8 names)."""
    root = Path(root)
    if not root.is_dir():
        raise DejavuError(f"{root}: image folder not found")
    walk = _Walk(str(root))
    classes = [e.name for e in walk.listing(str(root)) if walk.subdir(e)]
    if not classes:
        raise DejavuError(f"{root}: no class folders (expected ROOT/<class>/<image>)")
    relpaths: list[str] = []
    counts: list[int] = []
    for c in classes:
        files = walk.images(os.path.join(root, c))
        relpaths += [os.path.relpath(f, root).replace(os.sep, "/") for f in files]
        counts.append(len(files))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty and len(empty) < len(classes):
        # torchvision's ImageFolder refuses this too ("Found no valid file for the classes ...")
        raise DejavuError(
            f"{root / empty[0]}: class folder holds no image (extensions "
            f"{', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            + (f" ({len(empty)} such classes)" if len(empty) > 1 else "")
        )
    if not relpaths:
        raise DejavuError(f"{root}: no images found (extensions {', '.join(IMG_EXTENSIONS)})")
    targets = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    return DatasetIndex(root=root, classes=classes, relpaths=relpaths, targets=targets)


@dataclass(frozen=True)
class DataPaths:
    """Where images and boxes live. ``--data ROOT`` means ROOT/train and ROOT/bboxes."""

    images: Path
    bboxes: Path | None = None

    @property
    def annotation_dir(self) -> Path | None:
        if self.bboxes is None:
            return None
        # accept either the folder holding Annotation/ or Annotation/ itself
        if (self.bboxes / "Annotation").is_dir():
            return self.bboxes / "Annotation"
        return self.bboxes

    @classmethod
    def resolve(
        cls,
        data: str | os.PathLike | None = None,
        images: str | os.PathLike | None = None,
        bboxes: str | os.PathLike | None = None,
        need_bboxes: bool = False,
    ) -> DataPaths:
        """The dataset folders from the command line.

        Args:
            data: ROOT of ``--data`` (images ``ROOT/train``, boxes ``ROOT/bboxes`` if present).
            images: the ImageFolder folder (overrides ``ROOT/train``).
            bboxes: the folder holding ``Annotation/`` (or ``Annotation/`` itself).
            need_bboxes: the command needs bounding boxes.

        Returns:
            The checked :class:`DataPaths`.

        Raises:
            UsageError: no images given, or no boxes when ``need_bboxes``.
            DejavuError: a given folder does not exist.
        """
        if data is not None:
            data = Path(data)
            images = images or data / "train"
            if bboxes is None and (data / "bboxes").exists():
                bboxes = data / "bboxes"
        if images is None:
            raise UsageError("no dataset given: pass --data ROOT or --images DIR")
        images = abspath(images)  # recorded in manifests: must work from any folder
        if not images.is_dir():
            raise DejavuError(f"{images}: image folder not found")
        if bboxes is not None:
            bboxes = abspath(bboxes)
            if not bboxes.is_dir():
                raise DejavuError(f"{bboxes}: bounding-box folder not found")
        if need_bboxes and bboxes is None:
            raise UsageError("bounding boxes needed: pass --bboxes DIR (the folder holding Annotation/)")
        return cls(images=images, bboxes=bboxes)


def add_data_args(parser, need_bboxes: bool = False) -> None:
    """The dataset flags every command shares.

    Args:
        parser: the command's parser; gets a "dataset" group with ``--data``, ``--images``
            and ``--bboxes``.
        need_bboxes: mark ``--bboxes`` as required in its help (checked by
            :func:`data_paths_from_args`, not argparse).
    """
    g = parser.add_argument_group("dataset")
    g.add_argument("--data", metavar="ROOT", help="shorthand for --images ROOT/train --bboxes ROOT/bboxes")
    g.add_argument("--images", metavar="DIR", help="ImageFolder train folder (ROOT/<wnid>/<image>)")
    g.add_argument(
        "--bboxes",
        metavar="DIR",
        help="folder holding Annotation/<wnid>/<image>.xml (Pascal VOC)" + (" [required]" if need_bboxes else ""),
    )


def data_paths_from_args(args, need_bboxes: bool = False) -> DataPaths:
    """:meth:`DataPaths.resolve` of the flags of :func:`add_data_args`.

    Args:
        args: the parsed namespace.
        need_bboxes: the command needs bounding boxes.

    Returns:
        The checked :class:`DataPaths`.
    """
    return DataPaths.resolve(args.data, args.images, args.bboxes, need_bboxes=need_bboxes)


def annotated_mask(index: DatasetIndex, annotation_dir: Path | None) -> np.ndarray:
    """Boolean per image: does ``Annotation/<class>/<stem>.xml`` exist?

    Lists each class's annotation folder once instead of one ``stat`` per image.

    Args:
        index: the dataset.
        annotation_dir: the ``Annotation`` folder (``<class>/<stem>.xml``), or None.

    Returns:
        (N,) bool, all False when ``annotation_dir`` is None.
    """
    mask = np.zeros(len(index), dtype=bool)
    if annotation_dir is None:
        return mask
    stems = index.stems
    for c, cname in enumerate(index.classes):
        adir = annotation_dir / cname
        if not adir.is_dir():
            continue
        have = {e.name[:-4] for e in os.scandir(adir) if e.name.endswith(".xml")}
        sl = index.class_slices[c]
        for i in range(sl.start, sl.stop):
            if stems[i] in have:
                mask[i] = True
    return mask


def annotation_path(index: DatasetIndex, annotation_dir: Path, i: int) -> Path:
    """The annotation file of image ``i`` (whether or not it exists).

    Args:
        index: the dataset.
        annotation_dir: the ``Annotation`` folder.
        i: dataset index of the image.

    Returns:
        ``annotation_dir/<class>/<stem>.xml``.
    """
    return annotation_dir / index.classes[int(index.targets[i])] / f"{index.stems[int(i)]}.xml"
