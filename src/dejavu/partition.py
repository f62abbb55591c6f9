"""Partition a dataset into private sets A and B, a shared set and a public set per
images-per-class ``npc`` (the rule and its invariants: docs/DESIGN.md 2.2), with the
invariants enforced (:func:`check_invariants`).

Optionally a held-out control (``--control N``, :func:`set_aside_control`): annotated images
removed from the public set of every npc, so neither model trains on them and no attack
searches them; attacking them with the same models gives the score of two training runs
without memorization. Files (the original code's names, plus the control and the manifest):
``OUT/<npc>_per_class/{bbox_A,bbox_B,shared,public,train_A,train_B}.npy``, ``OUT/val_set.npy``,
``OUT/control{,_A,_B}.npy`` and ``OUT/manifest.json`` (docs/CONTRACTS.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, UsageError, formats
from dejavu.config import add_config_args, check_choices, config_from_args
from dejavu.data.imagefolder import (
    DataPaths,
    DatasetIndex,
    Fingerprint,
    add_data_args,
    annotated_mask,
    data_paths_from_args,
    scan_imagefolder,
)
from dejavu.io import (
    abspath,
    atomic_save_npy,
    atomic_write_json,
    check_can_write,
    load_npy,
    locks_output,
    read_json,
)

SET_NAMES = ("bbox_A", "bbox_B", "shared", "public", "train_A", "train_B")
CONTROL_FILES = ("control", "control_A", "control_B")


class InvariantError(DejavuError):
    """A partition invariant does not hold."""


@dataclass
class NpcSplit:
    npc: int
    sets: dict[str, np.ndarray]
    short_classes: list[dict[str, Any]] = field(default_factory=list)  # train_A < npc
    bbox_limited: int = 0  # classes whose bbox_A < npc (fewer annotated images than npc)

    def counts(self) -> dict[str, int]:
        return {k: int(len(v)) for k, v in self.sets.items()}


@dataclass
class PartitionResult:
    out: Path
    fingerprint: Fingerprint
    splits: dict[int, NpcSplit]
    val_set: np.ndarray
    val_per_class: int
    classes_without_public: list[str]
    manifest: dict[str, Any]
    control: ControlSplit | None = None


SPLIT_ORDERS = ("shuffle", "sorted")


def class_orders(
    targets: np.ndarray, annotated: np.ndarray, seed: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each class's ``(annotated, other)`` dataset indices in the partition's order.

    Args:
        targets: (N,) class of every dataset image.
        annotated: (N,) bool, True where the image has an annotation file.
        seed: None = ascending indices (the rule of partitions without a ``split`` record);
            an int = class c's annotated images permuted by
            ``numpy.random.default_rng([seed, c]).permutation``, then its other images by
            the same generator.

    Returns:
        One ``(bbox, no_bbox)`` pair of int64 arrays per class id ``0 .. max(targets)``.
    """
    n_classes = int(targets.max()) + 1 if len(targets) else 0
    order = np.argsort(targets, kind="stable")  # indices grouped by class, ascending within
    bounds = np.searchsorted(targets[order], np.arange(n_classes + 1))
    out = []
    for c in range(n_classes):
        idx = order[bounds[c] : bounds[c + 1]]
        bbox, no_bbox = idx[annotated[idx]], idx[~annotated[idx]]
        if seed is not None:
            rng = np.random.default_rng([int(seed), c])
            bbox, no_bbox = bbox[rng.permutation(len(bbox))], no_bbox[rng.permutation(len(no_bbox))]
        out.append((bbox.astype(np.int64), no_bbox.astype(np.int64)))
    return out


def split_class(bbox: np.ndarray, no_bbox: np.ndarray, npc: int) -> dict[str, np.ndarray]:
    """DESIGN 2.2 for one class; ``bbox`` and ``no_bbox`` in the partition's order.

    Args:
        bbox: int64 dataset indices of the class's annotated images (:func:`class_orders`).
        no_bbox: int64 dataset indices of its other images.
        npc: images per class of the training sets.

    Returns:
        ``{name: int64 indices}`` for every name of :data:`SET_NAMES`.
    """
    nb = min(len(bbox) // 2, npc)
    k = npc - nb
    sets = {
        "bbox_A": bbox[:nb],
        "bbox_B": bbox[nb : 2 * nb],
        "shared": no_bbox[:k],
        "public": np.concatenate([bbox[2 * nb :], no_bbox[k:]]),
    }
    sets["train_A"] = np.concatenate([sets["bbox_A"], sets["shared"]])
    sets["train_B"] = np.concatenate([sets["bbox_B"], sets["shared"]])
    return sets


def _example(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.intersect1d(a, b)[0])


def check_invariants(splits: dict[int, NpcSplit], targets: np.ndarray | None = None) -> None:
    """Raise :class:`InvariantError` naming the invariant and an example index.

    Invariants: no duplicates; bbox_A, bbox_B and shared pairwise disjoint; public disjoint
    from train_A ∪ train_B; |bbox_A| = |bbox_B| per class (when ``targets`` is given); each
    npc's public set contains every larger npc's; the attack public set (largest npc) is
    disjoint from the training sets of every npc.

    Args:
        splits: the partition per npc.
        targets: (N,) int64 class of every dataset image, or None to skip the per-class check.

    Raises:
        InvariantError: the first invariant that fails.
    """
    npcs = sorted(splits)
    for npc in npcs:
        s = splits[npc].sets
        for name, arr in s.items():
            if len(np.unique(arr)) != len(arr):
                raise InvariantError(f"{npc}_per_class/{name}: contains duplicate indices")
        if len(np.intersect1d(s["bbox_A"], s["bbox_B"])):
            raise InvariantError(
                f"{npc}_per_class: bbox_A and bbox_B overlap (e.g. index {_example(s['bbox_A'], s['bbox_B'])})"
            )
        for b in ("bbox_A", "bbox_B"):
            if len(np.intersect1d(s[b], s["shared"])):
                raise InvariantError(
                    f"{npc}_per_class: {b} and shared overlap (e.g. index {_example(s[b], s['shared'])})"
                )
        train = np.union1d(s["train_A"], s["train_B"])
        if len(np.intersect1d(s["public"], train)):
            raise InvariantError(
                f"{npc}_per_class: public overlaps train_A/train_B (e.g. index {_example(s['public'], train)})"
            )
        if targets is not None:
            ca = np.bincount(targets[s["bbox_A"]], minlength=targets.max() + 1)
            cb = np.bincount(targets[s["bbox_B"]], minlength=targets.max() + 1)
            if not np.array_equal(ca, cb):
                c = int(np.nonzero(ca != cb)[0][0])
                raise InvariantError(f"{npc}_per_class: |bbox_A| != |bbox_B| for class {c} ({ca[c]} vs {cb[c]})")
    for small, big in zip(npcs, npcs[1:]):
        pb, ps = splits[big].sets["public"], splits[small].sets["public"]
        extra = np.setdiff1d(pb, ps)
        if len(extra):
            raise InvariantError(
                f"public of {big}_per_class is not contained in public of {small}_per_class "
                f"(e.g. index {int(extra[0])})"
            )
    public_big = splits[npcs[-1]].sets["public"]
    for npc in npcs:
        s = splits[npc].sets
        train = np.union1d(s["train_A"], s["train_B"])
        if len(np.intersect1d(public_big, train)):
            raise InvariantError(
                f"attack public set ({npcs[-1]}_per_class) overlaps train of {npc}_per_class "
                f"(e.g. index {_example(public_big, train)})"
            )


def compute_partition(
    targets: np.ndarray, annotated: np.ndarray, npcs: list[int], seed: int | None = None
) -> tuple[dict[int, NpcSplit], np.ndarray, int, list[int]]:
    """Pure function on arrays: per-npc sets, the val set, its per-class count,
    and the classes without any public image.

    Args:
        targets: (N,) class of every dataset image.
        annotated: (N,) bool, True where the image has an annotation file.
        npcs: images per class, e.g. ``[100, 200]`` (sorted, duplicates dropped).
        seed: the within-class order (:func:`class_orders`; None: ascending indices).

    Returns:
        ``(splits, val_set, per, without)``: ``{npc: NpcSplit}`` with sorted int64 dataset
        indices, the val set (int64 indices, from the largest npc's public set), its count per
        class, and the classes (ids) without any public image.

    Raises:
        ValueError: ``targets`` and ``annotated`` differ in length.
        UsageError: ``npcs`` is empty or holds a value < 1.
    """
    targets = np.asarray(targets, dtype=np.int64)
    annotated = np.asarray(annotated, dtype=bool)
    if len(targets) != len(annotated):
        raise ValueError("targets and annotated differ in length")
    if not npcs or min(npcs) < 1:
        raise UsageError("--per-class needs positive integers")
    npcs = sorted(set(int(n) for n in npcs))
    n_classes = int(targets.max()) + 1 if len(targets) else 0
    per_class = class_orders(targets, annotated, seed)

    splits: dict[int, NpcSplit] = {}
    for npc in npcs:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in SET_NAMES}
        short = []
        limited = 0
        for c, (bbox, no_bbox) in enumerate(per_class):
            sets = split_class(bbox, no_bbox, npc)
            for k in SET_NAMES:
                parts[k].append(sets[k])
            nb = len(sets["bbox_A"])
            limited += nb < npc
            if len(sets["train_A"]) < npc:
                short.append(
                    {
                        "class": c,
                        "annotated": int(len(bbox)),
                        "unannotated": int(len(no_bbox)),
                        "bbox_A": nb,
                        "train_A": int(len(sets["train_A"])),
                    }
                )
        sets = {
            k: np.sort(np.concatenate(v)).astype(np.int64) if v else np.zeros(0, np.int64) for k, v in parts.items()
        }
        splits[npc] = NpcSplit(npc, sets, short, limited)

    val_set, per, without = balanced_val(splits[npcs[-1]].sets["public"], targets, n_classes)
    return splits, val_set, per, without


def balanced_val(public: np.ndarray, targets: np.ndarray, n_classes: int) -> tuple[np.ndarray, int, list[int]]:
    """The probe's val set: ``public`` truncated to the same count per class; returns it,
    the count, and the classes without any public image (left out).

    Args:
        public: int64 dataset indices of the public set.
        targets: (N,) class of every dataset image.
        n_classes: number of classes.

    Returns:
        ``(val_set, per, without)``: sorted int64 indices, ``per`` images of each class
        (the smallest public count among classes that have one; the first ``per`` in
        ``public``'s order), and the class ids with no public image.
    """
    pub_counts = np.bincount(targets[public], minlength=n_classes)
    without = [int(c) for c in np.nonzero(pub_counts == 0)[0]]
    have = pub_counts[pub_counts > 0]
    per = int(have.min()) if len(have) else 0
    val = []
    if per:
        pt = targets[public]
        for c in range(n_classes):
            if pub_counts[c]:
                val.append(public[pt == c][:per])
    val_set = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    return val_set, per, without


@dataclass
class ControlSplit:
    """The held-out control set aside from the public set (:func:`set_aside_control`)."""

    all: np.ndarray
    A: np.ndarray
    B: np.ndarray
    per_class: int
    short_classes: list[dict[str, Any]] = field(default_factory=list)  # fewer than per_class available

    def counts(self) -> dict[str, int]:
        return {"control": int(len(self.all)), "control_A": int(len(self.A)), "control_B": int(len(self.B))}


def set_aside_control(
    splits: dict[int, NpcSplit], targets: np.ndarray, annotated: np.ndarray, per_class: int, seed: int | None = None
) -> ControlSplit:
    """Take the first ``per_class`` annotated images of each class of the attack public set
    (that of the largest npc), in the partition's order, as the control, remove them from
    every npc's public set, and split each class alternately (in that order) into halves A
    and B. Mutates ``splits``.

    Args:
        splits: the partition per npc (its ``public`` sets are reduced in place).
        targets: (N,) class of every dataset image.
        annotated: (N,) bool, True where the image has an annotation file.
        per_class: control images per class (>= 1).
        seed: the partition's within-class order (:func:`class_orders`; None: ascending).

    Returns:
        The :class:`ControlSplit` (classes with fewer candidates listed in ``short_classes``).

    Raises:
        UsageError: ``per_class`` < 1.
        DejavuError: too few annotated public images for two non-empty halves.
    """
    if per_class < 1:
        raise UsageError(f"--control must be a positive number of images per class, got {per_class}")
    targets = np.asarray(targets, dtype=np.int64)
    annotated = np.asarray(annotated, dtype=bool)
    public = splits[max(splits)].sets["public"]
    halves: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    short = []
    in_public = np.zeros(len(targets), bool)
    in_public[public] = True
    present = np.bincount(targets, minlength=1) > 0
    for c, (bbox, _) in enumerate(class_orders(targets, annotated, seed)):
        if not present[c]:
            continue
        got = bbox[in_public[bbox]][:per_class]
        if len(got) < per_class:
            short.append({"class": int(c), "control": int(len(got))})
        halves["A"].append(got[0::2])
        halves["B"].append(got[1::2])
    a, b = (np.sort(np.concatenate(halves[h])).astype(np.int64) if halves[h] else np.zeros(0, np.int64) for h in "AB")
    ctrl = np.union1d(a, b).astype(np.int64)
    if len(a) == 0 or len(b) == 0:
        raise DejavuError(
            f"--control {per_class}: the public set holds too few annotated images "
            f"({len(ctrl)}) to set aside a control with two halves"
        )
    for sp in splits.values():
        sp.sets["public"] = np.setdiff1d(sp.sets["public"], ctrl).astype(np.int64)
    return ControlSplit(ctrl, a, b, per_class, short)


def check_control(splits: dict[int, NpcSplit], control: ControlSplit) -> None:
    """Control invariants: halves disjoint and covering it, control ∩ (train_A ∪ train_B) = ∅
    and control ∩ public = ∅ for every npc.

    Args:
        splits: the partition per npc, control already removed.
        control: the control split.

    Raises:
        InvariantError: the first invariant that fails.
    """
    if len(np.intersect1d(control.A, control.B)):
        raise InvariantError(f"control_A and control_B overlap (e.g. index {_example(control.A, control.B)})")
    if not np.array_equal(np.union1d(control.A, control.B), np.sort(control.all)):
        raise InvariantError("control.npy is not the union of control_A.npy and control_B.npy")
    for npc, sp in sorted(splits.items()):
        for name in ("train_A", "train_B", "public"):
            if len(np.intersect1d(control.all, sp.sets[name])):
                raise InvariantError(
                    f"control overlaps {npc}_per_class/{name} (e.g. index {_example(control.all, sp.sets[name])})"
                )


@locks_output("partition")
def partition(
    paths: DataPaths,
    npcs: list[int],
    out: str | os.PathLike,
    force: bool = False,
    index: DatasetIndex | None = None,
    control: int = 0,
    seed: int = 0,
    order: str = "shuffle",
) -> PartitionResult:
    """Scan the dataset, compute the partition, check invariants, write files.

    ``control`` > 0 sets that many annotated public images per class aside as the held-out
    control (:func:`set_aside_control`); the val set is then drawn from the reduced public set.
    ``order`` ``shuffle`` (default) orders each class by a permutation seeded by ``seed``;
    ``sorted`` by ascending index (the rule of partitions without a ``split`` record).

    Args:
        paths: the dataset's images and bounding-box folders (``bboxes`` required).
        npcs: images per class, one split each.
        out: the output folder.
        force: overwrite an existing partition there.
        index: an already scanned dataset (default: scan ``paths.images``).
        control: annotated public images per class set aside as the control (0: none).
        seed: the partition seed (``order: shuffle``).
        order: ``shuffle`` or ``sorted``.

    Returns:
        The :class:`PartitionResult` (sets, val set, manifest, control).

    Raises:
        UsageError: no bounding boxes given, or bad ``npcs`` / ``control``.
        DejavuError: a partition exists in ``out`` without ``force``, the folder is held by
            another process, a write fails, or an invariant fails (:class:`InvariantError`).
    """
    if paths.annotation_dir is None:
        raise UsageError("partition needs bounding boxes: pass --bboxes DIR (the folder holding Annotation/)")
    out = Path(out)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not force:
        raise DejavuError(f"{out}: a partition already exists here; pass --force to overwrite")
    if order not in SPLIT_ORDERS:
        raise UsageError(f"order must be shuffle or sorted, got {order!r}")
    check_can_write(out, force=True)
    index = index or scan_imagefolder(paths.images)
    annotated = annotated_mask(index, paths.annotation_dir)
    oseed = int(seed) if order == "shuffle" else None
    splits, val_set, per, without = compute_partition(index.targets, annotated, npcs, oseed)
    if not len(splits[max(splits)].sets["public"]):  # the attack's public set
        raise DejavuError(
            f"--per-class {max(splits)} leaves no public image (every image of {paths.images} is in a "
            "training set); pass a smaller --per-class"
        )
    ctrl = None
    if control:
        ctrl = set_aside_control(splits, index.targets, annotated, int(control), oseed)
        val_set, per, without = balanced_val(splits[max(splits)].sets["public"], index.targets, len(index.classes))
    check_invariants(splits, index.targets)
    if ctrl is not None:
        check_control(splits, ctrl)
    _write_sets(out, splits, val_set, ctrl)
    manifest = _manifest(paths, index, annotated, splits, val_set, per, without, ctrl)
    manifest["split"] = split_info(order, oseed)
    atomic_write_json(manifest_path, manifest)
    return PartitionResult(
        out, index.fingerprint, splits, val_set, per, [index.classes[c] for c in without], manifest, ctrl
    )


def _write_sets(out: Path, splits: dict, val_set: np.ndarray, ctrl) -> None:
    for npc, sp in splits.items():
        for name, arr in sp.sets.items():
            atomic_save_npy(out / f"{npc}_per_class" / f"{name}.npy", arr)
    atomic_save_npy(out / "val_set.npy", val_set)
    for name in CONTROL_FILES:
        (out / f"{name}.npy").unlink(missing_ok=True)  # --force without --control: no stale control
    if ctrl is not None:
        for name, arr in zip(CONTROL_FILES, (ctrl.all, ctrl.A, ctrl.B)):
            atomic_save_npy(out / f"{name}.npy", arr)


def _manifest(paths, index, annotated, splits, val_set, per, without, ctrl) -> dict[str, Any]:
    """``manifest.json``: the dataset's fingerprint, the sets' counts and the control's."""
    npcs = sorted(splits)
    manifest: dict[str, Any] = {
        "format": formats.PARTITION,
        "fingerprint": index.fingerprint.to_dict(),
        "images": str(paths.images),
        "bboxes": str(paths.bboxes),
        "classes": index.classes,
        "num_images": len(index),
        "num_annotated": int(annotated.sum()),
        "per_class": npcs,
        "attack_public": f"{npcs[-1]}_per_class/public.npy",
        "counts": {str(n): splits[n].counts() for n in npcs},
        "short_classes": {str(n): splits[n].short_classes for n in npcs},
        "bbox_limited_classes": {str(n): splits[n].bbox_limited for n in npcs},
        "val_set": {
            "size": int(len(val_set)),
            "per_class": per,
            "classes_without_public": [index.classes[c] for c in without],
        },
    }
    if ctrl is not None:
        manifest["control"] = {
            "per_class": ctrl.per_class,
            "files": {n: f"{n}.npy" for n in CONTROL_FILES},
            "counts": ctrl.counts(),
            "halves": "alternate within each class in the partition's order, first to A",
            "short_classes": [{**s, "class": index.classes[s["class"]]} for s in ctrl.short_classes],
        }
    return manifest


def split_info(order: str, seed: int | None) -> dict[str, Any]:
    """The manifest's ``split`` block: how each class was ordered before it was cut."""
    if order == "sorted":
        return {"order": "sorted", "seed": None, "rule": "ascending dataset index within each class"}
    return {
        "order": "shuffle",
        "seed": seed,
        "rule": "class c: numpy.random.default_rng([seed, c]).permutation of its annotated images, "
        "then of its other images",
    }


def _checked_manifest(path: Path, m: Any) -> dict[str, Any]:
    """A partition's ``manifest.json`` with the fields the stages read checked: a complete
    dataset fingerprint, ``per_class`` whole numbers >= 1, ``attack_public`` the public set of
    one of them (a hand-edited value gave a traceback or read a file outside the partition)."""
    if not isinstance(m, dict):
        raise DejavuError(f"{path}: not a partition manifest (expected a JSON object)")
    try:
        Fingerprint.from_dict(m.get("fingerprint"))  # type: ignore[arg-type]
    except DejavuError as e:
        raise DejavuError(f"{path}: {e}") from None
    npcs = m.get("per_class")
    if not isinstance(npcs, list) or not npcs or not all(type(n) is int and n >= 1 for n in npcs):
        raise DejavuError(f"{path}: per_class must be a list of whole numbers >= 1, got {str(npcs)[:60]}")
    if m.get("attack_public") not in [f"{n}_per_class/public.npy" for n in npcs]:
        raise DejavuError(
            f"{path}: attack_public must be <npc>_per_class/public.npy, got {str(m.get('attack_public'))[:60]!r}"
        )
    return m


@dataclass
class Partition:
    """A partition on disk, read back with its fingerprint checked against a dataset."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, root: str | os.PathLike) -> Partition:
        root = abspath(root)
        if root.name.endswith("_per_class") or root.suffix == ".npy":
            raise DejavuError(f"{root}: pass the partition folder (the one holding manifest.json)")
        return cls(root, _checked_manifest(root / "manifest.json", read_json(root / "manifest.json")))

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint.from_dict(self.manifest["fingerprint"])

    @property
    def split(self) -> dict[str, Any]:
        """How the classes were ordered (``order``, ``seed``); a partition without a
        ``split`` block was ordered ascending."""
        return self.manifest.get("split") or split_info("sorted", None)

    @property
    def npcs(self) -> list[int]:
        return [int(n) for n in self.manifest["per_class"]]

    def check(self, index: DatasetIndex) -> None:
        index.fingerprint.check(self.fingerprint, what=f"partition {self.root}")

    def load_set(self, npc: int, name: str) -> np.ndarray:
        """One set of one npc split.

        Args:
            npc: images per class of the split.
            name: one of :data:`SET_NAMES`.

        Returns:
            The int64 dataset indices, as stored.

        Raises:
            DejavuError: an unknown set or npc, or a missing/unreadable file.
        """
        if name not in SET_NAMES:
            raise DejavuError(f"unknown set {name!r}; one of {', '.join(SET_NAMES)}")
        if npc not in self.npcs:
            raise DejavuError(f"{self.root}: no {npc}_per_class split (have {self.npcs})")
        return load_npy(self.root / f"{npc}_per_class" / f"{name}.npy")

    def check_attack_sets(self, npc: int) -> None:
        """Refuse sets an attack cannot use (a hand-made or edited partition): duplicates, the
        attacked sets overlapping each other, the other model's training set or the public set.

        Raises :class:`InvariantError` naming the files and an example index.
        """
        d = self.root / f"{npc}_per_class"
        sets = {n: self.load_set(npc, n) for n in ("bbox_A", "bbox_B", "train_A", "train_B")}
        sets["public"] = self.attack_public()
        where = {n: d / f"{n}.npy" for n in sets}
        where["public"] = self.root / self.manifest["attack_public"]
        for n, arr in sets.items():
            if len(np.unique(arr)) != len(arr):
                raise InvariantError(f"{where[n]}: contains duplicate indices")
        for a, b in (
            ("bbox_A", "bbox_B"),
            ("bbox_A", "train_B"),
            ("bbox_B", "train_A"),
            ("public", "train_A"),
            ("public", "train_B"),
        ):
            if len(np.intersect1d(sets[a], sets[b])):
                raise InvariantError(
                    f"{where[a]} and {where[b]} overlap (e.g. index "
                    f"{_example(sets[a], sets[b])}); the attack needs disjoint sets"
                )
        for a, b in (("bbox_A", "train_A"), ("bbox_B", "train_B")):
            extra = np.setdiff1d(sets[a], sets[b])
            if len(extra):
                raise InvariantError(f"{where[a]} is not contained in {where[b]} (e.g. index {int(extra[0])})")

    def attack_public(self) -> np.ndarray:
        """The public set every attack uses: that of the largest npc."""
        return load_npy(self.root / self.manifest["attack_public"])

    def val_set(self) -> np.ndarray:
        return load_npy(self.root / "val_set.npy")

    @property
    def has_control(self) -> bool:
        return bool(self.manifest.get("control")) and (self.root / "control_A.npy").is_file()

    def control(self) -> dict[str, np.ndarray]:
        """The held-out control halves ``{"A": idx, "B": idx}`` (``--control N``)."""
        if not self.has_control:
            raise DejavuError(
                f"{self.root}: this partition has no held-out control (make one with dejavu partition --control N)"
            )
        return {h: load_npy(self.root / f"control_{h}.npy") for h in "AB"}


def load_index_file(path: str | os.PathLike, index: DatasetIndex) -> np.ndarray:
    """Load an index ``.npy`` and check it against ``index``.

    When the file sits in a partition (``<P>/<npc>_per_class/x.npy`` or ``<P>/val_set.npy``),
    the partition's fingerprint must match the dataset's; the error names both.

    Args:
        path: the ``.npy`` file of dataset indices.
        index: the dataset the indices refer to.

    Returns:
        The int64 indices (1-D, non-empty, each in ``0..len(index)-1``).

    Raises:
        DejavuError: a missing or unreadable file, a fingerprint mismatch, or an array that
            is empty, not 1-D integers, or out of range.
    """
    path = Path(path)
    arr = load_npy(path)
    for cand in (path.parent / "manifest.json", path.parent.parent / "manifest.json"):
        if cand.is_file():
            fp = read_json(cand).get("fingerprint")
            if fp:
                index.fingerprint.check(fp, what=f"index file {path}")
            break
    idx = index.check_indices(arr, str(path))
    uniq, counts = np.unique(idx, return_counts=True)
    if len(uniq) != len(idx):  # an image listed twice trains twice as often (and its copy is not held out)
        raise DejavuError(f"{path}: index {int(uniq[counts > 1][0])} appears more than once; list each image once")
    return idx


def format_summary(res: PartitionResult) -> str:
    lines = [
        f"dataset {res.fingerprint.id}: {res.manifest['num_images']} images, "
        f"{len(res.manifest['classes'])} classes, {res.manifest['num_annotated']} annotated",
        f"{'npc':>6} {'bbox_A':>8} {'bbox_B':>8} {'shared':>8} {'train_A':>8} {'public':>8} "
        f"{'short':>6} {'bbox<npc':>8}",
    ]
    for npc, sp in sorted(res.splits.items()):
        c = sp.counts()
        lines.append(
            f"{npc:>6} {c['bbox_A']:>8} {c['bbox_B']:>8} {c['shared']:>8} {c['train_A']:>8} "
            f"{c['public']:>8} {len(sp.short_classes):>6} {sp.bbox_limited:>8}"
        )
    lines.append(f"val_set: {len(res.val_set)} images ({res.val_per_class} per class)")
    if res.control is not None:
        ctl = res.control
        lines.append(
            f"control: {len(ctl.all)} held-out annotated images ({ctl.per_class} per class; halves "
            f"{len(ctl.A)} + {len(ctl.B)}), removed from every public set"
            + (f"; {len(ctl.short_classes)} class(es) short" if ctl.short_classes else "")
        )
    if res.classes_without_public:
        lines.append(
            f"classes without any public image (left out of val_set): "
            f"{', '.join(res.classes_without_public[:10])}" + (" ..." if len(res.classes_without_public) > 10 else "")
        )
    short_any = {n: len(sp.short_classes) for n, sp in res.splits.items() if sp.short_classes}
    if short_any:
        lines.append(
            "classes short of images (train_A < npc; see manifest.json 'short_classes'): "
            + ", ".join(f"{n}pc: {k}" for n, k in sorted(short_any.items()))
        )
    lines.append(
        "bbox<npc: classes with fewer than 2*npc annotated images (bbox_A = annotated // 2, "
        "the rest of train_A is shared)"
    )
    split = res.manifest.get("split") or {}
    if split.get("order") == "shuffle":
        lines.append(f"split: each class in a permutation seeded by (seed {split['seed']}, class) before cutting")
    elif split:
        lines.append("split: ascending image index within each class (order: sorted)")
    lines.append(f"written to {res.out}")
    return "\n".join(lines)


@dataclass
class PartitionConfig:
    """``dejavu partition``'s settings (flags, ``--config``, ``--set``)."""

    per_class: list[int] = field(
        default_factory=lambda: [100, 200, 300, 400, 500],
        metadata={"help": "comma-separated images per class of the private sets, one split each"},
    )
    control: int = field(
        default=0,
        metadata={
            "help": "set aside N annotated public images per class as a held-out control, removed from "
            "every public set (control.npy, control_A.npy, control_B.npy); `dejavu attack` then attacks "
            "them with the same models as a no-memorization baseline (0: none)"
        },
    )

    seed: int = field(
        default=0,
        metadata={
            "help": "partition seed: each class's annotated and other images are put in the order of a "
            "permutation seeded by (seed, class) before they are cut into bbox_A/bbox_B/shared/public "
            "and the control (recorded in manifest.json 'split')"
        },
    )
    seeds: list[int] = field(
        default_factory=list,
        metadata={
            "help": "comma-separated partition seeds: one partition per seed in OUT/seed<S>/ (a partition "
            "per model pair: train and attack pair S on OUT/seed<S>, so the pairs are independent "
            "replicates of the whole experiment); empty: one partition in OUT with --seed"
        },
    )
    order: str = field(
        default="shuffle",
        metadata={
            "choices": SPLIT_ORDERS,
            "help": "shuffle: the seeded permutation (DESIGN 2.2); sorted: ascending image index within "
            "each class (the rule of partitions without a split record; bbox_A = the lowest-numbered half)",
        },
    )

    def validate(self) -> None:
        check_choices(self)
        if not self.per_class or min(self.per_class) < 1:
            raise UsageError(f"per_class: expected images per class >= 1, got {self.per_class}")
        if self.control < 0:
            raise UsageError(f"control: expected a number of images per class >= 0, got {self.control}")
        if self.seeds and self.order != "shuffle":
            raise UsageError("seeds: needs order shuffle (a sorted partition does not depend on the seed)")
        if len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"seeds: each seed once, got {self.seeds}")


PARTITION_FLAGS = ("per_class", "control", "seed", "seeds", "order")


def register(sub) -> None:
    p = sub.add_parser(
        "partition",
        help="split a dataset into private A/B, shared and public index sets",
        description="Partition an ImageNet-layout dataset (DESIGN 2.2). Writes "
        "OUT/<npc>_per_class/{bbox_A,bbox_B,shared,public,train_A,train_B}.npy, "
        "OUT/val_set.npy and OUT/manifest.json.",
    )

    add_data_args(p, need_bboxes=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite an existing partition")
    add_config_args(p, PartitionConfig, flags=PARTITION_FLAGS, title="partition settings (PartitionConfig)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    cfg = config_from_args(PartitionConfig, args, flags=PARTITION_FLAGS)
    paths = data_paths_from_args(args, need_bboxes=True)
    outs = [(Path(args.out) / f"seed{sd}", sd) for sd in cfg.seeds] if cfg.seeds else [(Path(args.out), cfg.seed)]
    index = scan_imagefolder(paths.images) if len(outs) > 1 else None
    for out, sd in outs:
        res = partition(
            paths, cfg.per_class, out, force=args.force, control=cfg.control, seed=sd, order=cfg.order, index=index
        )
        print(format_summary(res))
    return 0


def parse_index_name(index_file: str | os.PathLike) -> tuple[int | None, str | None]:
    """``.../<npc>_per_class/train_<A|B>.npy`` -> (npc, "A"|"B")."""
    p = Path(index_file)
    m = re.fullmatch(r"(\d+)_per_class", p.parent.name)
    s = re.fullmatch(r"train_([AB])", p.stem)
    return (int(m.group(1)) if m else None), (s.group(1) if s else None)


def find_partition(index_file: Path) -> Path | None:
    """The partition folder an index file lies in (its ``<npc>_per_class`` parent or itself), or None."""
    for cand in (index_file.parent.parent, index_file.parent):
        if (cand / "manifest.json").is_file() and (cand / "val_set.npy").is_file():
            return cand
    return None
