"""Tables of an attack folder: reading the stored arrays back, the per-example CSV,
and a short text summary. numpy + csv only (no torch, no models)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, formats
from dejavu.analysis.metrics import (
    ARRAYS,
    FRACTIONS,
    SETS,
    TOPKS,
    Comparisons,
    Scores,
    comparisons,
    fraction_key,
    quadrant_labels,
    score_at,
    scores_from_logits,
    scores_from_neighbours,
)
from dejavu.io import atomic_save_npy, atomic_write_text, load_npy, read_json
from dejavu.units import ci95_text, pct, pts

# Attack-folder format tags. /2: ``*_neighb_idxs.npy`` hold dataset indices and
# ``*_labels.npy`` has shape (n, 1), as the original's files; /1 (older folders): neighbour
# positions into ``public_idxs.npy`` and labels of shape (n,). Both are read.
ATTACK_FORMAT = formats.ATTACK
ATTACK_FORMATS = formats.ATTACK_READABLE

EXAMPLE_COLUMNS = (
    "set",
    "index",
    "label",
    "pred_target",
    "pred_reference",
    "conf_target",
    "conf_reference",
    "correct_target",
    "correct_reference",
    "quadrant",
)


def scores_from_arrays(a: dict[str, np.ndarray], k_attk: int | None, num_classes: int) -> Scores:
    """One model's :class:`Scores` on one set from its stored arrays (logits if present, else neighbours).

    Args:
        a: ``attk_idxs``, ``labels`` (n,) and ``neighb_labels`` (n, k) or ``logits`` (n, C).
        k_attk: neighbours voting (None: all stored).
        num_classes: C.

    Returns:
        The scores.
    """
    if "logits" in a:
        return scores_from_logits(a["logits"], a["labels"], a["attk_idxs"])
    return scores_from_neighbours(a["neighb_labels"], a["labels"], a["attk_idxs"], k_attk, num_classes)


def check_attack_format(res: dict[str, Any], path: str | os.PathLike) -> str:
    """The attack folder's format tag, or a clear error for one this version cannot read.

    Args:
        res: the folder's ``results.json``.
        path: the file, for the message.

    Returns:
        The format tag, one of :data:`ATTACK_FORMATS`.

    Raises:
        DejavuError: an unknown or missing format tag.
    """
    fmt = res.get("format")
    if fmt not in ATTACK_FORMATS:
        raise DejavuError(
            f"{path}: format {fmt!r} is not an attack folder this dejavu reads ({', '.join(ATTACK_FORMATS)})"
        )
    return str(fmt)


def read_neighbour_idxs(
    folder: str | os.PathLike, name: str, fmt: str = ATTACK_FORMAT, mmap: bool = False
) -> np.ndarray:
    """``<name>_neighb_idxs.npy`` as (n, k) DATASET indices, whatever the folder's format.

    Args:
        folder: the attack folder.
        name: the arrays' name, e.g. ``"A_attk_B"``.
        fmt: the folder's format tag (``results.json`` ``format``).
        mmap: memory-map the file (format /2 only) instead of reading it.

    Returns:
        Dataset indices (positions into the ImageFolder list) of each row's neighbours.
    """
    folder = Path(folder)
    f = folder / f"{name}_neighb_idxs.npy"
    if fmt == formats.ATTACK_READABLE[0]:  # positions into public_idxs.npy
        return load_npy(folder / "public_idxs.npy")[load_npy(f)]
    return np.load(f, mmap_mode="r", allow_pickle=False) if mmap else load_npy(f)


def load_score_arrays(
    folder: str | os.PathLike, logits: bool = False, fmt: str = ATTACK_FORMAT
) -> dict[str, dict[str, np.ndarray]]:
    """The four ``X_attk_Y`` stored arrays of an attack folder (original file names), with
    ``labels`` flattened to (n,) and ``neighb_idxs`` as dataset indices.

    Args:
        folder: the attack folder.
        logits: read ``*_logits.npy`` instead of ``*_neighb_labels.npy`` / ``*_neighb_idxs.npy``.
        fmt: the folder's format tag.

    Returns:
        ``{name: {"attk_idxs", "labels", "neighb_labels" | "logits", "neighb_idxs"}}`` for the
        four :data:`~dejavu.analysis.metrics.ARRAYS`.

    Raises:
        DejavuError: a file is unreadable or its row count differs from ``attk_idxs``.
    """
    folder = Path(folder)
    keys = ("attk_idxs", "labels") + (("logits",) if logits else ("neighb_labels",))
    out = {}
    for name in ARRAYS:
        out[name] = {k: load_npy(folder / f"{name}_{k}.npy") for k in keys}
        out[name]["labels"] = out[name]["labels"].reshape(len(out[name]["labels"]), -1)[:, 0]
        if not logits:
            out[name]["neighb_idxs"] = read_neighbour_idxs(folder, name, fmt)
        n = len(out[name]["attk_idxs"])
        for k, v in out[name].items():
            if len(v) != n:
                raise DejavuError(f"{folder / f'{name}_{k}.npy'}: {len(v)} rows but {n} attacked examples")
    return out


def scores_from_folder(folder: str | os.PathLike, k_attk: int | None = None) -> tuple[dict[str, Scores], dict]:
    """Re-score an attack folder from its stored neighbours; returns (scores, results.json).

    Args:
        folder: the attack folder (with ``results.json``).
        k_attk: neighbours voting (default: the folder's ``config.k_attk``, else all stored).

    Returns:
        ``({name: Scores}, results.json dict)`` for the four ``X_attk_Y``.

    Raises:
        DejavuError: an unreadable folder, an unknown format or ``k_attk`` out of range.
    """
    folder = Path(folder)
    res = read_json(folder / "results.json")
    fmt = check_attack_format(res, folder / "results.json")
    cfg = res.get("config", {})
    logits = cfg.get("embed") == "logits"
    arrays = load_score_arrays(folder, logits, fmt)
    num_classes = res.get("num_classes") or res.get("fingerprint", {}).get("num_classes")
    if not num_classes:  # foreign folder without provenance: the largest label seen
        num_classes = 1 + max(
            int(max(a["labels"].max(initial=0), a.get("neighb_labels", a["labels"]).max(initial=0)))
            for a in arrays.values()
        )
    k = k_attk if k_attk is not None else cfg.get("k_attk")
    stored = arrays[ARRAYS[0]]["neighb_labels"].shape[1] if not logits else 0
    if not logits and k is not None and not 1 <= k <= stored:
        raise DejavuError(f"{folder}: --k-attk {k} out of range 1..{stored} (stored neighbours)")
    scores = {n: scores_from_arrays(a, k, int(num_classes)) for n, a in arrays.items()}
    res.setdefault("num_classes", int(num_classes))  # the count used, for callers that rescore more
    return scores, res


def examples_csv_text(comps: Comparisons, topk: int = 1) -> str:
    """The text of ``examples.csv`` (:data:`EXAMPLE_COLUMNS`; see :func:`write_examples_csv`).

    Args:
        comps: the comparisons (or the four ``X_attk_Y`` scores); the sample test's reference.
        topk: 1 or 5 (correctness and quadrant).

    Returns:
        The CSV text, one comparison's rows after the other (the two-model test: set A, then B).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXAMPLE_COLUMNS)
    for c in comparisons(comps):
        T, R = c.target, c.sample_ref
        cols = zip(
            T.index.tolist(),
            T.labels.tolist(),
            T.pred.tolist(),
            R.pred.tolist(),
            T.conf.tolist(),
            R.conf.tolist(),
            map(_num, T.correct(topk)),
            map(_num, R.correct(topk)),
            quadrant_labels(T, R, topk).tolist(),
        )
        w.writerows((c.name, *row) for row in cols)
    return buf.getvalue()


def _num(v: float) -> str:
    """A correctness value: ``1``/``0``, or the expectation (e.g. ``0.5``) under a tie."""
    return f"{float(v):.10g}"


def write_examples_csv(path: str | os.PathLike, comps: Comparisons, topk: int = 1) -> Path:
    """``examples.csv``: one row per attacked example (set, index, label, predictions,
    confidences, correctness, quadrant), top-1 based. Correctness is the expectation over
    a random tie order (0 or 1 without ties); the quadrant is the most likely one.

    Args:
        path: the CSV file (written atomically, overwritten).
        comps: the comparisons (or the four ``X_attk_Y`` scores).
        topk: 1 or 5.

    Returns:
        ``path``.
    """
    return atomic_write_text(path, examples_csv_text(comps, topk))


def write_conf_sweeps(folder: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """The original's ``top_{k}_conf_sweep_{X_attk_Y}.npy`` files from a metrics block's ``pair_sweeps``.

    Args:
        folder: the attack folder.
        metrics: a two-model ``metrics`` block (:func:`~dejavu.analysis.summary.compute_all`).
    """
    for name in metrics["top1"]["pair_sweeps"]:
        for k in TOPKS:
            sweep = np.asarray(metrics[f"top{k}"]["pair_sweeps"][name], np.float64)
            atomic_save_npy(Path(folder) / f"top_{k}_conf_sweep_{name}.npy", sweep)


def summary_text(results: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    """The CLI's short summary of an attack: counts, target/reference/gap table, score, quadrants.

    Args:
        results: the ``results.json`` dict (its ``counts``, and ``metrics`` if none given).
        metrics: a ``metrics`` block to show instead of ``results["metrics"]``.

    Returns:
        The lines joined by newlines.
    """
    m = metrics or results["metrics"]
    lines = []
    d = results.get("design") or {}
    if d.get("design"):
        seeds = d.get("train_seeds") or {}
        lines.append(f"models: {d['design']} (training seeds A {seeds.get('A')}, B {seeds.get('B')})")
    c = results.get("counts", {})
    for y in SETS:
        if y in c:
            cy = c[y]
            lines.append(
                f"set {y}: {cy['attacked']}/{cy['bbox']} attacked, {cy['unattackable']} unattackable, "
                f"{cy.get('annotation_errors', 0)} annotation errors"
            )
    lines += accuracy_table_lines(m, "target", "ref")
    ci = score_at(m["top1"]["ci95"])
    lines.append(
        f"deja vu score (top-1, 20%): {pts(score_at(m['top1']))}  {ci95_text(ci)}"
        + ("" if "control" in results else "  (primary endpoint at the final epoch; no control)")
    )
    q = m["quadrants"]
    lines.append("quadrants: " + ", ".join(f"{k} {pct(v)}" for k, v in q.items()))
    return "\n".join(lines)


def accuracy_table_lines(m: dict[str, Any], target: str, reference: str) -> list[str]:
    """Accuracy of both models (%) and their gap (points) per top-k and fraction, for the CLI.

    Args:
        m: a ``metrics`` block (``m[top][target|reference][p]``, fractions).
        target: the target's column title (``target``; an audit: ``model``).
        reference: the reference's column title (``ref``; an audit: ``clf``).

    Returns:
        The header and one line per top-k and fraction the block holds.
    """
    lines = [f"{'':6} {'p':>5} {target:>8} {reference:>8} {'gap (pts)':>10}"]
    for t in (f"top{k}" for k in TOPKS):
        for p in (fraction_key(f) for f in FRACTIONS if fraction_key(f) in m[t]["target"]):
            tg, rf = m[t]["target"][p], m[t]["reference"][p]
            lines.append(f"{t:6} {p + '%':>5} {pct(tg):>8} {pct(rf):>8} {pts(tg - rf, unit=False):>10}")
    return lines


REQUIRED_EXAMPLE_COLUMNS = ("set", "index", "label", "conf_target", "conf_reference", "quadrant")


def read_examples_csv(
    path: str | os.PathLike, need: tuple[str, ...] = REQUIRED_EXAMPLE_COLUMNS
) -> list[dict[str, Any]]:
    """The rows of an ``examples.csv`` (attack or audit) with typed values: the one reader
    behind the report's galleries, the RCDM selections and the audit's overlap.

    Args:
        path: the ``examples.csv`` file.
        need: columns that must be present.

    Returns:
        One dict per row: ``index``/``label``/``pred_*`` as int, ``conf_*`` as float,
        ``correct_*`` as float (1/0, or an expectation under a tie), the rest as text.

    Raises:
        DejavuError: a missing file or column, or a value that does not parse (naming the row).
    """
    path = Path(path)
    if not path.is_file():
        raise DejavuError(f"{path}: file not found (is {path.parent} an attack folder?)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise DejavuError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for i, r in enumerate(reader):
            try:
                rows.append(_typed_example(r))
            except ValueError as e:
                raise DejavuError(f"{path}: row {i + 2}: {e}") from None
    return rows


def _typed_example(r: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(r)
    for k in ("index", "label", "pred_target", "pred_reference"):
        if row.get(k) not in (None, ""):
            row[k] = int(float(row[k]))
    for k in ("conf_target", "conf_reference"):
        if row.get(k) not in (None, ""):
            row[k] = float(row[k])
    for k in ("correct_target", "correct_reference"):
        if k in row:
            v = str(row[k]).strip().lower()
            row[k] = 1.0 if v == "true" else 0.0 if v in ("false", "") else float(v)
    return row
