"""``dejavu demo``: the whole pipeline on the embedded synthetic default, on a CPU.

Writes into ``OUT``: ``data/``, ``partition/`` (with the held-out control), ``train/<m>_<npc>pc_{A,B}/``
(target and reference, independent by default: :func:`dejavu.ssl.config.train_seed`),
``attack/<m>_<npc>pc/ep{E}/`` (every snapshot, with the control), ``audit/`` (the one-model test of
the final target), ``probe/``, ``plots/``, ``report.html`` and ``summary.json``. With ``--pairs N``
the pairs differ only in the training seed (``..._seed{S}``), and the summary gives the excess over
the control with an interval over pairs. The recipe (few private images seen many times, large
objects, mild colour jitter) is the one that makes the gap measurable on 2 cores (README, DESIGN §5).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dejavu import DejavuError, UsageError
from dejavu.analysis.metrics import score_at
from dejavu.audit.config import AuditConfig
from dejavu.config import add_config_args, config_from_args, load_config, packaged_config
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.data.synth import SynthConfig, generate
from dejavu.io import atomic_write_json, check_can_write
from dejavu.partition import partition
from dejavu.probe import probe
from dejavu.rcdm.reconstruct import reconstruct
from dejavu.report.collect import lookup
from dejavu.ssl.config import TrainConfig, load_train_config
from dejavu.ssl.registry import METHODS
from dejavu.utils import progress, set_torch_threads

# DemoConfig fields that are also command-line flags (the rest: --set key=value)
DEMO_FLAGS = ("out", "seed", "method", "pairs", "epochs", "rcdm", "threads", "monitor")

# ``--quick``: every stage, smaller and shorter (about 2 minutes on 2 cores); applied as the
# base under --config, the flags and --set.
QUICK: dict[str, Any] = dict(
    per_class=140,
    annotated_fraction=80 / 140,
    control_per_class=40,
    epochs=60,
    k=10,
    probe_epochs=30,
    rcdm_steps=200,
)


@dataclass
class DemoConfig:
    """Every setting of ``dejavu demo`` (flags, ``--quick``, ``--config`` and ``--set``)."""

    out: str = field(default="runs/demo", metadata={"help": "run folder"})
    seed: int = field(default=0, metadata={"help": "seed for data and training"})
    method: str = field(default="vicreg", metadata={"choices": tuple(METHODS), "help": "SSL method"})
    classes: int = 10
    per_class: int = 320  # 10 A + 10 B + 100 control + ~200 public per class
    annotated_fraction: float = 0.375  # 120 annotated per class
    size: int = 32
    npc: int = 10
    control_per_class: int = 100
    epochs: int = field(default=300, metadata={"help": "training epochs (--quick: 60)"})
    snapshot_every: int | None = None  # None: epochs // 3 (three snapshots attacked)
    # KNN neighbours. The paper's k=100 is ~1/7 of ImageNet's ~700 public images per class;
    # with 200 public images per class here, k=20 keeps that ratio (k=100 would vote over
    # half a class and flatten the confidence ranking that the top-20% test relies on).
    k: int = 20
    probe_epochs: int = 100
    rcdm: bool = field(default=False, metadata={"help": "also train two tiny RCDMs and reconstruct crops"})
    rcdm_steps: int = 1500  # ~9 min for both RCDMs on 2 cores (measured 539 s)
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads of the attack, audit and probe (None: DEJAVU_THREADS, else 1, so that the numbers "
            "do not depend on the core count; more threads oversubscribe a shared machine: the audit's "
            "small-batch crop classifier ran ~5x slower with 2 threads on a loaded 2-core CPU)"
        },
    )
    # TrainConfig overrides for both models, e.g. --set train.augment=paper (nested method keys:
    # --set train.vicreg.sim=30), checked by TrainConfig before anything runs
    train: dict[str, Any] = field(default_factory=dict)
    pairs: int = field(
        default=1,
        metadata={
            "help": "train N model pairs differing only in the training seed (seed, seed+1, ...) and give the "
            "excess over the held-out control with an interval over pairs, which covers training randomness "
            "(1: it is not covered; a claim needs >= 3)"
        },
    )
    partition_per_pair: bool = field(
        default=False,
        metadata={
            "help": "with --pairs N: one partition per pair (partition/seed<S>, seeded by the pair's seed), so the "
            "pairs are independent replicates (each its own A, B, control and public images) and the interval "
            "over pairs is a plain Student t; default: one partition shared by the pairs"
        },
    )
    report: bool = True  # plots + report.html (the bench turns them off)
    monitor: bool = field(
        default=False,
        metadata={
            "help": "train with the online deja vu monitor (dejavu train --monitor): its curve printed and plotted"
        },
    )

    @classmethod
    def quick(cls, **kw) -> DemoConfig:
        """Every stage, smaller and shorter: about 2 minutes on 2 cores."""
        return cls(**{**QUICK, **kw})

    @property
    def snapshot_period(self) -> int:
        """Epochs between snapshots: ``snapshot_every``, else a third of the run."""
        return self.snapshot_every or max(1, self.epochs // 3)

    def validate(self) -> None:
        for name in ("pairs", "epochs", "classes", "npc", "k"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name}: expected a number >= 1, got {getattr(self, name)}")
        if not isinstance(self.train, dict):
            raise UsageError(f"train: expected TrainConfig overrides (--set train.KEY=VALUE), got {self.train!r}")
        self.train_config(self.seed)  # bad training keys or values: reported now, not after the data

    def train_config(self, seed: int):
        """The :class:`TrainConfig` of each model of the pair with training seed ``seed``."""
        fixed = [f"epochs={self.epochs}", f"snapshot_every={self.snapshot_period}", f"seed={seed}"]
        fixed += [f"image_size={self.size}", "knn_every=0"]
        if self.monitor:  # the audit's settings of the demo: its k, the classifier on control_B (seen by neither model)
            clf = (
                f",train_set={Path(self.out).resolve() / 'partition' / 'control_B.npy'}"
                if self.control_per_class
                else ""
            )
            fixed += ["monitor=true", f"monitor_audit_set=k={self.k}{clf}"]
        return load_train_config(method=self.method, sets=fixed + _as_sets(self.train))


def _as_sets(d: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"augment": "paper", "vicreg": {"sim": 30}}`` -> ``["augment=paper", "vicreg.sim=30"]``."""
    out: list[str] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _as_sets(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v if isinstance(v, str) else json.dumps(v)}")
    return out


@dataclass
class DemoResult:
    out: Path
    summary: dict[str, Any]
    report: Path | None  # None with report off


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
    from dejavu.monitor.train_hook import epoch_hooks
    from dejavu.ssl.train import train

    cfg = TrainConfig(**{**cfg_dict, "threads": threads})
    paths = DataPaths(Path(images), Path(bboxes) if bboxes else None)
    # --force starts over; otherwise an interrupted demo continues from last.pth
    res = train(cfg, paths, index_file, out, resume=not force, force=force, epoch_hooks=epoch_hooks(cfg))
    return str(res.out)


@dataclass
class _DemoRun:
    """What the demo's phases share: settings, folders, the dataset and the model pairs."""

    cfg: DemoConfig
    force: bool
    out: Path
    t0: float
    threads: int
    paths: DataPaths = field(init=False)  # set by _make_data
    index: DatasetIndex = field(init=False)
    pdir: Path = Path()  # the (first pair's) partition
    pdirs: dict[int, Path] = field(default_factory=dict)  # seed -> its partition (partition_per_pair)
    n_ctrl: int = 0
    seeds: list[int] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # seed -> run name
    pair_runs: dict[int, dict[str, Path]] = field(default_factory=dict)  # seed -> {"A": dir, "B": dir}
    parallel: bool = False

    @property
    def tag(self) -> str:
        return f"{self.cfg.method}_{self.cfg.npc}pc"


def run_demo(cfg: DemoConfig, force: bool = False) -> DemoResult:
    """The whole pipeline on the synthetic default, into ``cfg.out`` (module docstring).

    Args:
        cfg: the demo's settings.
        force: redo an existing run (else an existing ``summary.json`` is refused; an
            interrupted run continues its training from ``last.pth``).

    Returns:
        The run folder, the summary (also in ``summary.json``) and the report's path.
    """
    from dejavu.report.html import build_report

    run = _open_run(cfg, force)
    _make_data(run)
    _make_partition(run)
    _train_pairs(run)
    by_pair = _attack_pairs(run)
    runs = run.pair_runs[run.seeds[0]]
    final = max(r.results["epoch"] for r in by_pair[run.seeds[0]])
    audit_info = None
    if run.n_ctrl:
        audit_info = _run_audit(
            cfg, run.out, runs, run.pdir, run.paths, final, run.names[run.seeds[0]], run.index, run.t0
        )
    pr = _probe_final(run, runs["A"] / f"model_ep{final}.pth")
    rcdm_info = None
    if cfg.rcdm:
        rcdm_info = _run_rcdm(
            cfg, run.out, runs, run.pdir, run.paths, final, run.tag, run.t0, force, run.parallel, run.threads
        )
    # plots (made by the report from attack/ and probe/) + report
    report = build_report(run.out, force=True, data=run.paths) if cfg.report else None
    if report is not None:
        _stamp(f"report: {report}", run.t0)
    summary = summarize(by_pair, pr, report, time.time() - run.t0, cfg, rcdm_info)
    summary["audit"] = audit_info
    from dejavu.monitor.plot import monitor_summary

    summary["monitor"] = monitor_summary(runs)
    atomic_write_json(run.out / "summary.json", summary)
    return DemoResult(run.out, summary, report)


def _open_run(cfg: DemoConfig, force: bool) -> _DemoRun:
    out = Path(cfg.out)
    if (out / "summary.json").exists() and not force:
        raise DejavuError(f"{out}: a demo run already exists here; pass --force to redo it, or --out elsewhere")
    check_can_write(out, force=True)
    out.mkdir(parents=True, exist_ok=True)
    # default 1 thread (the models train in single-threaded processes too): the same numbers on
    # any machine whatever its core count, and no oversubscription on a shared one
    return _DemoRun(cfg, force, out, time.time(), set_torch_threads(cfg.threads or 1))


def _make_data(run: _DemoRun) -> None:
    cfg, data = run.cfg, run.out / "data"
    scfg = SynthConfig(
        classes=cfg.classes,
        per_class=cfg.per_class,
        size=cfg.size,
        annotated_fraction=cfg.annotated_fraction,
        seed=cfg.seed,
    )
    if not (data / "synth.json").exists() or run.force:
        generate(data, scfg, force=True, workers=min(2, os.cpu_count() or 1))
    run.paths = DataPaths.resolve(data=data)
    run.index = scan_imagefolder(run.paths.images)
    how = "--threads" if cfg.threads else "DEJAVU_THREADS" if os.environ.get("DEJAVU_THREADS") else "the demo's default"
    _stamp(
        f"data: {cfg.classes * cfg.per_class} synthetic images ({cfg.size}px) in {data}; "
        f"torch threads {run.threads} ({how})",
        run.t0,
    )


def _make_partition(run: _DemoRun) -> None:
    """The split, with the held-out control (removed from the public set every attack searches),
    seeded by the demo's seed; with ``partition_per_pair``, one per pair seeded by its seed."""
    cfg = run.cfg
    run.seeds = [cfg.seed + i for i in range(cfg.pairs)]
    per_pair = cfg.partition_per_pair and cfg.pairs > 1
    base = run.out / "partition"
    run.pdirs = {sd: base / f"seed{sd}" if per_pair else base for sd in run.seeds}
    run.pdir = run.pdirs[run.seeds[0]]
    made = [
        partition(
            run.paths, [cfg.npc], run.pdirs[sd], force=True, index=run.index, control=cfg.control_per_class, seed=sd
        )
        for sd in (run.seeds if per_pair else run.seeds[:1])
    ]
    pres = made[0]
    c = pres.splits[cfg.npc].counts()
    run.n_ctrl = len(pres.control.all) if pres.control is not None else 0
    _stamp(
        f"partition: |A|=|B|={c['bbox_A']} attacked images, public {c['public']}, control {run.n_ctrl} held-out",
        run.t0,
    )


def _train_pairs(run: _DemoRun) -> None:
    """Target (A) and reference (B) of each pair, trained with the pair's seed under the
    training design (``train.design``: independent by default, B seeded apart from A;
    :func:`dejavu.ssl.config.train_seed`)."""
    cfg = run.cfg
    run.names = {s: run.tag if len(run.seeds) == 1 else f"{run.tag}_seed{s}" for s in run.seeds}
    run.pair_runs = {s: {y: run.out / "train" / f"{run.names[s]}_{y}" for y in "AB"} for s in run.seeds}
    jobs = [
        (
            asdict(cfg.train_config(sd)),
            str(run.paths.images),
            str(run.paths.bboxes),
            str(run.pdirs[sd] / f"{cfg.npc}_per_class" / f"train_{y}.npy"),
            str(run.pair_runs[sd][y]),
            run.force,
            1,
        )
        for sd in run.seeds
        for y in "AB"
    ]
    run.parallel = _cores() >= 2 and cfg.threads in (None, 1)
    how = "2 processes x 1 thread" if run.parallel else f"sequential, {run.threads} thread(s)"
    _stamp(
        f"train: {cfg.method} x{len(jobs)} ({len(run.seeds)} pair(s), {cfg.epochs} epochs, snapshots every "
        f"{cfg.snapshot_period}; {how})",
        run.t0,
    )
    _map(_train_one, jobs, run.parallel, run.threads)
    _stamp("train: done", run.t0)


def _attack_pairs(run: _DemoRun) -> dict[int, list]:
    """Every snapshot of every pair, with the held-out control (the partition's control)."""
    from dejavu.attack.run import AttackConfig, attack, snapshot_epochs

    cfg = run.cfg
    acfg = AttackConfig(npc=cfg.npc, k=cfg.k, k_attk=cfg.k, device="cpu", seed=cfg.seed)
    by_pair: dict[int, list] = {}
    for sd in run.seeds:
        r = run.pair_runs[sd]
        epochs = sorted(set(snapshot_epochs(r["A"])) & set(snapshot_epochs(r["B"])))
        by_pair[sd] = [
            attack(
                r["A"] / f"model_ep{ep}.pth",
                r["B"] / f"model_ep{ep}.pth",
                run.pdirs[sd],
                run.paths,
                run.out / "attack" / run.names[sd] / f"ep{ep}",
                acfg,
                force=True,
                index=run.index,
                control="partition" if run.n_ctrl else "none",
            )
            for ep in progress(epochs, desc=f"attack snapshots (seed {sd})")
        ]
    n = sum(len(v) for v in by_pair.values())
    _stamp(f"attack: {n} snapshot pairs, each with the held-out control", run.t0)
    return by_pair


def _probe_final(run: _DemoRun, ckpt: Path):
    """Linear probe of the final target model (features computed once: no augmentation)."""
    cfg = run.cfg
    if cfg.probe_epochs <= 0:
        return None
    pr = probe(
        ckpt,
        run.pdir,
        cfg.npc,
        run.paths,
        run.out / "probe" / f"{run.tag}_A",
        epochs=cfg.probe_epochs,
        augment=False,
        device="cpu",
        force=True,
    )
    _stamp(f"probe: top-1 {pr.top1:.3f}", run.t0)
    return pr


def _run_audit(cfg, out, runs, pdir, paths, final, tag, index, t0) -> dict[str, Any]:
    """The one-model test (``dejavu audit``) of the final target model on set A, searching
    the attack's public set. Its crop classifier learns from control_B (seen by neither model;
    bbox_B holds only 10 per class here); control_A is the audit's held-out control."""
    from dejavu.audit.compare import memorized_overlap
    from dejavu.audit.run import audit

    acfg = AuditConfig(npc=cfg.npc, k=cfg.k, device="cpu", seed=cfg.seed, train_set=str(pdir / "control_B.npy"))
    dest = out / "audit" / f"{tag}_A" / f"ep{final}"
    r = audit(runs["A"] / f"model_ep{final}.pth", pdir, paths, dest, acfg, force=True, index=index)
    m = r.metrics
    info = {
        "dir": str(dest),
        "epoch": final,
        "dejavu_score": score_at(m["top1"], 20),
        "dejavu_score_ci95": score_at(m["top1"]["ci95"], 20),
        "gap_100": score_at(m["top1"], 100),
        "gap_100_ci95": score_at(m["top1"]["ci95"], 100),
        "memorized": m["quadrants"]["memorized"],
        "classifier_heldout_acc": r.results["classifier"].get("heldout_acc"),
        "overlap": memorized_overlap(out / "attack" / tag / f"ep{final}", dest, "A"),
        "control_excess": lookup(r.results, "control.excess.top1.20"),
        "control_excess_100": lookup(r.results, "control.excess.top1.100"),
    }
    _stamp(
        f"audit (one model): score {100 * info['dejavu_score']:+.1f} points; classifier held-out accuracy "
        f"{100 * (info['classifier_heldout_acc'] or 0):.1f}%",
        t0,
    )
    return info


def _train_rcdm_one(args: tuple) -> str:
    ssl_ckpt, pdir, images, bboxes, out, steps, force, threads = args
    import torch

    torch.set_num_threads(threads)
    _progress_slot(out)
    from dejavu.rcdm.model import RCDMConfig
    from dejavu.rcdm.train import train_rcdm

    cfg = load_config(RCDMConfig, packaged_config("rcdm", "tiny.yaml"), [f"steps={steps}"])
    train_rcdm(
        cfg,
        ssl_ckpt,
        pdir,
        DataPaths(Path(images), Path(bboxes) if bboxes else None),
        out,
        resume=not force,
        force=force,
        device="cpu",
    )
    return str(out)


def _run_rcdm(cfg, out, runs, pdir, paths, final, tag, t0, force, parallel, threads):
    """Two tiny RCDMs (one per model) on the public set, then reconstructions of the most
    memorized crops: RCDM_A draws from model A's view of the crop, RCDM_B is the control."""
    dirs = {s: out / "rcdm" / f"{tag}_{s}" for s in "AB"}
    jobs = [
        (
            str(runs[s] / f"model_ep{final}.pth"),
            str(pdir),
            str(paths.images),
            str(paths.bboxes),
            str(dirs[s]),
            cfg.rcdm_steps,
            force,
            1,
        )
        for s in "AB"
    ]
    _stamp(f"rcdm: training 2 tiny RCDMs ({cfg.rcdm_steps} steps each)", t0)
    _map(_train_rcdm_one, jobs, parallel, threads)
    rec_dir = out / "rcdm" / "reconstructions"
    res = reconstruct(
        out / "attack" / tag / f"ep{final}",
        dirs["A"],
        dirs["B"],
        "most-memorized:4",
        rec_dir,
        samples=4,
        data=paths,
        device="cpu",
        force=True,
    )
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
        pool = ctx.Pool(min(2, len(jobs)))
        try:
            return pool.map(fn, jobs)
        finally:
            pool.close()
            pool.join()
    return [fn(j[:-1] + (threads,)) for j in jobs]


def _top1_score(m: dict[str, Any], p: int, ci: bool = False) -> Any:
    """The top-1 score at ``p`` percent of a metrics block (its interval with ``ci``; results
    written before ``score`` existed included: :func:`score_at`); NaN when absent."""
    v = score_at(lookup(m, "top1.ci95" if ci else "top1", {}), p)
    return float("nan") if v is None else v


def _epoch_row(r) -> dict[str, Any]:
    m, c = r.results["metrics"], r.results.get("control") or {}
    mc = c.get("metrics", {})
    ex = lookup(c, "excess.top1.20", default={})
    ex100 = lookup(c, "excess.top1.100", default={})
    return {
        "epoch": r.results["epoch"],
        "dejavu_score": _top1_score(m, 20),
        "dejavu_score_ci95": _top1_score(m, 20, ci=True),
        "gap_100": _top1_score(m, 100),
        "gap_100_ci95": _top1_score(m, 100, ci=True),
        "target_20": lookup(m, "top1.target.20", float("nan")),
        "reference_20": lookup(m, "top1.reference.20", float("nan")),
        "target_100": lookup(m, "top1.target.100", float("nan")),
        "reference_100": lookup(m, "top1.reference.100", float("nan")),
        "memorized": lookup(m, "quadrants.memorized", float("nan")),
        "correlated": lookup(m, "quadrants.correlated", float("nan")),
        "memorized_ci95": lookup(m, "quadrants_ci95.memorized", float("nan")),
        "control_gap_100": _top1_score(mc, 100),
        "control_gap_100_ci95": _top1_score(mc, 100, ci=True),
        "control_score": _top1_score(mc, 20),
        "control_score_ci95": _top1_score(mc, 20, ci=True),
        "excess": ex.get("excess", float("nan")),
        "excess_ci95": ex.get("ci95"),
        "excess_se": ex.get("se"),
        "excess_100": ex100.get("excess", float("nan")),
        "excess_100_ci95": ex100.get("ci95"),
    }


def summarize(by_pair: dict[int, list], pr, report, seconds, cfg, rcdm_info=None) -> dict[str, Any]:
    """The demo's ``summary.json``: per-epoch scores, the final snapshot, control, excess.

    Args:
        by_pair: training seed -> the attack results of that pair, by epoch.
        pr: the probe's result (None: no probe).
        report: the report's path (None: no report).
        seconds: the demo's wall time.
        cfg: the demo's settings (stored under ``config``).
        rcdm_info: the RCDM stage's summary (None: not run).

    Returns:
        The summary dict (:func:`format_summary` prints it).
    """
    from dejavu.analysis.significance import pairs_from_results, shared_variance_from_folders, verdict_text

    seeds = sorted(by_pair)
    rows = {sd: [_epoch_row(r) for r in by_pair[sd]] for sd in seeds}
    finals = [by_pair[sd][-1].results for sd in seeds]
    dirs = [getattr(by_pair[sd][-1], "out", None) for sd in seeds]
    shared = shared_variance_from_folders(dirs) if len(seeds) >= 2 and None not in dirs else None
    pair_level = {
        p: pairs_from_results(finals, "top1", p, shared.get(("top1", p)) if shared else None) for p in ("20", "100")
    }
    head = finals[0].get("control", {}).get("excess", {}).get("top1", {}).get("20")
    verdict = verdict_text(head, pair_level["20"]) if head else "no held-out control"
    return {
        "config": asdict(cfg),
        "seconds": round(seconds, 1),
        "epochs": rows[seeds[0]],
        "final": rows[seeds[0]][-1],
        "seeds": seeds,
        "design": finals[0].get("design", {}).get("design"),
        "pairs": [{"seed": sd, "final": rows[sd][-1], "epochs": rows[sd]} for sd in seeds],
        "pair_level": pair_level,
        "verdict": verdict,
        "probe_top1": pr.top1 if pr else None,
        "probe_top5": pr.top5 if pr else None,
        "report": str(report) if report else None,
        "rcdm": rcdm_info,
    }


def format_summary(s: dict[str, Any]) -> str:
    from dejavu.monitor.plot import monitor_lines

    f = s["final"]

    def pct(x):
        return f"{100 * x:5.1f}%"

    def ci(x):  # a gap: signed
        return f"[{100 * x[0]:+.1f}, {100 * x[1]:+.1f}]" if isinstance(x, (list, tuple)) else ""

    def share_ci(x):  # a share: unsigned
        return f"[{100 * x[0]:.1f}, {100 * x[1]:.1f}]" if isinstance(x, (list, tuple)) else ""

    n = len(s.get("seeds", [0]))
    lines = [
        f"deja vu demo ({s['config']['method']}, {s['seconds']:.0f}s) -- final snapshot, epoch {f['epoch']}"
        + (f", pair 1 of {n} (seed {s['seeds'][0]})" if n > 1 else "")
        + (f"; {s['design']} models" if s.get("design") else ""),
        f"  deja vu score (top-20% most confident): {100 * f['dejavu_score']:+.1f} points, 95% CI "
        f"{ci(f['dejavu_score_ci95'])} (over examples)",
        f"  held-out control (no gap expected): @20% {100 * f['control_score']:+.1f} CI {ci(f['control_score_ci95'])}"
        f"   @100% {100 * f['control_gap_100']:+.1f} CI {ci(f['control_gap_100_ci95'])}",
        f"  excess over the control @20%: {100 * f['excess']:+.1f} points, CI {ci(f['excess_ci95'])} (over examples)",
        f"  target vs reference accuracy   @20%: {pct(f['target_20'])} vs {pct(f['reference_20'])}"
        f"    @100%: {pct(f['target_100'])} vs {pct(f['reference_100'])} "
        f"(gap {100 * f['gap_100']:+.1f}, CI {ci(f['gap_100_ci95'])})",
        f"  memorized {pct(f['memorized'])} {share_ci(f['memorized_ci95'])}   correlated {pct(f['correlated'])}",
        *_audit_lines(s.get("audit"), ci),
        "  gap @100% by epoch: " + ", ".join(f"ep{e['epoch']} {100 * e['gap_100']:+.1f}" for e in s["epochs"]),
        *monitor_lines(s.get("monitor")),
    ]
    if n > 1:
        lines.append(
            "  per pair @20% (seed: score / control / excess): "
            + ", ".join(
                f"{p['seed']}: {100 * p['final']['dejavu_score']:+.1f}/{100 * p['final']['control_score']:+.1f}/"
                f"{100 * p['final']['excess']:+.1f}"
                for p in s["pairs"]
            )
        )
    lines.append(f"  verdict: {s['verdict']}")
    if s.get("probe_top1") is not None:
        lines.append(
            f"  linear probe (target model, backbone): top-1 {pct(s['probe_top1'])}  top-5 {pct(s['probe_top5'])}"
        )
    if s.get("report"):
        lines.append(f"  report: {s['report']}")
    return "\n".join(lines)


def _audit_lines(a: dict[str, Any] | None, ci) -> list[str]:
    if not a:
        return []
    o = a["overlap"]
    return [
        f"  one-model audit of the target (crop classifier as reference), set A: @20% "
        f"{100 * a['dejavu_score']:+.1f} CI {ci(a['dejavu_score_ci95'])}   @100% {100 * a['gap_100']:+.1f} "
        f"CI {ci(a['gap_100_ci95'])}",
        f"    memorized {100 * a['memorized']:.1f}%; {o['both']} of the {o['memorized_two_model']} two-model "
        f"memorized examples of set A found (chance {100 * o['chance_recall']:.0f}%)",
        *_audit_control_lines(a.get("control_excess"), a.get("control_excess_100"), ci),
    ]


def _audit_control_lines(x20: dict[str, Any] | None, x100: dict[str, Any] | None, ci) -> list[str]:
    """The audit's held-out control (control_A, audited by the same model and classifier)."""
    if not x20:
        return []
    line = (
        f"    held-out control (control_A) @20% {100 * x20['control']:+.1f}; excess over it @20% "
        f"{100 * x20['excess']:+.1f} CI {ci(x20['ci95'])}"
    )
    if x100:
        line += f"   @100% {100 * x100['excess']:+.1f} CI {ci(x100['ci95'])}"
    return [line]


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the synthetic default, on a CPU, in minutes",
        description="Generate the synthetic dataset, partition it, train a target model on A and a "
        "reference model on B, attack every snapshot with background crops, run the held-out control, "
        "the one-model audit of the target (a crop classifier as the reference), "
        "a linear probe, plots and report.html, and print a summary. ~5 minutes on 2 CPU cores "
        "(--quick: ~2 minutes, weaker effect). Every DemoConfig key can be set with --set KEY=VALUE "
        "(e.g. --set k=10, --set snapshot_every=50); training settings of both models with "
        "--set train.KEY=VALUE (e.g. --set train.augment=paper).",
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller and shorter: every stage in ~2 minutes (a preset under the rest)"
    )
    add_config_args(p, DemoConfig, flags=DEMO_FLAGS, title="demo settings (DemoConfig)")
    p.add_argument("--force", action="store_true", help="redo an existing demo run in --out")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    cfg = config_from_args(DemoConfig, args, flags=DEMO_FLAGS, base=dict(QUICK) if args.quick else None)
    res = run_demo(cfg, force=args.force)
    print(format_summary(res.summary))  # ends on its last result line (the report's path); no trailing dump
    return 0
