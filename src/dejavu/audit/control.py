"""The held-out control images of a one-model audit: images that neither the audited model
nor the classifier trained on, cropped, searched and classified as the audited set, and
scored by :func:`dejavu.analysis.significance.control_block` (docs/DESIGN.md §7.3).

:func:`resolve_audit_control` picks them (``--control auto|none|partition|VAL_DIR``): a
partition control loses the audited images and the classifier's training images (counts in
``control.source.excluded``); ``auto`` skips a control nothing is left of, or that the audited
checkpoint or a ``--reference-model`` may have trained on, with a note (``control_skipped``).
Files: docs/CONTRACTS.md ("Audit folder").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError
from dejavu.analysis.metrics import score_at
from dejavu.attack.control import resolve_control
from dejavu.data.imagefolder import DataPaths, DatasetIndex
from dejavu.partition import Partition

PREFIX = "control_"
AUDIT_UNIT = "audited example; model and classifier paired"  # the metrics' bootstrap
# How the audit's excess block describes itself (:func:`dejavu.analysis.significance.excess`).
AUDIT_EXCESS = {
    "statistic": "excess = score - control (model - classifier accuracy, top p% most confident of each)",
    "unit": "audited example; the audited set and the control resampled independently, model and classifier "
    "paired within a set",
    "covers": "the choice of audited and control images, for this model and this classifier (what an audit of one "
    "checkpoint asks); the two sets must be drawn alike",
}


@dataclass
class AuditControl:
    """The control images of an audit: their index, box look-up, positions and description."""

    index: DatasetIndex
    ann_path: Callable[[int], Path] | None
    idx: np.ndarray
    info: dict[str, Any]


def resolve_audit_control(
    spec: str | os.PathLike | None,
    part: Partition,
    index: DatasetIndex,
    paths: DataPaths,
    bboxes: str | os.PathLike | None,
    audit_idx: np.ndarray,
    clf_train: np.ndarray | None,
    model_known: bool,
) -> tuple[AuditControl | None, str | None]:
    """The control of an audit (module docstring).

    Args:
        spec: ``auto`` (None), ``none``, ``partition`` or a validation image folder.
        part: the :class:`dejavu.partition.Partition`.
        index: the training set's index (the partition's images).
        paths: the data paths (annotations of the training images).
        bboxes: box files of a validation folder (default: the folder).
        audit_idx: the audited images (excluded from a partition control).
        clf_train: the classifier's training images (excluded), None when unknown.
        model_known: the audited checkpoint records which of this partition's sets it trained on.
    Returns:
        ``(control, None)``, or ``(None, note)`` when there is none (the note says why).
    """
    spec = "auto" if spec is None else str(spec)
    if spec == "none":
        return None, "none (--control none)"
    is_part = spec in ("auto", "partition")
    if spec == "auto" and part.has_control:
        why = (
            (
                "the audited checkpoint does not record which of this partition's sets it trained on (it may "
                "have seen the partition's control)"
            )
            if not model_known
            else ("the classifier from --reference-model does not record its training set")
            if clf_train is None
            else None
        )
        if why:
            return None, f"none: {why}; pass --control VAL_DIR (images it never saw) or --control partition"
    src = resolve_control(spec, part, index, paths, bboxes)
    if src is None:
        return None, "none (this partition has no control: dejavu partition --control N, or --control VAL_DIR)"
    idx = np.union1d(src.halves["A"], src.halves["B"])
    info = dict(src.info)
    if is_part:
        drop_a = np.intersect1d(idx, audit_idx)
        drop_c = np.intersect1d(idx, clf_train) if clf_train is not None else np.zeros(0, np.int64)
        idx = np.setdiff1d(idx, np.union1d(drop_a, drop_c))
        info["excluded"] = {"audited": int(len(drop_a)), "classifier_train": int(len(drop_c))}
        if clf_train is None:
            info["classifier_train_checked"] = False
        if len(idx) == 0:
            msg = (
                f"{part.root}: every control image is audited or in the classifier's training set; train the "
                f"classifier on control_B.npy to keep control_A as the control"
            )
            if spec == "partition":
                raise DejavuError(msg)
            return None, f"none: {msg}"
    info["images"] = int(len(idx))
    return AuditControl(src.index, src.ann_path, idx, info), None


def check_control_public(ctrl: AuditControl, public: np.ndarray) -> None:
    """A partition control must not be searched by the KNN (it is in the training set's index).

    Args:
        ctrl: the resolved control; a validation control (other images) is not checked.
        public: the public set (dataset indices) the audit searches.

    Raises:
        DejavuError: a control image is in the public set.
    """
    if ctrl.info.get("kind") != "partition":
        return
    clash = np.intersect1d(ctrl.idx, public)
    if len(clash):
        raise DejavuError(f"control overlaps the public set searched by the audit (e.g. index {int(clash[0])})")


MIN_CONTROL_CROPS = 30  # fewer control crops than this: too few to judge the excess by


def memorization_reading(results: dict[str, Any]) -> dict[str, Any]:
    """How the audit's "memorized" and score may be read.

    Without a control they are upper bounds: a crop the model's KNN recognises better than the
    classifier counts as memorized whether or not the model trained on it. With one, warnings
    when the control is too small to judge by, or when the excess is "significant" only because
    the control came out negative while the score alone is not distinguishable from zero.

    Args:
        results: an audit's ``results.json`` contents (``metrics``, optional ``control``).

    Returns:
        ``{"reading": "upper bound (no control)" | "excess over the held-out control",
        "notes": [sentences]}``.
    """
    if "control" not in results:
        return {
            "reading": "upper bound (no control)",
            "notes": [
                "no held-out control: the score and 'memorized' are UPPER BOUNDS on memorization (crops the "
                "model's KNN recognises better than the classifier count whether or not it trained on them); "
                "a control (--control partition, or a folder of annotated validation images) measures that "
                "part and reports the excess over it"
            ],
        }
    c = results["control"]
    notes = []
    n = int(c["counts"]["control"]["attacked"])
    if n < MIN_CONTROL_CROPS:
        notes.append(
            f"the control has only {n} crops: too few to judge the excess by (fewer than {MIN_CONTROL_CROPS}); "
            "use a larger control"
        )
    ex = c["excess"]["top1"]["20"]
    lo, _ = score_at(results["metrics"]["top1"]["ci95"])
    if ex["excludes_zero"] and ex["excess"] > 0 and ex["control"] < 0 and not lo > 0:
        notes.append(
            f"the excess is distinguishable from zero only because the control came out negative "
            f"({ex['control']:+.3f}); the score itself ({ex['score']:+.3f}) is not: this is no evidence of memorization"
        )
    return {"reading": "excess over the held-out control", "notes": notes}
