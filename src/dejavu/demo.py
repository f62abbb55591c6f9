"""``dejavu demo``: the whole pipeline on the embedded synthetic default, on a CPU.

Stages (each writes files into ``OUT``, DESIGN section 3)::

    OUT/data/                  synthetic dataset (ImageNet layout)
    OUT/partition/             A / B / shared / public index sets (+ control/ held-out sets)
    OUT/train/<m>_<npc>pc_A/   target model, snapshots model_ep{E}.pth
    OUT/train/<m>_<npc>pc_B/   reference model
    OUT/attack/<m>_<npc>pc/ep{E}/   the attack at every snapshot
    OUT/attack_control/<m>_<npc>pc/ep{E}/  the same attack on held-out images (no gap expected)
    OUT/audit/<m>_<npc>pc_A/ep{E}/  the one-model test of the final target model (dejavu audit)
    OUT/probe/<m>_<npc>pc_A/   linear probe of the final target model
    OUT/plots/, OUT/report.html, OUT/summary.json

The recipe (sizes, epochs, mild augmentation) is the one that makes the deja vu gap
clearly measurable on a 2-core CPU: few private images seen many times each,
objects large enough that the embedding organises by object, and colour jitter mild
enough not to wash out the image-specific background.

The held-out control: annotated public images set aside per class (and removed from
the public set searched by the control attack), split in two halves that play the
roles of A and B. Neither model trained on them, so target and reference should do
equally well.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    seed: int = 0
    method: str = "vicreg"
    classes: int = 10
    per_class: int = 320  # 10 A + 10 B + 100 control + ~200 public per class
    annotated_fraction: float = 0.375  # 120 annotated per class
    size: int = 32
    npc: int = 10
    control_per_class: int = 100
    epochs: int = 300
    snapshot_every: int = 100
    # KNN neighbours. The paper's k=100 is ~1/7 of ImageNet's ~700 public images per class;
    # with 200 public images per class here, k=20 keeps that ratio (k=100 would vote over
    # half a class and flatten the confidence ranking that the top-20% test relies on).
    k: int = 20
    probe_epochs: int = 100
    rcdm: bool = False
    rcdm_steps: int = 1500  # ~9 min for both RCDMs on 2 cores (measured 539 s)
    threads: int | None = None
    extra_train_sets: list[str] = field(default_factory=list)

    @classmethod
    def quick(cls, **kw) -> "DemoConfig":
        """Every stage, smaller and shorter: about 2 minutes on 2 cores."""
        base = dict(per_class=140, annotated_fraction=80 / 140, control_per_class=40, epochs=60,
                    snapshot_every=30, k=10, probe_epochs=30, rcdm_steps=200)
        base.update(kw)
        return cls(**base)


@dataclass
class DemoResult:
    out: Path
    summary: dict[str, Any]
    report: Path


def _stamp(msg: str, t0: float) -> None:
    # "\r": start at column 0 even if a finished worker's progress bar left the cursor mid-line
    print(f"\r[{time.time() - t0:6.1f}s] {msg}", flush=True)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _progress_slot(out: str) -> None:
    """Progress bars of the A and B workers on their own terminal lines, labelled."""
    s = "B" if str(out).endswith("_B") else "A"
    os.environ["DEJAVU_PROGRESS_POSITION"] = "1" if s == "B" else "0"
    os.environ["DEJAVU_PROGRESS_PREFIX"] = f"[{s}] "


def _train_one(args: tuple) -> str:
    """Train one model in its own process with one torch thread (see :func:`run_demo`)."""
    cfg_dict, images, bboxes, index_file, out, force, threads = args
    import torch

    torch.set_num_threads(threads)
    _progress_slot(out)
    from dejavu.data.imagefolder import DataPaths
    from dejavu.ssl.config import TrainConfig
    from dejavu.ssl.train import train

    cfg = TrainConfig(**{**cfg_dict, "threads": threads})
    # --force starts over; otherwise an interrupted demo continues from last.pth
    res = train(cfg, DataPaths(Path(images), Path(bboxes) if bboxes else None), index_file, out,
                resume=not force, force=force)
    return str(res.out)


def make_control_sets(part_dir: Path, targets: np.ndarray, annotated: np.ndarray, per_class: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out control: the first ``per_class`` annotated public images of each class,
    split alternately into two halves; returns (ctrl_A, ctrl_B, public without them)."""
    from dejavu.partition import Partition

    part = Partition.load(part_dir)
    public = part.attack_public()
    chosen = []
    for c in np.unique(targets):
        cand = public[(targets[public] == c) & annotated[public]][:per_class]
        chosen.append(cand)
    ctrl = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    ctrl_a, ctrl_b = np.sort(ctrl[0::2]), np.sort(ctrl[1::2])
    rest = np.setdiff1d(public, ctrl)
    return ctrl_a.astype(np.int64), ctrl_b.astype(np.int64), rest.astype(np.int64)


def run_demo(cfg: DemoConfig, force: bool = False) -> DemoResult:
    from dejavu.attack.run import AttackConfig, attack, snapshot_epochs
    from dejavu.data.imagefolder import DataPaths, annotated_mask, scan_imagefolder
    from dejavu.data.synth import SynthConfig, generate
    from dejavu.io import atomic_save_npy, atomic_write_json, check_can_write
    from dejavu.partition import partition
    from dejavu.probe import probe
    from dejavu.report.html import build_report
    from dejavu.ssl.config import load_train_config
    from dejavu.utils import progress, set_torch_threads

    t0 = time.time()
    out = Path(cfg.out)
    if (out / "summary.json").exists() and not force:
        raise DejavuError(f"{out}: a demo run already exists here; pass --force to redo it, or --out elsewhere")
    check_can_write(out, force=True)
    out.mkdir(parents=True, exist_ok=True)
    threads = set_torch_threads(cfg.threads)
    tag = f"{cfg.method}_{cfg.npc}pc"

    # 1) data
    data = out / "data"
    scfg = SynthConfig(classes=cfg.classes, per_class=cfg.per_class, size=cfg.size,
                       annotated_fraction=cfg.annotated_fraction, seed=cfg.seed)
    if not (data / "synth.json").exists() or force:
        generate(data, scfg, force=True, workers=min(2, os.cpu_count() or 1))
    how = "--threads" if cfg.threads else "DEJAVU_THREADS" if os.environ.get("DEJAVU_THREADS") else "usable cores"
    _stamp(f"data: {cfg.classes * cfg.per_class} synthetic images ({cfg.size}px) in {data}; "
           f"torch threads {threads} ({how})", t0)

    # 2) partition + control sets
    paths = DataPaths.resolve(data=data)
    index = scan_imagefolder(paths.images)
    pdir = out / "partition"
    pres = partition(paths, [cfg.npc], pdir, force=True, index=index)
    annotated = annotated_mask(index, paths.annotation_dir)
    ctrl_a, ctrl_b, ctrl_public = make_control_sets(pdir, index.targets, annotated, cfg.control_per_class)
    for name, arr in (("ctrl_A", ctrl_a), ("ctrl_B", ctrl_b), ("public", ctrl_public)):
        atomic_save_npy(pdir / "control" / f"{name}.npy", arr)
    c = pres.splits[cfg.npc].counts()
    _stamp(f"partition: |A|=|B|={c['bbox_A']} attacked images, public {c['public']}, "
           f"control {len(ctrl_a) + len(ctrl_b)} held-out", t0)

    # 3) train target (A) and reference (B); same seed -> same initial weights
    tcfg = load_train_config(method=cfg.method, sets=[
        f"epochs={cfg.epochs}", f"snapshot_every={cfg.snapshot_every}", f"seed={cfg.seed}",
        f"image_size={cfg.size}", "knn_every=0", *cfg.extra_train_sets])
    runs = {s: out / "train" / f"{tag}_{s}" for s in "AB"}
    jobs = [(asdict(tcfg), str(paths.images), str(paths.bboxes), str(pdir / f"{cfg.npc}_per_class" / f"train_{s}.npy"),
             str(runs[s]), force, 1) for s in "AB"]
    parallel = _cores() >= 2 and cfg.threads in (None, 1)
    _stamp(f"train: {cfg.method} x2 ({cfg.epochs} epochs, snapshots every {cfg.snapshot_every}; "
           f"{'2 processes x 1 thread' if parallel else f'sequential, {threads} thread(s)'})", t0)
    _map(_train_one, jobs, parallel, threads)
    _stamp("train: done", t0)

    # 4) attack every snapshot, 5) the held-out control at every snapshot. Both search the
    # same public set (the partition's, minus the held-out control images).
    acfg = AttackConfig(npc=cfg.npc, k=cfg.k, k_attk=cfg.k, device="cpu", seed=cfg.seed)
    epochs = sorted(set(snapshot_epochs(runs["A"])) & set(snapshot_epochs(runs["B"])))
    atk, ctrl = [], []
    for ep in progress(epochs, desc="attack snapshots"):
        ma, mb = runs["A"] / f"model_ep{ep}.pth", runs["B"] / f"model_ep{ep}.pth"
        atk.append(attack(ma, mb, pdir, paths, out / "attack" / tag / f"ep{ep}", acfg, force=True, index=index,
                          public=ctrl_public))
        ctrl.append(attack(ma, mb, pdir, paths, out / "attack_control" / tag / f"ep{ep}", acfg, force=True,
                           index=index, sets={"A": ctrl_a, "B": ctrl_b}, public=ctrl_public, label="control"))
    _stamp(f"attack: {len(atk)} snapshot pairs, and the held-out control", t0)
    audit_info = _run_audit(cfg, out, runs, pdir, paths, max(epochs), tag, index, ctrl_a, ctrl_b, ctrl_public, t0)

    # 6) probe of the final target model (features computed once: no augmentation)
    final = max(r.results["epoch"] for r in atk)
    pr = probe(runs["A"] / f"model_ep{final}.pth", pdir, cfg.npc, paths, out / "probe" / f"{tag}_A",
               epochs=cfg.probe_epochs, augment=False, device="cpu", force=True)
    _stamp(f"probe: top-1 {pr.top1:.3f}", t0)

    # 7) optional RCDM
    rcdm_info = None
    if cfg.rcdm:
        rcdm_info = _run_rcdm(cfg, out, runs, pdir, paths, final, tag, t0, force, parallel, threads)

    # 8) plots (made by the report from attack/ and probe/) + report
    report = build_report(out, force=True, data=paths)
    _stamp(f"report: {report}", t0)

    summary = summarize(atk, ctrl, pr, report, time.time() - t0, cfg, rcdm_info)
    summary["audit"] = audit_info
    atomic_write_json(out / "summary.json", summary)
    return DemoResult(out, summary, report)


def _run_audit(cfg, out, runs, pdir, paths, final, tag, index, ctrl_a, ctrl_b, ctrl_public, t0) -> dict[str, Any]:
    """The one-model test (``dejavu audit``) of the final target model on set A, searching
    the attack's public set. Its crop classifier learns from the held-out control images
    (100 per class, seen by neither model): bbox_B holds only 10 per class here."""
    from dejavu.audit.compare import memorized_overlap
    from dejavu.audit.config import AuditConfig
    from dejavu.audit.run import audit
    from dejavu.io import atomic_save_npy

    clf_train = atomic_save_npy(pdir / "control" / "clf_train.npy", np.union1d(ctrl_a, ctrl_b))
    acfg = AuditConfig(npc=cfg.npc, k=cfg.k, device="cpu", seed=cfg.seed, train_set=str(clf_train))
    dest = out / "audit" / f"{tag}_A" / f"ep{final}"
    r = audit(runs["A"] / f"model_ep{final}.pth", pdir, paths, dest, acfg, force=True, index=index,
              public=ctrl_public)
    m = r.metrics
    info = {"dir": str(dest), "epoch": final, "dejavu_score": m["top1"]["dejavu_score"],
            "dejavu_score_ci95": m["top1"]["ci95"]["dejavu_score"], "gap_100": m["top1"]["dejavu_score_100"],
            "gap_100_ci95": m["top1"]["ci95"]["dejavu_score_100"], "memorized": m["quadrants"]["memorized"],
            "classifier_heldout_acc": r.results["classifier"].get("heldout_acc"),
            "overlap": memorized_overlap(out / "attack" / tag / f"ep{final}", dest, "A")}
    _stamp(f"audit (one model): score {100 * info['dejavu_score']:+.1f} points; classifier held-out accuracy "
           f"{100 * (info['classifier_heldout_acc'] or 0):.1f}%", t0)
    return info


def _train_rcdm_one(args: tuple) -> str:
    ssl_ckpt, pdir, images, bboxes, out, steps, force, threads = args
    import torch

    torch.set_num_threads(threads)
    _progress_slot(out)
    from dejavu.config import load_config, packaged_config
    from dejavu.data.imagefolder import DataPaths
    from dejavu.rcdm.model import RCDMConfig
    from dejavu.rcdm.train import train_rcdm

    cfg = load_config(RCDMConfig, packaged_config("rcdm", "tiny.yaml"), [f"steps={steps}"])
    train_rcdm(cfg, ssl_ckpt, pdir, DataPaths(Path(images), Path(bboxes) if bboxes else None), out,
               resume=not force, force=force, device="cpu")
    return str(out)


def _run_rcdm(cfg, out, runs, pdir, paths, final, tag, t0, force, parallel, threads):
    """Two tiny RCDMs (one per model) on the public set, then reconstructions of the most
    memorized crops: RCDM_A draws from model A's view of the crop, RCDM_B is the control."""
    from dejavu.rcdm.reconstruct import reconstruct

    dirs = {s: out / "rcdm" / f"{tag}_{s}" for s in "AB"}
    jobs = [(str(runs[s] / f"model_ep{final}.pth"), str(pdir), str(paths.images), str(paths.bboxes), str(dirs[s]),
             cfg.rcdm_steps, force, 1) for s in "AB"]
    _stamp(f"rcdm: training 2 tiny RCDMs ({cfg.rcdm_steps} steps each)", t0)
    _map(_train_rcdm_one, jobs, parallel, threads)
    rec_dir = out / "rcdm" / "reconstructions"
    res = reconstruct(out / "attack" / tag / f"ep{final}", dirs["A"], dirs["B"], "most-memorized:4", rec_dir,
                      samples=4, data=paths, device="cpu", force=True)
    _stamp(f"rcdm: {len(res.items)} reconstructions in {rec_dir}", t0)
    return {"dirs": {k: str(v) for k, v in dirs.items()}, "reconstructions": str(rec_dir)}


def _map(fn, jobs: list[tuple], parallel: bool, threads: int) -> list:
    """Run jobs in 2 single-threaded processes, or one after another with ``threads``.

    Two single-threaded processes never oversubscribe (the 6-10x slowdown seen on busy
    machines comes from multi-threaded torch ops competing for cores); on a busy machine
    they simply share the free core, which costs no more than running them in sequence.
    """
    if parallel:
        ctx = mp.get_context("spawn")
        pool = ctx.Pool(len(jobs))
        try:
            return pool.map(fn, jobs)
        finally:
            pool.close()
            pool.join()
    return [fn(j[:-1] + (threads,)) for j in jobs]


def _g(m: dict, *keys, default=float("nan")):
    for k in keys:
        if not isinstance(m, dict) or k not in m:
            return default
        m = m[k]
    return m


def summarize(atk, ctrl, pr, report, seconds, cfg, rcdm_info=None) -> dict[str, Any]:
    by_ep = []
    for r, rc in zip(atk, ctrl):
        m, mc = r.results["metrics"], rc.results["metrics"]
        by_ep.append({
            "epoch": r.results["epoch"],
            "dejavu_score": _g(m, "top1", "dejavu_score"),
            "dejavu_score_ci95": _g(m, "top1", "ci95", "dejavu_score"),
            "gap_100": _g(m, "top1", "dejavu_score_100"),
            "gap_100_ci95": _g(m, "top1", "ci95", "dejavu_score_100"),
            "target_20": _g(m, "top1", "target", "20"), "reference_20": _g(m, "top1", "reference", "20"),
            "target_100": _g(m, "top1", "target", "100"), "reference_100": _g(m, "top1", "reference", "100"),
            "memorized": _g(m, "quadrants", "memorized"), "correlated": _g(m, "quadrants", "correlated"),
            "memorized_ci95": _g(m, "quadrants_ci95", "memorized"),
            "control_gap_100": _g(mc, "top1", "dejavu_score_100"),
            "control_gap_100_ci95": _g(mc, "top1", "ci95", "dejavu_score_100"),
            "control_score": _g(mc, "top1", "dejavu_score"),
            "control_score_ci95": _g(mc, "top1", "ci95", "dejavu_score"),
        })
    return {"config": asdict(cfg), "seconds": round(seconds, 1), "epochs": by_ep, "final": by_ep[-1],
            "probe_top1": pr.top1, "probe_top5": pr.top5, "report": str(report), "rcdm": rcdm_info}


def format_summary(s: dict[str, Any]) -> str:
    f = s["final"]

    def pct(x):
        return f"{100 * x:5.1f}%"

    def ci(x):  # a gap: signed
        return f"[{100 * x[0]:+.1f}, {100 * x[1]:+.1f}]" if isinstance(x, (list, tuple)) else ""

    def share_ci(x):  # a share: unsigned
        return f"[{100 * x[0]:.1f}, {100 * x[1]:.1f}]" if isinstance(x, (list, tuple)) else ""

    lines = [
        f"deja vu demo ({s['config']['method']}, {s['seconds']:.0f}s) -- final snapshot, epoch {f['epoch']}",
        f"  deja vu score (top-20% most confident): {100 * f['dejavu_score']:+.1f} points, 95% CI "
        f"{ci(f['dejavu_score_ci95'])}",
        f"  target vs reference accuracy   @20%: {pct(f['target_20'])} vs {pct(f['reference_20'])}"
        f"    @100%: {pct(f['target_100'])} vs {pct(f['reference_100'])} "
        f"(gap {100 * f['gap_100']:+.1f}, CI {ci(f['gap_100_ci95'])})",
        f"  memorized {pct(f['memorized'])} {share_ci(f['memorized_ci95'])}   correlated {pct(f['correlated'])}",
        f"  held-out control (no gap expected): @20% {100 * f['control_score']:+.1f} CI {ci(f['control_score_ci95'])}"
        f"   @100% {100 * f['control_gap_100']:+.1f} CI {ci(f['control_gap_100_ci95'])}",
        *_audit_lines(s.get("audit"), ci),
        "  gap @100% by epoch: " + ", ".join(f"ep{e['epoch']} {100 * e['gap_100']:+.1f}" for e in s["epochs"]),
        f"  linear probe (target model, backbone): top-1 {pct(s['probe_top1'])}  top-5 {pct(s['probe_top5'])}",
        f"  report: {s['report']}",
    ]
    return "\n".join(lines)


def _audit_lines(a: dict[str, Any] | None, ci) -> list[str]:
    if not a:
        return []
    o = a["overlap"]
    return [f"  one-model audit of the target (crop classifier as reference), set A: @20% "
            f"{100 * a['dejavu_score']:+.1f} CI {ci(a['dejavu_score_ci95'])}   @100% {100 * a['gap_100']:+.1f} "
            f"CI {ci(a['gap_100_ci95'])}",
            f"    memorized {100 * a['memorized']:.1f}%; {o['both']} of the {o['memorized_two_model']} two-model "
            f"memorized examples of set A found (chance {100 * o['chance_recall']:.0f}%)"]


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the synthetic default, on a CPU, in minutes",
        description="Generate the synthetic dataset, partition it, train a target model on A and a "
        "reference model on B, attack every snapshot with background crops, run the held-out control, "
        "the one-model audit of the target (a crop classifier as the reference), "
        "a linear probe, plots and report.html, and print a summary. ~5 minutes on 2 CPU cores "
        "(--quick: ~2 minutes, weaker effect).",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default: %(default)s)")
    p.add_argument("--method", default="vicreg",
                   help="SSL method: vicreg, simclr, barlow, byol, dino, supervised (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smaller and shorter: every stage in ~2 minutes")
    p.add_argument("--epochs", type=int, help="training epochs (default: 300; --quick 60)")
    p.add_argument("--rcdm", action="store_true", help="also train two tiny RCDMs and reconstruct crops")
    p.add_argument("--threads", type=int, help="torch threads (default: DEJAVU_THREADS, else the usable cores)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra training config override (repeatable), e.g. --set augment=paper")
    p.add_argument("--force", action="store_true", help="redo an existing demo run in --out")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    kw: dict[str, Any] = dict(out=args.out, seed=args.seed, method=args.method, rcdm=args.rcdm,
                              threads=args.threads, extra_train_sets=list(args.sets))
    cfg = DemoConfig.quick(**kw) if args.quick else DemoConfig(**kw)
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs, snapshot_every=max(1, args.epochs // 3))
    res = run_demo(cfg, force=args.force)
    print(format_summary(res.summary))
    print(json.dumps({"summary": str(res.out / "summary.json")}))
    return 0
