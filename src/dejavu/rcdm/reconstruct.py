"""Reconstruct attacked images from their background crops with RCDMs (docs/DESIGN.md 2.8).

For an attacked example of set Y the *target* model is the one trained on Y, the *control* the
other. Under each model X the crop is the attack's (``crops_<Y>.npy``; recomputed from
``results.json``'s settings for attack folders without it), the conditioning is
``concat(mean backbone_X of the crop's nearest public neighbours under X, projector_X(crop))``
(a supervised model's RCDM: ``logits_X(crop)``), and RCDM_X samples by DDIM from noise that is
the same for both models, so the two rows differ only by model (files: :func:`reconstruct`).
The selection helpers (:func:`load_examples`, :func:`select_examples`, :func:`class_summary`)
are pure functions of ``examples.csv``, ranked as docs/DESIGN.md 2.5.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dejavu import DejavuError, UsageError, formats
from dejavu.analysis.tables import check_attack_format, read_examples_csv, read_neighbour_idxs
from dejavu.attack.crops import crop_for_config
from dejavu.data.annotations import read_voc_xml
from dejavu.data.fastjpeg import load_rgb
from dejavu.data.imagefolder import DataPaths, DatasetIndex, annotation_path, scan_imagefolder
from dejavu.data.transforms import eval_transform
from dejavu.device import choose_device
from dejavu.io import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    check_can_write,
    load_npy,
    locks_output,
    read_json,
)
from dejavu.utils import progress

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from dejavu.rcdm.model import LoadedRCDM
    from dejavu.ssl.model import SSLModel

RULES = ("most-memorized", "most-correlated", "most-confident")


@dataclass
class ReconstructConfig:
    """The settings of ``dejavu rcdm reconstruct`` (stored in reconstruct.json by :func:`reconstruct`)."""

    select: str = field(
        default="most-memorized:10",
        metadata={"help": f"{' | '.join(r + ':N' for r in RULES)} | IDX,IDX,... (dataset indices of attacked images)"},
    )
    samples: int = field(default=4, metadata={"help": "images per example and model"})
    ddim_steps: int | None = field(default=None, metadata={"help": "DDIM steps; None = the RCDM's config"})
    neighbours: int = field(default=5, metadata={"help": "public neighbours averaged"})
    seed: int = field(default=0, metadata={"help": "noise seed; the noise of an example is seed + its index"})

    def validate(self) -> None:
        parse_select(self.select)
        for name in ("samples", "neighbours"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.ddim_steps is not None and self.ddim_steps < 1:
            raise UsageError(f"ddim_steps={self.ddim_steps}: must be >= 1")


# ---------------------------------------------------------------- selection (pure)


def load_examples(attack_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of ``ATTACK_DIR/examples.csv`` with typed values (:func:`dejavu.analysis.tables.read_examples_csv`)."""

    return read_examples_csv(Path(attack_dir) / "examples.csv")


def _score(row: dict[str, Any], rule: str) -> float:
    if rule == "most-memorized":
        return row["conf_target"] - row["conf_reference"]
    if rule == "most-correlated":
        return min(row["conf_target"], row["conf_reference"])
    if rule == "most-confident":
        return row["conf_target"]
    raise UsageError(f"unknown selection rule {rule!r}; one of {', '.join(RULES)}")


def select_examples(
    examples: Sequence[dict[str, Any]], rule: str, n: int, label: int | None = None, set_name: str | None = None
) -> list[dict[str, Any]]:
    """The ``n`` top examples by ``rule``: memorized ones by ``conf_target - conf_reference``,
    correlated ones by ``min(conf_target, conf_reference)``, confident ones by ``conf_target``.

    Args:
        examples: rows from :func:`load_examples`.
        rule: ``most-memorized`` (quadrant memorized), ``most-correlated`` (quadrant correlated),
            ``most-confident`` (target right; ranked by the target's confidence).
        n: how many.
        label: only this class.
        set_name: only this set (A|B).

    Returns:
        The rows, best first (ties by dataset index).
    """
    quad = {"most-memorized": "memorized", "most-correlated": "correlated"}.get(rule)
    rows = [
        r
        for r in examples
        if (quad is None or r["quadrant"] == quad)
        and (rule != "most-confident" or r.get("correct_target", 1.0) > 0.5)
        and (label is None or r["label"] == label)
        and (set_name is None or r["set"] == set_name)
    ]
    rows.sort(key=lambda r: (-_score(r, rule), r["index"]))
    return rows[: int(n)]


def parse_select(spec: str) -> tuple[str, int] | list[int]:
    """``most-memorized:10`` | ``most-correlated:10`` | ``most-confident:10`` | ``IDX,IDX,...``."""
    spec = spec.strip()
    if ":" in spec:
        rule, n = spec.split(":", 1)
        if rule not in RULES or not n.strip().isdigit() or int(n) < 1:
            raise UsageError(f"--select {spec!r}: expected RULE:N with RULE in {', '.join(RULES)}, or IDX,IDX,...")
        return rule, int(n)
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--select {spec!r}: expected RULE:N or comma-separated dataset indices") from None
    if not idx:
        raise DejavuError("--select: nothing selected")
    return idx


def class_summary(examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class: number of attacked examples, memorized and correlated shares, target and
    reference accuracy, and ``both = min(memorized, correlated)`` (high when a class shows
    both memorization and correlation). Sorted by ``both``, then class."""
    by: dict[int, list[dict[str, Any]]] = {}
    for r in examples:
        by.setdefault(int(r["label"]), []).append(r)
    out = []
    for c, rows in by.items():
        n = len(rows)
        mem = sum(r["quadrant"] == "memorized" for r in rows) / n
        cor = sum(r["quadrant"] == "correlated" for r in rows) / n
        out.append(
            {
                "label": c,
                "n": n,
                "memorized": mem,
                "correlated": cor,
                "both": min(mem, cor),
                "acc_target": sum(float(r.get("correct_target") or 0.0) for r in rows) / n,
                "acc_reference": sum(float(r.get("correct_reference") or 0.0) for r in rows) / n,
            }
        )
    out.sort(key=lambda d: (-d["both"], d["label"]))
    return out


# ---------------------------------------------------------------- finding the RCDMs of a run


def find_rcdms(search_dir: str | os.PathLike, attack_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The RCDM run folders (under ``search_dir``, e.g. ``RUN/rcdm``) trained on the attack's
    models A and B, matched by the SSL checkpoint's sha256 stored in each RCDM's config.json.

    Args:
        search_dir: folder searched recursively for RCDM runs (``config.json`` + ``last.pth``).
        attack_dir: the attack folder (its ``results.json`` names the models' sha256).

    Returns:
        ``(run folder for model A, run folder for model B)``; the first match in sorted path
        order wins.

    Raises:
        DejavuError: no RCDM found for A or for B, or an unreadable ``results.json``.
    """
    res = read_json(Path(attack_dir) / "results.json")
    want = {s: res["models"][s]["sha256"] for s in ("A", "B")}
    found: dict[str, Path] = {}
    for cfg in sorted(Path(search_dir).glob("**/config.json")):
        try:
            sha = read_json(cfg).get("ssl", {}).get("sha256")
        except DejavuError:
            continue
        if not (cfg.parent / "last.pth").is_file():
            continue
        for s, w in want.items():
            if sha == w and s not in found:
                found[s] = cfg.parent
    missing = [s for s in ("A", "B") if s not in found]
    if missing:
        raise DejavuError(
            f"{search_dir}: no RCDM trained on model {' and '.join(missing)} of {attack_dir} "
            f"(train with `dejavu rcdm train --ssl-model <model {missing[0]} checkpoint>`)"
        )
    return found["A"], found["B"]


# ---------------------------------------------------------------- reconstruction


@dataclass
class Reconstruction:
    set: str
    index: int
    label: int
    crop_box: tuple[int, int, int, int]
    neighbours: dict[str, list[int]]  # "target"/"control" -> global indices of the neighbours used
    samples_target: np.ndarray  # uint8 (n, H, W, 3)
    samples_control: np.ndarray
    png: Path


@dataclass
class ReconstructResult:
    out: Path
    items: list[Reconstruction] = field(default_factory=list)
    summary_png: Path | None = None
    manifest: Path | None = None


def _row_of(attk_idxs: np.ndarray, g: int, what: str) -> int:
    hits = np.nonzero(attk_idxs == g)[0]
    if len(hits) == 0:
        raise DejavuError(f"{what}: dataset index {g} was not attacked")
    return int(hits[0])


def _crop_decision(res_cfg: dict[str, Any], img_size: tuple[int, int], boxes: np.ndarray | None):
    return crop_for_config(res_cfg, img_size[0], img_size[1], boxes)


def _draw_grid(
    path: Path,
    title: str,
    original,
    boxes: np.ndarray,
    crop_box,
    crop_img,
    neighbours: list,
    target: np.ndarray,
    control: np.ndarray,
    names: tuple[str, str],
) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    ncols = max(2 + len(neighbours), target.shape[0], 1)
    fig = Figure(figsize=(1.6 * ncols, 1.7 * 3 + 0.4))
    axes = fig.subplots(3, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    ax = axes[0, 0]
    ax.imshow(original)
    for b in boxes:
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="red", lw=1.2))
    x0, y0, x1, y1 = crop_box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.2, ls="--"))
    ax.set_title("original", fontsize=8)
    axes[0, 1].imshow(crop_img)
    axes[0, 1].set_title("crop", fontsize=8)
    for j, nb in enumerate(neighbours):
        axes[0, 2 + j].imshow(nb)
        axes[0, 2 + j].set_title(f"neighbour {j + 1}", fontsize=8)
    for row, (imgs, name) in enumerate(((target, names[0]), (control, names[1])), start=1):
        for j in range(imgs.shape[0]):
            axes[row, j].imshow(imgs[j])
        axes[row, 0].set_frame_on(True)
        axes[row, 0].set_ylabel(name, fontsize=8)
        axes[row, 0].yaxis.set_visible(True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _draw_summary(path: Path, items: list[Reconstruction], crops_: list[np.ndarray], classes: list[str]) -> None:
    from matplotlib.figure import Figure

    if not items:
        return
    n = items[0].samples_target.shape[0]
    ncols = 1 + 2 * n
    fig = Figure(figsize=(1.1 * ncols, 1.2 * len(items) + 0.5))
    axes = fig.subplots(len(items), ncols, squeeze=False)
    for i, (it, crop) in enumerate(zip(items, crops_)):
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].imshow(crop)
        axes[i, 0].set_ylabel(
            f"{it.set}{it.index}\n{classes[it.label] if it.label < len(classes) else it.label}", fontsize=6
        )
        for j in range(n):
            axes[i, 1 + j].imshow(it.samples_target[j])
            axes[i, 1 + n + j].imshow(it.samples_control[j])
    axes[0, 0].set_title("crop", fontsize=7)
    axes[0, 1].set_title("target RCDM", fontsize=7, loc="left")
    axes[0, 1 + n].set_title("control RCDM", fontsize=7, loc="left")
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class _ReconstructInputs:
    """What one :func:`reconstruct` call works on (filled by :func:`_open_inputs`)."""

    attack_dir: Path
    res: dict[str, Any]  # the attack's results.json
    rcdms: dict[str, LoadedRCDM]  # "A"/"B"
    ssl: dict[str, SSLModel]  # "A"/"B" -> the SSL model (eval mode, on the device)
    paths: DataPaths
    index: DatasetIndex
    fmt: str  # the attack folder's format (check_attack_format)
    tf: Callable[[Image.Image], torch.Tensor]  # the SSL models' evaluation transform
    size: int  # the RCDMs' resolution
    device: torch.device
    samples: int
    ddim_steps: int | None
    seed: int
    n_neighbours: int
    arrays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def attack_arrays(self, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
        """Model X's attack of set Y: (attacked dataset indices, neighbours' dataset indices)."""
        if (x, y) not in self.arrays:
            self.arrays[(x, y)] = (
                load_npy(self.attack_dir / f"{x}_attk_{y}_attk_idxs.npy"),
                read_neighbour_idxs(self.attack_dir, f"{x}_attk_{y}", self.fmt),
            )
        return self.arrays[(x, y)]


def _chosen_rows(attack_dir: Path, select: str | Sequence[int] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``examples.csv`` rows of the selection (a rule string, dataset indices, or rows)."""
    examples = load_examples(attack_dir)
    if isinstance(select, str):
        sel = parse_select(select)
        rows: list[Any] = select_examples(examples, *sel) if isinstance(sel, tuple) else sel
    else:
        rows = list(select)
    by_index = {r["index"]: r for r in examples}
    chosen = []
    for r in rows:
        g = int(r["index"]) if isinstance(r, dict) else int(r)
        if g not in by_index:
            raise DejavuError(f"{attack_dir / 'examples.csv'}: dataset index {g} is not an attacked example")
        chosen.append(by_index[g])
    if not chosen:
        raise DejavuError(f"{attack_dir}: the selection {select!r} matched no attacked example")
    return chosen


def _load_models(
    attack_dir: Path, res: dict[str, Any], rcdm_paths: dict[str, str | os.PathLike], dev: torch.device
) -> tuple[dict[str, LoadedRCDM], dict[str, SSLModel]]:
    """Each model's RCDM and SSL model, checked against the attack's models (sha256)."""
    from dejavu.rcdm.model import load_rcdm
    from dejavu.ssl.checkpoint import load_model

    rcdms, ssl = {}, {}
    for s, p in rcdm_paths.items():
        rc = load_rcdm(p)
        want = res["models"][s]
        if rc.ssl.get("sha256") != want.get("sha256"):
            raise DejavuError(
                f"{rc.path}: trained on SSL checkpoint {rc.ssl.get('path')} but model {s} of "
                f"{attack_dir} is {want.get('path')} (sha256 differs); pass the RCDM of model {s}"
            )
        ckpt = want.get("path") if want.get("path") and Path(want["path"]).is_file() else rc.ssl.get("path")
        if not ckpt:
            raise DejavuError(f"{rc.path}: names no SSL checkpoint, and {attack_dir} names none for model {s}")
        lm = load_model(ckpt)
        if lm.sha256 != want.get("sha256"):
            raise DejavuError(f"{ckpt}: changed since the attack (sha256 differs from {attack_dir / 'results.json'})")
        rcdms[s], ssl[s] = rc, lm.model.to(dev).eval()
        rc.model.to(dev)
    a, b = rcdms["A"].config.image_size, rcdms["B"].config.image_size
    if a != b:
        raise DejavuError(f"{rcdm_paths['A']} and {rcdm_paths['B']}: RCDMs of different resolutions ({a} vs {b})")
    return rcdms, ssl


def _open_inputs(
    attack_dir: Path,
    rcdm_a: str | os.PathLike,
    rcdm_b: str | os.PathLike,
    data: Any,
    device: str | None,
    **settings: Any,
) -> _ReconstructInputs:
    """The attack's results, both models and RCDMs, the dataset (checked against the attack)."""

    dev = choose_device(device)
    res = read_json(attack_dir / "results.json")
    fmt = check_attack_format(res, attack_dir / "results.json")
    rcdms, ssl = _load_models(attack_dir, res, {"A": rcdm_a, "B": rcdm_b}, dev)
    if data is None:
        d = rcdms["A"].raw.get("data") or {}
        paths = DataPaths.resolve(images=d.get("images"), bboxes=d.get("bboxes"))
    else:
        paths = data if isinstance(data, DataPaths) else DataPaths.resolve(data=data)
    index = scan_imagefolder(paths.images)
    if res.get("fingerprint"):
        index.fingerprint.check(res["fingerprint"], what=f"attack {attack_dir}")
    ssl_size = int(rcdms["A"].ssl.get("image_size") or (res.get("config") or {}).get("image_size") or 224)
    return _ReconstructInputs(
        attack_dir,
        res,
        rcdms,
        ssl,
        paths,
        index,
        fmt,
        eval_transform(ssl_size),
        rcdms["A"].config.image_size,
        dev,
        **settings,
    )


def _crop_box(
    inp: _ReconstructInputs, y: str, g: int, img_size: tuple[int, int], boxes: np.ndarray
) -> tuple[int, int, int, int]:
    """The attack's own crop box (``crops_<Y>.npy``, aligned with ``<Y>_attk_<Y>_attk_idxs.npy``);
    recomputed with the attack's settings for older attack folders without it."""
    f = inp.attack_dir / f"crops_{y}.npy"
    if f.is_file():
        attk, _ = inp.attack_arrays(y, y)
        boxes_y = load_npy(f)
        if len(boxes_y) == len(attk):
            return tuple(int(v) for v in boxes_y[_row_of(attk, g, str(f))])  # type: ignore[return-value]
    dec = _crop_decision(dict(inp.res.get("config") or {}), img_size, boxes)
    if not dec.ok:
        raise DejavuError(
            f"{inp.index.path(g)}: no valid crop ({dec.reason}) although it was attacked; "
            f"was the attack run with other crop settings?"
        )
    return dec.pixel_box()


def _draw_samples(
    inp: _ReconstructInputs, x: str, y: str, g: int, crop: Any, noise: Any
) -> tuple[np.ndarray, list[int]]:
    """RCDM_X's samples for example ``g`` of set Y, and the public neighbours that conditioned them."""
    import torch

    from dejavu.rcdm.sample import sample, to_uint8

    attk, nb = inp.attack_arrays(x, y)
    row = _row_of(attk, g, f"{inp.attack_dir}/{x}_attk_{y}_attk_idxs.npy")
    nb_g = [int(v) for v in nb[row, : inp.n_neighbours]]
    model, tf = inp.ssl[x], inp.tf
    with torch.no_grad():
        xc = tf(crop).unsqueeze(0).to(inp.device)
        if inp.rcdms[x].ssl.get("embed", "both") == "logits":
            rep = model.embed(xc, "logits")
        else:
            xn = torch.stack([tf(load_rgb(inp.index.path(v))) for v in nb_g]).to(inp.device)
            rep = torch.cat([model.embed(xn, "backbone").mean(0, keepdim=True), model.embed(xc, "projector")], 1)
    drawn = sample(inp.rcdms[x].model, rep.expand(inp.samples, -1), noise=noise, ddim_steps=inp.ddim_steps)
    return to_uint8(drawn).numpy(), nb_g


def _reconstruct_one(
    inp: _ReconstructInputs, row: dict[str, Any], out: Path
) -> tuple[Reconstruction, np.ndarray, dict[str, Any]]:
    """One example: crop, both models' samples (same noise), its files and grid PNG."""
    from dejavu.rcdm.sample import make_noise

    y, g = row["set"], int(row["index"])
    other = "B" if y == "A" else "A"
    img = load_rgb(inp.index.path(g))
    boxes = _boxes(inp, g)
    crop_box = _crop_box(inp, y, g, img.size, boxes)
    crop = img.crop(crop_box)
    noise = make_noise(inp.samples, inp.size, inp.seed + g)
    outs, neigh = {}, {}
    for role, x in (("target", y), ("control", other)):
        outs[role], neigh[role] = _draw_samples(inp, x, y, g, crop, noise)
    sub, crop_arr = out / f"{y}_{g}", np.asarray(crop)
    for name, arr in (
        ("samples_target", outs["target"]),
        ("samples_control", outs["control"]),
        ("crop", crop_arr),
        ("neighbours_target", np.array(neigh["target"])),
        ("neighbours_control", np.array(neigh["control"])),
    ):
        atomic_save_npy(sub / f"{name}.npy", arr)
    png, label = out / f"{y}_{g}.png", int(row["label"])
    cname = inp.index.classes[label] if label < len(inp.index.classes) else str(label)
    _draw_grid(
        png,
        f"set {y}, index {g}, class {cname} ({row['quadrant']}); target = model {y}, control = model {other}",
        np.asarray(img),
        boxes,
        crop_box,
        crop_arr,
        [np.asarray(load_rgb(inp.index.path(v))) for v in neigh["target"]],
        outs["target"],
        outs["control"],
        (f"RCDM {y} (target)", f"RCDM {other} (control)"),
    )
    item = Reconstruction(
        set=y,
        index=g,
        label=label,
        crop_box=crop_box,
        neighbours=neigh,
        samples_target=outs["target"],
        samples_control=outs["control"],
        png=png,
    )
    record = _record(inp, row, item, cname)
    return item, crop_arr, record


def _boxes(inp: _ReconstructInputs, g: int) -> np.ndarray:
    """The object boxes of image ``g`` (none when it has no annotation file)."""

    ann_dir = inp.paths.annotation_dir
    if ann_dir is not None and annotation_path(inp.index, ann_dir, g).is_file():
        return read_voc_xml(annotation_path(inp.index, ann_dir, g)).boxes
    return np.zeros((0, 4))


def _record(inp: _ReconstructInputs, row: dict[str, Any], item: Reconstruction, cname: str) -> dict[str, Any]:
    """The example's entry in ``reconstruct.json``."""
    return {
        "set": item.set,
        "index": item.index,
        "label": item.label,
        "class": cname,
        "quadrant": row["quadrant"],
        "conf_target": row["conf_target"],
        "conf_reference": row["conf_reference"],
        "crop_box": list(item.crop_box),
        "neighbours": item.neighbours,
        "png": item.png.name,
        "tensors": f"{item.set}_{item.index}/",
        "noise_seed": inp.seed + item.index,
    }


@locks_output("rcdm reconstruct")
def reconstruct(
    attack_dir: str | os.PathLike,
    rcdm_a: str | os.PathLike,
    rcdm_b: str | os.PathLike,
    select: str | Sequence[int] | Sequence[dict[str, Any]],
    out: str | os.PathLike,
    samples: int = 4,
    ddim_steps: int | None = None,
    seed: int = 0,
    data: Any = None,
    n_neighbours: int = 5,
    device: str | None = None,
    force: bool = False,
) -> ReconstructResult:
    """Reconstruct the selected attacked examples under the target and control RCDMs.

    Args:
        attack_dir: an attack folder (results.json, examples.csv, neighbour arrays).
        rcdm_a: the RCDM (folder or .pth) trained on the attack's model A.
        rcdm_b: the RCDM trained on model B.
        select: ``"most-memorized:10"``-style string, dataset indices, or rows from
            :func:`select_examples`.
        out: the folder to write.
        samples: images per example and model.
        ddim_steps: DDIM steps (default: the RCDM's config).
        seed: noise seed (an example's noise is ``seed + index``).
        data: dataset root or ``DataPaths`` (default: where the RCDM was trained).
        n_neighbours: public neighbours averaged.
        device: cpu | cuda | cuda:N.
        force: overwrite an existing OUT.

    Returns:
        A :class:`ReconstructResult`: the images as arrays as well as the files written::

            <set>_<index>.png    original with its boxes (red) and the crop (green), the crop,
                                 the neighbours, the target RCDM's samples, the control's
            <set>_<index>/samples_target.npy, samples_control.npy   uint8 (n, H, W, 3)
            <set>_<index>/crop.npy, neighbours_target.npy, neighbours_control.npy
            summary.png          one row per example: crop | target samples | control samples
            reconstruct.json     selection, models, crops, neighbours, file names
    """

    attack_dir, out = Path(attack_dir), Path(out)
    chosen = _chosen_rows(attack_dir, select)
    check_can_write(out, force)
    inp = _open_inputs(
        attack_dir,
        rcdm_a,
        rcdm_b,
        data,
        device,
        samples=samples,
        ddim_steps=ddim_steps,
        seed=seed,
        n_neighbours=n_neighbours,
    )
    result = ReconstructResult(out=out)
    crops_: list[np.ndarray] = []
    records = []
    out.mkdir(parents=True, exist_ok=True)
    for row in progress(chosen, desc="rcdm: reconstructing"):
        item, crop_arr, record = _reconstruct_one(inp, row, out)
        result.items.append(item)
        crops_.append(crop_arr)
        records.append(record)
    result.summary_png = out / "summary.png"
    _draw_summary(result.summary_png, result.items, crops_, inp.index.classes)
    result.manifest = atomic_write_json(
        out / "reconstruct.json",
        {
            "format": formats.RCDM_RECONSTRUCT,
            "attack": str(attack_dir),
            "select": select if isinstance(select, str) else [int(r["index"]) for r in chosen],
            "samples": samples,
            "ddim_steps": ddim_steps or inp.rcdms["A"].config.ddim_steps,
            "seed": seed,
            "n_neighbours": n_neighbours,
            "rcdm": {
                s: {"path": str(inp.rcdms[s].path), "step": inp.rcdms[s].step, "embed": inp.rcdms[s].ssl.get("embed")}
                for s in "AB"
            },
            "fingerprint": inp.index.fingerprint.to_dict(),
            "items": records,
        },
    )
    return result
