"""The held-out control of a one-model audit (DESIGN 7.3).

One model and one crop classifier, so the control is simply a second audited set: images
that neither the audited model nor the classifier trained on, cropped, KNN-searched and
classified exactly as the audited set. Its score ``C`` (model − classifier on the control)
is what the pair reaches without memorization; the audit reports the excess ``E = S − C``
of its score ``S`` with a paired bootstrap interval over both example sets (the audited
set and the control resampled independently, model and classifier paired within each).

Which images (``--control``, as ``dejavu attack``'s): ``auto`` (default), ``none``,
``partition`` (all of ``control.npy`` of ``dejavu partition --control N``) or a folder of
annotated validation images (boxes in ``--control-bboxes``, :mod:`dejavu.data.valset`).
A partition control is reduced to the images the classifier did not train on and that are
not audited (both counts recorded in ``control.source.excluded``): the classifier trained
on ``control_B.npy`` leaves ``control_A`` as the control. Nothing left: ``auto`` skips the
control with a note (``results.json`` ``control_skipped``), ``partition`` is an error.
``auto`` also skips a partition control when the audited checkpoint does not record which
of this partition's sets it trained on (released weights: trained on all of ImageNet's
training images, the control included, as far as anyone here knows) or when a classifier
from ``--reference-model`` does not record its training set; validation images are the
control for such checkpoints.

Files, beside the audit's (same contents, ``control_`` prefix): ``control_attk_idxs.npy``
(indices into the control's image list: the training set's index for a partition control,
the validation listing for a validation control), ``control_labels.npy``,
``control_model_neighb_idxs.npy``, ``control_model_neighb_labels.npy``,
``control_classifier_logits.npy``, ``control_crops.npy``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError
from dejavu.analysis.bootstrap import PairCells, cell_counts, resample_blocks
from dejavu.analysis.metrics import PairScores, acc_at
from dejavu.analysis.significance import excess_table_lines
from dejavu.audit.metrics import one_model_metrics
from dejavu.data.imagefolder import DataPaths, DatasetIndex

PREFIX = "control_"
FRACTIONS = {"20": 0.20, "100": 1.00}
LEVEL = 0.95
EXAMPLE_UNIT = (
    "audited example; the audited set and the control resampled independently, model and classifier paired within a set"
)
COVERS = (
    "the choice of audited and control images, for this model and this classifier (what an audit of one "
    "checkpoint asks); the two sets must be drawn alike"
)


@dataclass
class AuditControl:
    """The control images of an audit: their index, box look-up, positions and description."""

    index: DatasetIndex
    ann_path: Callable[[int], Path] | None
    idx: np.ndarray
    info: dict[str, Any]


def resolve_audit_control(
    spec: str | os.PathLike | None,
    part,
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
    from dejavu.attack.control import resolve_control

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


def one_model_excess(
    target: PairScores,
    reference: PairScores,
    c_target: PairScores,
    c_reference: PairScores,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Score ``S``, control score ``C`` and the excess ``S − C`` per (top-k, fraction), with a
    percentile bootstrap interval: each replicate resamples the audited examples and the
    control examples independently, one resample per set serving the model and the
    classifier. Same keys as :func:`dejavu.analysis.significance.excess`.

    Args:
        target, reference: the model's and the classifier's scores on the audited crops.
        c_target, c_reference: the same on the control crops.
        n_boot: bootstrap replicates (0: no interval).
        seed: seed of the resampling.
        level: interval level.
    Returns:
        ``{"top1": {"20": {"score", "control", "excess", "ci95", "se", "excludes_zero"}, "100": ...},
        "top5": ..., "statistic", "unit", "covers", "n_boot", "seed", "level"}``.
    """

    ps = tuple(FRACTIONS.values())
    point = {}
    for topk in (1, 5):
        for name, (t, r) in (("S", (target, reference)), ("C", (c_target, c_reference))):
            point[(topk, name)] = acc_at(t, ps, topk) - acc_at(r, ps, topk)
    reps = _excess_replicates(target, reference, c_target, c_reference, n_boot, seed)
    a = (1 - level) / 2
    out: dict[str, Any] = {
        "statistic": "excess = score - control (model - classifier accuracy, top p% most confident of each)",
        "unit": EXAMPLE_UNIT,
        "covers": COVERS,
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": level,
    }
    for topk in (1, 5):
        out[f"top{topk}"] = {}
        for j, (key, p) in enumerate(FRACTIONS.items()):
            s, c = float(point[(topk, "S")][j]), float(point[(topk, "C")][j])
            x = np.concatenate(reps[(topk, p)]) if reps else np.zeros(0)
            x = x[~np.isnan(x)]
            ci = [float(v) for v in np.quantile(x, [a, 1 - a])] if len(x) else [float("nan")] * 2
            out[f"top{topk}"][key] = {
                "score": s,
                "control": c,
                "excess": s - c,
                "ci95": ci,
                "se": float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                "excludes_zero": bool(len(x) and (ci[0] > 0 or ci[1] < 0)),
            }
    return out


def _excess_replicates(
    target: PairScores, reference: PairScores, c_target: PairScores, c_reference: PairScores, n_boot: int, seed: int
) -> dict[tuple[int, float], list[np.ndarray]]:
    """Bootstrap replicates of the excess per (top-k, fraction) (:func:`one_model_excess`);
    empty without replicates or examples."""

    ps = tuple(FRACTIONS.values())
    reps: dict[tuple[int, float], list[np.ndarray]] = {}
    if n_boot <= 0 or not len(target.index) or not len(c_target.index):
        return reps
    cells = {k: PairCells(v) for k, v in (("t", target), ("r", reference), ("ct", c_target), ("cr", c_reference))}
    for draws in resample_blocks({"audit": len(target.index), "control": len(c_target.index)}, n_boot, seed):
        acc = {
            k: pc.top_accs(cell_counts(draws["control" if k[0] == "c" else "audit"], pc.cell, pc.n_cells), ps)
            for k, pc in cells.items()
        }
        for tp in acc["t"]:
            reps.setdefault(tp, []).append(acc["t"][tp] - acc["r"][tp] - (acc["ct"][tp] - acc["cr"][tp]))
    return reps


def control_block(
    target: PairScores,
    reference: PairScores,
    c_target: PairScores,
    c_reference: PairScores,
    counts: dict[str, Any],
    info: dict[str, Any],
    num_classes: int,
    n_boot: int,
    seed: int,
    c_sample_reference: PairScores | None = None,
) -> dict[str, Any]:
    """``results.json`` ``control``: the control's metrics (the audit's ``metrics`` keys, less
    ``per_class`` and ``rankings``) and the excess of the score over it, as the attack's block.

    Args:
        target, reference: the model's and the classifier's scores on the audited crops.
        c_target, c_reference: the same on the control crops.
        counts: crop counts, ``{"control": {"bbox", "attacked", ...}}``.
        info: the control's description (``AuditControl.info``: kind, images, excluded...).
        num_classes: classes of the dataset.
        n_boot: bootstrap replicates of the intervals (0: none).
        seed: seed of the excess's bootstrap; the control's own metrics use ``seed + 1``.
        c_sample_reference: the control's sample-test classifier correctness (several
            classifiers), as :func:`dejavu.audit.metrics.one_model_metrics`'s.

    Returns:
        ``{"source": info, "counts": counts, "metrics": {...}, "excess": one_model_excess(...)}``.
    """

    m = one_model_metrics(
        c_target, c_reference, num_classes, "control", n_boot=n_boot, seed=seed + 1, sample_reference=c_sample_reference
    )
    keep = {k: v for k, v in m.items() if k not in ("per_class", "rankings")}
    return {
        "source": info,
        "counts": counts,
        "metrics": keep,
        "excess": one_model_excess(target, reference, c_target, c_reference, n_boot=n_boot, seed=seed),
    }


def verdict_text(ex: dict[str, Any]) -> str:
    """The audit's headline: is the excess (one fraction's entry of :func:`one_model_excess`)
    distinguishable from zero, i.e. does its 95% CI exclude 0.

    Args:
        ex: ``{"excess", "ci95", "excludes_zero", ...}`` for one top-k and fraction.

    Returns:
        One sentence, in points (percent): the excess, its CI and the verdict; without an
        interval (``n_boot`` 0) the excess alone.
    """
    lo, hi = ex["ci95"]
    if not np.isfinite([lo, hi]).all():
        return f"excess over the control {100 * ex['excess']:+.1f} points (no interval: n_boot 0)"
    word = "distinguishable from zero" if ex["excludes_zero"] else "NOT distinguishable from zero"
    return (
        f"excess over the control {100 * ex['excess']:+.1f} points, 95% CI [{100 * lo:+.1f}, {100 * hi:+.1f}]: "
        f"{word} (interval over the audited and control images, for this model and classifier)"
    )


def summary_lines(results: dict[str, Any]) -> list[str]:
    """CLI summary lines: the control, score / control / excess per fraction, the verdict.

    Args:
        results: an audit's ``results.json`` contents.

    Returns:
        The lines; one line with the reason (``control_skipped``) when the audit has no control.
    """
    if "control" not in results:
        return [f"held-out control: {results.get('control_skipped') or 'none'}"]
    c = results["control"]
    src, n = c["source"], c["counts"]["control"]
    ex = src.get("excluded") or {}
    drop = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in ex.items() if v)
    lines = [
        f"held-out control ({src.get('kind', '?')}): {n['attacked']}/{n['bbox']} crops"
        + (f" (excluded: {drop})" if drop else ""),
    ]

    lines += excess_table_lines(c["excess"], "95% CI")
    lines.append("verdict (top-1, 20%): " + verdict_text(c["excess"]["top1"]["20"]))
    return lines


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
    lo, _ = results["metrics"]["top1"]["ci95"]["dejavu_score"]
    if ex["excludes_zero"] and ex["excess"] > 0 and ex["control"] < 0 and not lo > 0:
        notes.append(
            f"the excess is distinguishable from zero only because the control came out negative "
            f"({ex['control']:+.3f}); the score itself ({ex['score']:+.3f}) is not: this is no evidence of memorization"
        )
    return {"reading": "excess over the held-out control", "notes": notes}
