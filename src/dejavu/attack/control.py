"""The held-out control of an attack: annotated images that neither model trained on (the
partition's ``control_{A,B}.npy`` or annotated validation images, :mod:`dejavu.data.valset`),
split into halves CA and CB that play the private sets' roles and attacked with the same
models, crops and public embeddings (:func:`attack_control`); scored against the attack by
:func:`dejavu.analysis.significance.control_block`. Files (``control_`` + the attack's
names) and the ``control`` block: docs/CONTRACTS.md ("Attack folder").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError
from dejavu.analysis.metrics import SETS
from dejavu.attack.crops import compute_crops
from dejavu.attack.dist import is_main
from dejavu.attack.search import AttackContext, search_sets
from dejavu.data.imagefolder import DataPaths, DatasetIndex, annotation_path
from dejavu.data.valset import scan_valset
from dejavu.io import atomic_save_npy
from dejavu.partition import Partition

PREFIX = "control_"


@dataclass
class ControlSource:
    """Where the control images come from: their index, box look-up and halves."""

    index: DatasetIndex
    ann_path: Callable[[int], Path] | None
    halves: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def resolve_control(
    spec: str | os.PathLike | None,
    partition: Partition,
    index: DatasetIndex,
    paths: DataPaths,
    bboxes: str | os.PathLike | None = None,
) -> ControlSource | None:
    """Where the held-out control's images come from.

    Args:
        spec: ``auto`` (the partition's control when it has one, else none), ``none``,
            ``partition``, or a folder of annotated validation images.
        partition: the attack's :class:`~dejavu.partition.Partition`.
        index: the training dataset.
        paths: its data paths.
        bboxes: the validation images' box folder (default: the ``spec`` folder).

    Returns:
        The :class:`ControlSource` (its index, the A/B halves and how boxes are found), or
        None for no control.

    Raises:
        DejavuError: ``partition`` without a control in the partition, or an unusable folder.
    """

    spec = "auto" if spec is None else str(spec)
    if spec == "none":
        return None
    if spec in ("auto", "partition"):
        if not partition.has_control:
            if spec == "auto":
                return None
            raise DejavuError(
                f"{partition.root}: --control partition, but this partition has no control "
                f"(dejavu partition --control N)"
            )
        halves = {
            h: index.check_indices(v, f"{partition.root}/control_{h}.npy") for h, v in partition.control().items()
        }
        both = np.union1d(halves["A"], halves["B"])
        for npc in partition.npcs:  # a hand-edited partition must not put trained images in the control
            for name in ("train_A", "train_B"):
                clash = np.intersect1d(both, partition.load_set(npc, name))
                if len(clash):
                    raise DejavuError(
                        f"{partition.root}/control_A.npy/control_B.npy overlap "
                        f"{npc}_per_class/{name}.npy (e.g. index {int(clash[0])}): a control "
                        f"must hold images neither model trained on"
                    )
        ann_dir = paths.annotation_dir
        return ControlSource(
            index,
            (lambda g: annotation_path(index, ann_dir, g)) if ann_dir else None,
            halves,
            {
                "kind": "partition",
                "files": [f"{partition.root}/control_{h}.npy" for h in SETS],
                "per_class": partition.manifest["control"].get("per_class"),
            },
        )
    vs = scan_valset(spec, bboxes, index.classes)
    return ControlSource(vs.index, vs.ann_path, vs.halves(), vs.describe())


def attack_control(
    src: ControlSource, st: AttackContext, pub_emb: list
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Crop, embed and search the control halves exactly as the private sets (the same
    :func:`dejavu.attack.search.search_sets`) and write the ``control_*`` files.

    Args:
        src: the control (:func:`resolve_control`).
        st: the attack's state (settings, models, output folder, public set).
        pub_emb: the public embeddings of models A and B.

    Returns:
        ``(arrays, counts)``: the four X_attk_Y arrays and the crop counts per half.

    Raises:
        DejavuError: the control overlaps the public set, or a half has no attackable image.
    """
    halves = np.concatenate([src.halves["A"], src.halves["B"]])
    overlap = np.intersect1d(halves, st.public) if src.info.get("kind") == "partition" else np.zeros(0)
    if len(overlap):
        raise DejavuError(f"control overlaps the public set searched by the attack (e.g. index {int(overlap[0])})")
    crops, counts = {}, {}
    for y in SETS:
        sc = compute_crops(
            src.index,
            None,
            src.halves[y],
            st.cfg,
            st.min_px,
            desc=f"control crops {y}",
            ann_path=src.ann_path,
            what=f"control half {y}",
        )
        crops[y], counts[y] = sc, sc.counts
        if is_main():  # torchrun: rank 0 writes
            atomic_save_npy(st.out / f"{PREFIX}crops_{y}.npy", sc.boxes)
    arrays = search_sets(st, crops, pub_emb, desc="control ", index=src.index)
    for name, a in arrays.items() if is_main() else ():
        for key, arr in a.items():
            atomic_save_npy(st.out / f"{PREFIX}{name}_{key}.npy", arr)
    return arrays, counts
