"""``report.html``: one self-contained page per run (docs/DESIGN.md 3).

Reads only files: the ``results.json`` of the attacks, probes and audits under ``RUN_DIR`` (with
``examples.csv`` and the neighbour arrays of the headline attack), the figures (made into
``RUN_DIR/plots`` if absent), the dataset images and ``RUN_DIR/rcdm/**/*.png``. Every image is
embedded as base64 (the only links: the figures' PDFs, when present). The headline is the attack
of the latest epoch (the default variant first, then the largest npc); the galleries rank
examples as docs/DESIGN.md 2.5; crops are recomputed with :mod:`dejavu.attack.crops`.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dejavu import DejavuError, __version__, formats
from dejavu.analysis.significance import verdict_text
from dejavu.analysis.tables import read_examples_csv, read_neighbour_idxs
from dejavu.attack.crops import crop_for_config
from dejavu.audit.compare import memorized_overlap
from dejavu.data.annotations import read_voc_xml
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.imagefolder import DataPaths, Fingerprint, annotation_path, scan_imagefolder
from dejavu.io import atomic_write_text, check_can_write, locks_output, read_json
from dejavu.report.collect import AttackRecord, ProbeRecord, Results, collect
from dejavu.report.plots import make_figures, significance_table
from dejavu.report.verdict import ci_phrase, overall, pick_audit
from dejavu.units import pct as _pct
from dejavu.units import pts, pts_ci
from dejavu.utils import progress

DEFAULT_VARIANT = "periphery/projector"
THUMB = 160  # displayed thumbnail side (px); small synthetic images are upscaled to it


# ---------------------------------------------------------------- images


def _img_uri(im) -> str:
    """Encode a PIL image as a data URI (PNG for small images, JPEG for photos)."""
    buf = io.BytesIO()
    if max(im.size) <= 256:
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        im.convert("RGB").save(buf, format="JPEG", quality=85)
        mime = "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _thumb(im, side: int = THUMB):
    from PIL import Image

    w, h = im.size
    s = side / max(w, h)
    resample = Image.Resampling.NEAREST if s > 1 else Image.Resampling.BILINEAR  # keep small synthetic pixels crisp
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


@dataclass
class Example:
    """One row of an ``examples.csv`` (the columns the galleries need)."""

    set: str
    index: int
    label: int
    pred_target: int
    pred_reference: int
    conf_target: float
    conf_reference: float
    quadrant: str


def read_examples(path: Path) -> list[Example]:
    """The rows of an attack's or audit's ``examples.csv``.

    Args:
        path: the ``examples.csv``.

    Returns:
        One :class:`Example` per row, in file order.

    Raises:
        DejavuError: the file is missing, lacks a column or has a malformed row.
    """

    need = ("set", "index", "label", "pred_target", "pred_reference", "conf_target", "conf_reference", "quadrant")
    return [
        Example(
            r["set"],
            r["index"],
            r["label"],
            r["pred_target"],
            r["pred_reference"],
            r["conf_target"],
            r["conf_reference"],
            r["quadrant"],
        )
        for r in read_examples_csv(path, need)
    ]


def rank_examples(examples: list[Example], n: int) -> dict[str, list[Example]]:
    """The n most memorized and the n most correlated examples (ties: dataset index).

    Args:
        examples: the rows of ``examples.csv``.
        n: examples per list.

    Returns:
        ``{"memorized": [...], "correlated": [...]}``: memorized by ``conf_target −
        conf_reference``, correlated by ``min(conf_target, conf_reference)``, highest first.
    """
    mem = sorted(
        (e for e in examples if e.quadrant == "memorized"), key=lambda e: (-(e.conf_target - e.conf_reference), e.index)
    )
    cor = sorted(
        (e for e in examples if e.quadrant == "correlated"),
        key=lambda e: (-min(e.conf_target, e.conf_reference), e.index),
    )
    return {"memorized": mem[:n], "correlated": cor[:n]}


class Gallery:
    """Draws gallery cells for examples of one attack folder.

    Args:
        attack: the attack whose neighbour arrays and crop settings are shown.
        index: the dataset's image index (paths, classes).
        annotation_dir: the box annotations (None: no boxes drawn, periphery crops not recomputed).
        n_neighbours: public neighbours shown per model.
    """

    def __init__(self, attack: AttackRecord, index, annotation_dir: Path | None, n_neighbours: int):
        self.attack = attack
        self.index = index
        self.ann_dir = annotation_dir
        self.k = n_neighbours
        self.audit = attack.raw.get("format") == formats.AUDIT  # target: the model; reference: a classifier
        self.names = class_names(index)
        self._rows: dict[str, dict[int, int]] = {}
        self._neigh: dict[str, np.ndarray] = {}

    def _searched(self, model: str, set_: str):
        name = f"{model}_attk_{set_}"
        if name not in self._rows:
            d = self.attack.dir
            fi, fn = d / f"{name}_attk_idxs.npy", d / f"{name}_neighb_idxs.npy"
            if self.audit:  # the audited model's neighbours; the classifier has none
                fi, fn = (d / "attk_idxs.npy", d / "model_neighb_idxs.npy") if model == "model" else (d / "-", d / "-")
                name = "model"
            fmt = self.attack.raw.get("format", "")
            if (
                fi.is_file()
                and fn.is_file()
                and (fmt != formats.ATTACK_READABLE[0] or (d / "public_idxs.npy").is_file())
            ):
                idxs = np.load(fi, allow_pickle=False)
                self._rows[name] = {int(g): r for r, g in enumerate(idxs)}
                self._neigh[name] = read_neighbour_idxs(d, fn.name[: -len("_neighb_idxs.npy")], fmt, mmap=True)
            else:
                self._rows[name] = {}
        return self._rows[name], self._neigh.get(name)

    def crop_rect(self, im, boxes) -> tuple[int, int, int, int] | None:
        """The attack's crop of this image, recomputed from the attack's stored settings.

        Args:
            im: the PIL image.
            boxes: its object boxes (None: unknown).

        Returns:
            The crop as a pixel box ``(left, top, right, bottom)``, or None when there is none (no
            boxes for a periphery crop, or the crop rule refuses the image).
        """

        cfg = self.attack.config
        if cfg.get("crop", "periphery") != "corner" and boxes is None:
            return None
        dec = crop_for_config(cfg, im.size[0], im.size[1], boxes)
        return dec.pixel_box() if dec.ok else None

    def cell(self, e: Example) -> str:
        """One example's HTML: the image with its boxes (red) and crop (green), the crop, and per
        model (A, B) its nearest public neighbours (green frame: same class) and its prediction.

        Args:
            e: the example (a row of ``examples.csv``).

        Returns:
            A ``<div class="example">`` with every image embedded as a data URI.
        """
        from PIL import ImageDraw

        cls = self.names
        im = load_rgb(self.index.path(e.index))
        boxes = None
        if self.ann_dir is not None:
            ap = annotation_path(self.index, self.ann_dir, e.index)
            if ap.is_file():
                boxes = read_voc_xml(ap).boxes
        rect = self.crop_rect(im, boxes)
        full = _thumb(im, 2 * THUMB if max(im.size) > 2 * THUMB else THUMB)
        sx, sy = full.size[0] / im.size[0], full.size[1] / im.size[1]
        draw = ImageDraw.Draw(full)
        for b in boxes if boxes is not None else []:
            draw.rectangle([b[0] * sx, b[1] * sy, b[2] * sx - 1, b[3] * sy - 1], outline=(230, 30, 30), width=2)
        if rect is not None:
            draw.rectangle(
                [rect[0] * sx, rect[1] * sy, rect[2] * sx - 1, rect[3] * sy - 1], outline=(30, 200, 60), width=2
            )
        parts = [
            (
                f'<figure><img src="{_img_uri(full)}" alt="image {e.index}"><figcaption>image #{e.index} '
                f"(set {html.escape(e.set)}), class {html.escape(cls[e.label])}<br>"
                f'<span class="red">boxes</span>, <span class="green">crop</span></figcaption></figure>'
            )
        ]
        if rect is not None:
            parts.append(
                f'<figure><img src="{_img_uri(_thumb(im.crop(rect)))}" alt="crop"><figcaption>crop '
                f"{rect[2] - rect[0]}&times;{rect[3] - rect[1]} px</figcaption></figure>"
            )
        models = [("model", True), ("crop classifier", False)] if self.audit else [(y, y == e.set) for y in "AB"]
        for model, is_target in models:
            role = "audited" if self.audit and is_target else "target" if is_target else "reference"
            pred = e.pred_target if is_target else e.pred_reference
            conf = e.conf_target if is_target else e.conf_reference
            rows, neigh = self._searched(model, e.set) if is_target or not self.audit else ({}, None)
            thumbs = []
            if neigh is not None and e.index in rows:
                for g in neigh[rows[e.index]][: self.k]:
                    g = int(g)
                    lab = int(self.index.targets[g])
                    ok = "ok" if lab == e.label else "no"
                    thumbs.append(
                        f'<img class="nb {ok}" src="{_img_uri(_thumb(load_rgb(self.index.path(g)), 64))}"'
                        f' title="#{g} {html.escape(cls[lab])}" alt="neighbour {g}">'
                    )
            elif not (self.audit and not is_target):
                thumbs.append('<span class="muted">neighbours not stored</span>')
            verdict = "right" if pred == e.label else "wrong"
            title = f"model {model}" if not self.audit else model
            parts.append(
                f'<figure class="nbs"><div>{"".join(thumbs)}</div><figcaption>{title} ({role}): '
                f"predicts {html.escape(cls[pred])} ({verdict}); {_spread(conf, self.audit and not is_target)}"
                "</figcaption></figure>"
            )
        return '<div class="example">' + "".join(parts) + "</div>"


def _spread(conf: float, classifier: bool = False) -> str:
    """A confidence (negative entropy, nats) as the number of classes it spreads over
    (exp(entropy), the perplexity: 1 = unanimous)."""

    what = "its probabilities" if classifier else "its neighbours' labels"
    return f"{what} spread over {math.exp(-conf):.1f} classes (confidence {conf:+.2f})"


def class_names(index) -> list[str]:
    """Readable class names, where the dataset has them: ``classes.txt`` or ImageNet's
    ``LOC_synset_mapping.txt`` (``<wnid> <name>[, synonyms]`` per line) in the image folder or
    one of the four above it; otherwise the folder names (wnids).

    Args:
        index: the dataset's image index (its ``classes`` and the image folder, ``root``).

    Returns:
        One name per class, in ``index.classes`` order (the first synonym).
    """
    root = Path(getattr(index, "root", "") or ".")
    names: dict[str, str] = {}
    for d in (root, *list(root.parents)[:4]):  # Kaggle's ImageNet: 4 levels above ILSVRC/Data/CLS-LOC/train
        for f in ("classes.txt", "LOC_synset_mapping.txt"):
            if (d / f).is_file() and not names:
                for line in (d / f).read_text(errors="replace").splitlines():
                    wnid, _, name = line.strip().partition(" ")
                    if wnid and name:
                        names[wnid] = name.split(",")[0].strip()
    return [names.get(c, c) for c in index.classes]


# ---------------------------------------------------------------- page


def pick_headline(attacks: list[AttackRecord]) -> AttackRecord | None:
    """The headline attack: the latest epoch; among several there, the default variant
    (periphery/projector), then the largest npc, then the path.

    Returns:
        The record, or None when there is no attack.
    """
    if not attacks:
        return None
    last = max(r.epoch for r in attacks)
    cands = [r for r in attacks if r.epoch == last]
    return min(cands, key=lambda r: (r.variant != DEFAULT_VARIANT, -r.npc, str(r.path)))


def pick_probe(probes: list[ProbeRecord], head: AttackRecord | None) -> ProbeRecord | None:
    """The probe shown beside the headline: one of the same method, npc and epoch (backbone
    features preferred), else the latest epoch's (largest npc).

    Args:
        probes: the probes found in the run folder.
        head: the headline attack (None: no attack).

    Returns:
        The record, or None when there is no probe.
    """
    if not probes:
        return None
    if head is not None:
        same = [p for p in probes if (p.method, p.npc, p.epoch) == (head.method, head.npc, head.epoch)]
        if same:
            return min(same, key=lambda p: (p.features != "backbone", str(p.path)))
    return max(probes, key=lambda p: (p.epoch, p.npc))


def _headline(head: AttackRecord | None, probe: ProbeRecord | None, audit: bool = False) -> str:
    """The headline table: the score (points) with its CI, both models' accuracy (%), the shares,
    the setting and the probe. ``audit``: ``head`` is a one-model test (model vs classifier)."""
    rows = []
    if head is not None:
        ci_s = ci_phrase(head.ci())
        ci100 = head.ci(at="100")
        name = "one-model déjà vu score (model − crop classifier" if audit else "déjà vu score (target − reference"
        tgt, ref = ("model", "classifier") if audit else ("target", "reference")
        rows.append(
            f"<tr><th>{name}, top-1, 20% most confident)</th><td class='big'>{pts(head.score())}{ci_s}</td></tr>"
        )
        rows.append(f"<tr><th>the same on all examples</th><td>{pts(head.score(at='100'))}{ci_phrase(ci100)}</td></tr>")
        for p in ("20", "100"):
            rows.append(
                f"<tr><th>accuracy on the {p}% most confident</th><td>{tgt} {_pct(head.acc('target', p))}"
                f" &nbsp; {ref} {_pct(head.acc('reference', p))}</td></tr>"
            )
        q = head.quadrants
        if q:
            rows.append(
                "<tr><th>example shares</th><td>"
                + " &nbsp; ".join(f"<span class='q {k}'>{k} {_pct(v)}</span>" for k, v in q.items())
                + "</td></tr>"
            )
        what = (
            f"audit of set {html.escape(str((head.raw.get('sets') or {}).get('audit', '?')))}"
            if audit
            else f"{html.escape(head.variant)} attack"
        )
        rows.append(
            f"<tr><th>setting</th><td>{html.escape(head.method)}, {head.npc} images per class, epoch "
            f"{head.epoch}, {what}, k={head.config.get('k', '?')}"
            + (f", training seed {html.escape(str(head.seed))} (this model pair)" if head.seed is not None else "")
            + "</td></tr>"
        )
    if probe is not None:
        rows.append(
            f"<tr><th>linear probe ({html.escape(probe.features)})</th><td>top-1 {_pct(probe.top1)} &nbsp; "
            f"top-5 {_pct(probe.top5)} (epoch {probe.epoch}, {probe.npc}pc)</td></tr>"
        )
    return "<table class='head'>" + "".join(rows) + "</table>" if rows else "<p>No results yet.</p>"


def _excess_rows(rec: AttackRecord) -> list[str]:
    """Table rows "at p%: score / held-out control / excess (95% CI)" of an attack or audit
    with a control block (the two-model and the one-model sections word them alike)."""
    rows = []
    for at in ("20", "100"):
        e = rec.excess(at=at)
        if e is None:
            continue
        rows.append(
            f"<tr><th>at {at}%: score / held-out control / excess</th><td>{pts(e['score'])} / "
            f"{pts(e['control'])} / <b>{pts(e['excess'])}</b> (95% CI over examples {pts_ci(e['ci95'])})</td></tr>"
        )
    return rows


def _head_row(attacks: list[AttackRecord], head: AttackRecord | None) -> dict | None:
    """The headline's :func:`~dejavu.report.plots.significance_table` row (its seed group), or None
    without a headline or a control."""

    if head is None or head.control is None:
        return None
    return next(
        (
            r
            for r in significance_table(attacks)
            if (r["method"], r["variant"], r["npc"], r["epoch"]) == (head.method, head.variant, head.npc, head.epoch)
            and str(head.path) in r["files"]
        ),
        None,
    )


def _control(head: AttackRecord | None, row: dict | None) -> str:
    """Score against the held-out control: the control's score, the excess with
    its interval, the verdict, and, when several model pairs differ only in the seed, each
    pair's values and the interval over pairs (``row``: :func:`_head_row`)."""
    if head is None:
        return ""
    if head.control is None:
        return (
            "<p class='muted'>No held-out control in this attack: the score's CI covers the choice of "
            "examples only, and nothing says how large a score two training runs reach without "
            "memorization (dejavu partition --control N, or dejavu attack --control VAL_DIR).</p>"
        )
    rows = _excess_rows(head)
    if row is not None:
        pl = row["pair_level"]
        cls = "big" if pl["n_pairs"] >= 2 else ""
        rows.insert(0, f"<tr><th>verdict (top-1, 20%)</th><td class='{cls}'>{html.escape(row['verdict'])}</td></tr>")
        rows.insert(
            1,
            "<tr><th>primary endpoint</th><td>top-1 at the 20% most confident, final epoch (every other "
            f"number is secondary); models trained {html.escape(', '.join(row.get('design', [])))}; "
            f"partition {html.escape(str(row.get('partitions', '?')))}"
            f"{'; interval df: ' + html.escape(str(pl.get('df_rule'))) if pl.get('df_rule') else ''}</td></tr>",
        )
        if pl["n_pairs"] >= 2:
            cells = "".join(
                f"<tr><td>{html.escape(str(sd))}</td><td>{pts(s)}</td><td>{pts(c)}</td><td>{pts(e)}</td></tr>"
                for sd, s, c, e in zip(row["seeds"], row["scores"], row["controls"], row["excesses"])
            )
            rows.append(
                "<tr><th>model pairs (training seed)</th><td><table class='all'><tr><th>seed</th>"
                f"<th>score (pts)</th><th>control (pts)</th><th>excess (pts)</th></tr>{cells}</table></td></tr>"
            )
    ctrl = head.control or {}
    src = ctrl.get("source", {})
    rows.append(
        f"<tr><th>held-out control</th><td>{html.escape(str(src.get('kind', '?')))} images, "
        + ", ".join(f"{y}: {ctrl['counts'][y]['attacked']} attacked" for y in "AB")
        + " <span class='muted'>(neither model trained on them; no gap expected)</span></td></tr>"
    )
    return "<h2>Score against the held-out control</h2><table class='head'>" + "".join(rows) + "</table>"


def _one_model(audits: list[AttackRecord], head: AttackRecord | None, run_dir: Path) -> str:
    """The one-model tests (``dejavu audit``, DESIGN 7.3): the audited model against a crop
    classifier; beside a two-model attack of the same set, the overlap of memorized examples;
    then, per audit, its score against its held-out control (:func:`_audit_control`)."""
    return (
        "<h2>One-model test (audited model vs crop classifier)</h2><p class='muted'>The classifier predicts the "
        "class from the background crop alone, trained on other images: what it gets right is correlation. "
        "Score = model minus classifier accuracy on each one's 20% most confident crops (95% CI).</p>"
        "<table class='all'><tr><th>folder</th><th>method</th><th>audited set</th><th>classifier</th>"
        "<th>model vs classifier 20%</th><th>score (pts, 95% CI)</th><th>memorized</th>"
        "<th>two-model memorized also found</th></tr>"
        + "".join(_audit_row(r, head, run_dir) for r in audits)
        + "</table>"
        + "".join(_audit_control(r, run_dir) for r in audits)
    )


def _audit_row(r: AttackRecord, head: AttackRecord | None, run_dir: Path) -> str:
    """One audit's row of the one-model table."""
    ci = r.ci()
    clf = r.raw.get("classifier") or {}
    sets = r.raw.get("sets") or {}
    ho = clf.get("heldout_acc")
    clf_s = (
        f"trained on {html.escape(str(sets.get('classifier_train')))}"
        if clf.get("trained")
        else f"from {html.escape(str(clf.get('path')))}"
    ) + (f", held-out {_pct(ho)}" if ho is not None else "")
    overlap = ""
    if head is not None and (head.dir / "examples.csv").is_file() and (r.dir / "examples.csv").is_file():
        name = str(sets.get("audit", ""))
        o = memorized_overlap(head.dir, r.dir, name[-1] if name in ("bbox_A", "bbox_B") else name)
        if o["n_common"]:
            overlap = (
                f"{o['both']} of {o['memorized_two_model']} ({_pct(o['recall_of_two_model'])}; chance "
                f"{_pct(o['chance_recall'])})"
            )
    mem = _pct(r.quadrants.get("memorized", float("nan")))
    if "control" not in r.raw:  # an upper bound without a control
        mem = f"&le; {mem} <span class='muted'>(upper bound: no control)</span>"
    loaded = ((r.raw.get("models") or {}).get("audited") or {}).get("loaded") or {}
    arch = f"<br><span class='muted'>{html.escape(str(loaded['arch']))}</span>" if loaded.get("arch") else ""
    return (
        f"<tr><td>{html.escape(os.path.relpath(r.dir, run_dir))}</td><td>{html.escape(r.method)}{arch}</td>"
        f"<td>{html.escape(str(sets.get('audit')))}</td><td>{clf_s}</td>"
        f"<td>{_pct(r.acc('target', 20))} vs {_pct(r.acc('reference', 20))}</td>"
        f"<td><b>{pts(r.score())}</b>" + (f" {pts_ci(ci)}" if ci else "") + "</td>"
        f"<td>{mem}</td><td>{overlap or '-'}</td></tr>"
    )


def _audit_control(r: AttackRecord, run_dir: Path) -> str:
    """One audit's score against its held-out control (:mod:`dejavu.audit.control`):
    the verdict, score / control / excess with the paired bootstrap CI at 20% and 100%, and
    the control's images; or why the audit has none (``control_skipped``)."""

    name = html.escape(os.path.relpath(r.dir, run_dir))
    head = f"<h3>Score against the held-out control: {name}</h3>"
    if r.control is None:
        why = r.raw.get("control_skipped") or "none"
        return (
            f"{head}<p class='muted'>No held-out control in this audit ({html.escape(str(why))}): the score's CI "
            "covers the choice of audited images only, and nothing says how large a score this model and "
            "classifier reach without memorization (dejavu partition --control N, or dejavu audit "
            "--control VAL_DIR).</p>"
        )
    ex = r.excess()
    rows = (
        [f"<tr><th>verdict (top-1, 20%)</th><td>{html.escape(verdict_text(ex, one_model=True))}</td></tr>"]
        if ex
        else []
    )
    rows += _excess_rows(r)
    c = r.control
    n = c["counts"]["control"]
    dropped = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in (c["source"].get("excluded") or {}).items() if v)
    rows.append(
        f"<tr><th>held-out control</th><td>{html.escape(str(c['source'].get('kind', '?')))} images, "
        f"{n['attacked']} of {n['bbox']} attacked"
        + (f" (excluded: {html.escape(dropped)})" if dropped else "")
        + " <span class='muted'>(neither the model nor the classifier trained on them; no gap expected)</span>"
        "</td></tr>"
    )
    return head + "<table class='head'>" + "".join(rows) + "</table>"


def _results_table(attacks: list[AttackRecord], run_dir: Path) -> str:
    if not attacks:
        return ""
    rows = [
        (
            "<tr><th>folder</th><th>method</th><th>npc</th><th>epoch</th><th>variant</th><th>target 20%</th>"
            "<th>reference 20%</th><th>score (pts)</th><th>memorized</th></tr>"
        )
    ]
    for r in sorted(attacks, key=lambda r: (r.method, r.variant, r.npc, r.epoch)):
        rows.append(
            f"<tr><td>{html.escape(os.path.relpath(r.dir, run_dir))}</td><td>{html.escape(r.method)}</td>"
            f"<td>{r.npc}</td><td>{r.epoch}</td><td>{html.escape(r.variant)}</td>"
            f"<td>{_pct(r.acc('target', 20))}</td><td>{_pct(r.acc('reference', 20))}</td>"
            f"<td>{pts(r.score())}</td><td>{_pct(r.quadrants.get('memorized', float('nan')))}</td></tr>"
        )
    return "<table class='all'>" + "".join(rows) + "</table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0} th,td{padding:.25em .8em;text-align:left;border-bottom:1px solid #eee}
table.head th{font-weight:normal;color:#555} td.big{font-size:1.4em;font-weight:bold}
.q{padding:0 .3em;border-radius:3px}.memorized{background:#f3d0d1}.correlated{background:#d4deef}
.forgotten{background:#f7ddcb}.unassociated{background:#eee}
figure{display:inline-block;margin:.3em;vertical-align:top} figcaption{font-size:.8em;color:#555;max-width:340px}
.fig img{max-width:100%} .example{border:1px solid #eee;border-radius:6px;margin:.6em 0;padding:.4em}
img.nb{margin:1px;border:3px solid transparent} img.nb.ok{border-color:#3c3} img.nb.no{border-color:#d33}
.red{color:#d22}.green{color:#1a1}.muted{color:#888;font-size:.85em}
table.all,table.head{display:block;max-width:100%;overflow-x:auto} td,th{overflow-wrap:anywhere}
p.verdict{font-size:1.15em;background:#f6f6f0;border-left:4px solid #886;padding:.6em .9em;max-width:60em}
.prov code{font-size:.9em;overflow-wrap:anywhere}
"""


def _verdict(results: Results, head: AttackRecord | None, row: dict | None) -> str:
    """The verdict the page opens with (:mod:`dejavu.report.verdict`); ``row``: :func:`_head_row`."""

    v = overall(head, row, results.audits)
    if v is None:
        return "<p class='verdict'><b>Verdict: none.</b> Only linear probes here: no attack or audit to judge.</p>"
    return f"<p class='verdict'><b>Verdict: {html.escape(v.label)}.</b> {html.escape(v.text)}</p>"


def _provenance(command: str | None) -> str:
    """Tool version, command, date and machine, under the title."""

    ours = Path(sys.argv[0]).name in ("dejavu", "__main__.py")  # the CLI, or python -m dejavu
    cmd = command if command is not None else shlex.join(["dejavu" if ours else sys.argv[0], *sys.argv[1:]])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node() or '?'} ({platform.platform(terse=True)}, Python {platform.python_version()})"
    return (
        f"<p class='muted prov'>dejavu {html.escape(__version__)} &middot; {html.escape(when)} &middot; "
        f"{html.escape(machine)}<br><code>{html.escape(cmd)}</code></p>"
    )


@locks_output("report", folder_of=lambda a: Path(a["out"]).parent if a["out"] is not None else a["run_dir"])
def build_report(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    force: bool = False,
    data=None,
    n_examples: int = 6,
    n_neighbours: int = 5,
    params: tuple[str, ...] = (),
    command: str | None = None,
) -> Path:
    """Write ``report.html`` for a run folder (DESIGN 3 layout).

    Args:
        run_dir: the run folder, holding ``attack/``, ``probe/`` and/or ``audit/`` (and
            ``partition/``, ``plots/``, ``rcdm/`` when present).
        out: the page to write; default ``RUN_DIR/report.html``.
        force: overwrite ``out`` and remake the figures in ``RUN_DIR/plots`` (without it the
            figures are made only when ``plots/figures.json`` is missing).
        data: a :class:`dejavu.data.DataPaths` overriding the dataset paths stored in the
            partition manifest, for the galleries.
        n_examples: examples per gallery (most memorized, most correlated).
        n_neighbours: public-set neighbours shown per model in a gallery example.
        params: model-config keys that split the figures' series (``dejavu plot --param``).
        command: the command that made the page, stated with the version, date and machine
            (default: this process's command line).

    Returns:
        The path of the page written.

    Raises:
        DejavuError: no run folder, no results under it, ``out`` exists without ``force``, or
            the galleries' image folder is missing.
    """

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DejavuError(f"{run_dir}: run folder not found")
    out = Path(out) if out is not None else run_dir / "report.html"
    check_can_write(out, force)
    results = _collect_run(run_dir)
    head = pick_headline(results.attacks)
    audit_head = pick_audit(results.audits, None) if head is None else None  # a report of audits only
    probe = pick_probe(results.probes, head or audit_head)
    row = _head_row(results.attacks, head)  # computed once: it reads every seed pair's arrays
    sections = [
        f"<h1>Déjà vu report: {html.escape(run_dir.resolve().name)}</h1>",
        _provenance(command),
        _verdict(results, head, row),
        "<h2>Headline</h2>",
        _headline(head or audit_head, probe, audit=head is None),
        _control(head, row),
    ]
    if results.audits:
        sections.append(_one_model(results.audits, head, run_dir))
    if results.skipped:
        sections.append(
            "<p class='muted'>Skipped malformed results: "
            + "; ".join(html.escape(f"{p}: {why}") for p, why in results.skipped)
            + "</p>"
        )
    if head is not None:
        last = [r for r in results.attacks if r.epoch == head.epoch]
        sections += [f"<h2>All attacks at epoch {head.epoch}</h2>", _results_table(last, run_dir)]
    sections.append(_figures(results, run_dir, out, force, params))
    shown = head or audit_head
    if shown is not None:
        sections.append(_galleries(shown, run_dir, data, n_examples, n_neighbours))
    sections.append(_rcdm(run_dir))
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>deja vu report: {html.escape(run_dir.resolve().name)}</title><style>{CSS}</style></head><body>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )
    atomic_write_text(out, page)
    return out


def _collect_run(run_dir: Path) -> Results:
    """The results under ``RUN_DIR/{attack,probe,audit}``; an error when there are none."""
    roots = [run_dir / s for s in ("attack", "probe", "audit") if (run_dir / s).is_dir()]
    if not roots:
        raise DejavuError(
            f"{run_dir}: no attack/, probe/ or audit/ folder (expected the layout runs/<name>/{{attack,probe,audit}})"
        )
    results: Results = collect(roots)
    for path, why in results.skipped:  # as `dejavu plot`: never left out without a word
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if not len(results):
        raise DejavuError(f"{run_dir}: no attack or probe results.json under attack/, probe/ or audit/")
    return results


def _figures(results: Results, run_dir: Path, out: Path, force: bool, params: tuple[str, ...]) -> str:
    """The figures section: made into ``RUN_DIR/plots`` if absent (or with ``force``), each
    PNG embedded with links to its other files (PDF, data) relative to the page."""

    plots = run_dir / "plots"
    parts = ["<h2>Figures</h2>"]
    if not results.attacks and results.audits:  # a report of audits: their figures, read alike
        results = Results(attacks=results.audits, probes=results.probes, skipped=results.skipped)
        parts.append(
            "<p class='muted'>From the one-model tests: <i>target</i> is the audited model, <i>reference</i> "
            "the crop classifier.</p>"
        )
    if force or not (plots / "figures.json").is_file():
        make_figures(results, plots, params=params, force=True)
    figures = read_json(plots / "figures.json").get("figures", [])
    if not figures:
        parts.append("<p class='muted'>Not enough results for a figure (a sweep needs two points).</p>")
    for f in figures:
        png = next((plots / x for x in f["files"] if x.endswith(".png") and (plots / x).is_file()), None)
        if png is None:
            continue
        links = " ".join(
            f'<a href="{html.escape(os.path.relpath(plots / x, out.parent))}">{x.rsplit(".", 1)[1]}</a>'
            for x in f["files"] + [f["data"]]
            if not x.endswith(".png") and (plots / x).is_file()
        )
        parts.append(
            f'<figure class="fig"><img src="{_file_uri(png)}" alt="{html.escape(f["title"])}">'
            f"<figcaption>{html.escape(f['caption'])} {links}</figcaption></figure>"
        )
    return "\n".join(parts)


def _rcdm(run_dir: Path) -> str:
    """RCDM reconstructions found under ``RUN_DIR/rcdm`` (the first 48 PNGs), or nothing."""
    rcdm = sorted((run_dir / "rcdm").rglob("*.png")) if (run_dir / "rcdm").is_dir() else []
    if not rcdm:
        return ""
    parts = ["<h2>RCDM reconstructions</h2>"]
    for p in rcdm[:48]:
        parts.append(
            f'<figure><img src="{_file_uri(p)}" alt="{html.escape(p.name)}" style="max-width:360px">'
            f"<figcaption>{html.escape(str(p.relative_to(run_dir)))}</figcaption></figure>"
        )
    return "\n".join(parts)


def _galleries(head: AttackRecord, run_dir: Path, data, n_examples: int, n_neighbours: int) -> str:
    ex_path = head.dir / "examples.csv"
    if not ex_path.is_file():
        return f"<h2>Examples</h2><p class='muted'>{html.escape(str(ex_path))} not found.</p>"
    ranked = rank_examples(read_examples(ex_path), n_examples)
    if data is None:
        man = run_dir / "partition" / "manifest.json"
        if not man.is_file():
            return (
                "<h2>Examples</h2><p class='muted'>No dataset for the galleries: pass --data, or keep "
                f"{html.escape(str(man))}.</p>"
            )
        m = read_json(man)
        images = Path(m["images"])
        bboxes = Path(m["bboxes"]) if m.get("bboxes") not in (None, "None") else None
        if not images.is_dir():
            raise DejavuError(f"{man}: image folder {images} not found; pass --data")
        data = DataPaths.resolve(images=images, bboxes=bboxes if bboxes and bboxes.is_dir() else None)
    index = scan_imagefolder(data.images)
    if head.raw.get("fingerprint"):
        index.fingerprint.check(Fingerprint.from_dict(head.raw["fingerprint"]), what=f"attack {head.path}")
    gal = Gallery(head, index, data.annotation_dir, n_neighbours)

    out = []
    tr = ("model", "classifier") if gal.audit else ("target", "reference")
    titles = {
        "memorized": f"Most memorized examples ({tr[0]} right, {tr[1]} wrong; by confidence gap)",
        "correlated": "Most correlated examples (both right; by the lower confidence)",
    }
    legend = (
        "<p class='muted legend'>Each example: the image with its object boxes (<span class='red'>red</span>) "
        "and the background crop the attack sees (<span class='green'>green</span>); the crop alone; then, per "
        "model, the crop's nearest public images, framed <span class='green'>green</span> when of the image's "
        "own class and <span class='red'>red</span> otherwise, and the class they vote for. Confidence is how "
        "concentrated the vote is: the negative entropy of the neighbours' labels (of the classifier's "
        "probabilities), shown as the number of classes it spreads over (1 = unanimous; more = less "
        "confident). The galleries rank by it: memorized by the gap between the two, correlated by the "
        "lower of the two.</p>"
    )
    for kind in ("memorized", "correlated"):
        out.append(f"<h2>{titles[kind]}</h2>" + (legend if kind == "memorized" else ""))
        if not ranked[kind]:
            out.append("<p class='muted'>none</p>")
        out += [gal.cell(e) for e in progress(ranked[kind], desc=f"report: {kind}")]
    return "".join(out)
