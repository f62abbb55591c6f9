"""The online déjà vu monitor: the one-model test (:mod:`dejavu.audit`) of a model while it trains.

A :class:`Monitor` is set up once, before training: the audit's crop classifier (trained once
into ``OUT/classifier/`` and reloaded from there, or given as ``reference_model``) and a fixed,
seeded subsample of the audited set's attackable images and of the public set, recorded in
``OUT/`` (files: docs/CONTRACTS.md). :meth:`Monitor.score` then scores any model with an
embedding function with the audit's own pieces (``dejavu.audit.run._embed_and_label``, then
:func:`dejavu.audit.run.score_arrays`), so the numbers at an epoch equal those of ``dejavu audit``
on that epoch's snapshot with the recorded files::

    dejavu audit --model RUN/model_ep{E}.pth --partition P --npc N --data D --out AUDIT \\
        --reference-model OUT/classifier/classifier.pth --control none \\
        --set audit_set=OUT/audit_set.npy --set public_set=OUT/public_set.npy  (+ the audit config)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dejavu import DejavuError, UsageError, formats
from dejavu.analysis.metrics import score_at
from dejavu.attack.config import recorded_config
from dejavu.attack.crops import compute_crops, resolve_min_crop_px
from dejavu.audit.config import AuditConfig, load_audit_config
from dejavu.audit.run import (
    AuditJob,
    _Control,
    _crop_classifier,
    _embed_and_label,
    _reference,
    audit_sets,
    score_arrays,
)
from dejavu.data.imagefolder import DataPaths, DatasetIndex
from dejavu.device import choose_device
from dejavu.io import atomic_save_npy, atomic_write_json, read_json

FORMAT = formats.MONITOR
# the scores a monitor returns (and ``dejavu train --monitor`` logs as ``monitor_<key>``)
SCALARS = ("score", "score_100", "memorized", "model_acc", "classifier_acc", "classifier_heldout_acc")


@dataclass
class MonitorConfig:
    """What the monitor scores: subsample sizes and seed, and the audit's settings."""

    crops: int = field(default=500, metadata={"help": "audited images (attackable) scored; 0: all"})
    public_per_class: int = field(
        default=50,
        metadata={"help": "public images per class the KNN searches (fewer where a class has fewer); 0: all"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the subsample"})
    audit: str = field(default="synth", metadata={"help": "the audit config: a packaged name or a YAML file"})
    audit_overrides: list[str] = field(
        default_factory=list, metadata={"help": "key=value overrides of the audit config"}
    )

    def validate(self) -> None:
        if self.crops < 0 or self.public_per_class < 0:
            raise UsageError(
                f"monitor subsample sizes must be >= 0, got crops={self.crops}, public_per_class={self.public_per_class}"
            )

    def audit_config(self) -> AuditConfig:
        return load_audit_config(self.audit, list(self.audit_overrides))


def _subsample(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of ``idx`` drawn without replacement, sorted (all of them when n is 0 or >= len)."""
    if n <= 0 or n >= len(idx):
        return np.sort(idx)
    return np.sort(rng.choice(idx, size=n, replace=False))


def _per_class(idx: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of ``idx`` per class (all of a class with fewer; all when n is 0), sorted."""
    if n <= 0:
        return np.sort(idx)
    return np.sort(np.concatenate([_subsample(idx[labels == c], n, rng) for c in np.unique(labels)]))


class _Embedder(nn.Module):
    """Any model as the audit sees one: ``embed(x, kind)`` -> (n, d).

    ``model`` with an ``embed(x, kind)`` method (dejavu's SSLModel) is used as is; otherwise
    ``fn(x)`` (default: ``model(x)``), flattened to (n, d). ``model`` is held as a submodule so
    that eval mode reaches it."""

    def __init__(self, model: nn.Module | None, fn: Callable[[torch.Tensor], torch.Tensor] | None, kind: str):
        super().__init__()
        self.model = model
        self.fn = fn
        self.kind = kind

    def embed(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        if self.fn is not None:
            return self.fn(x).flatten(1)
        assert self.model is not None
        if hasattr(self.model, "embed"):
            return self.model.embed(x, self.kind).flatten(1)  # type: ignore[operator]
        return self.model(x).flatten(1)


def _device_of(model: nn.Module | None, default: str | None) -> str:
    if model is not None:
        p = next(iter(model.parameters()), None)
        if p is not None:
            return str(p.device)

    return str(choose_device(default))


class Monitor:
    """The one-model déjà vu test of a model being trained, on a fixed subsample and classifier.

    Args:
        out: the monitor's folder (subsample, classifier, ``monitor.json``, ``ep{E}.json``).
        partition: the partition folder of the training images.
        paths: the dataset (:class:`DataPaths`), or its root folder (``--data``).
        npc: images per class of the split the model trains on.
        audited: ``A`` or ``B``: the private set the model trains on; its ``bbox_<set>`` is
            audited and the classifier learns from the other one (unless the audit config's
            ``audit_set``/``train_set`` are overridden).
        cfg: subsample sizes, seed and the audit config.
        reference_model: a crop classifier trained elsewhere (``--reference-model``), else
            one is trained into ``out/classifier`` (or loaded from there).
        image_size: side (px) the model sees (default: the audit config's ``image_size``,
            else 224 as the audit's; 32 for the synthetic default).
        index: the scanned dataset, if at hand.
        force: discard an earlier monitor's state in ``out``.
        device: where the classifier trains (default: the audit config's, else cuda when
            available); :meth:`score` runs on the scored model's device.

    Raises:
        DejavuError: ``out`` holds a monitor with other settings (without ``force``);
            overlapping sets; no attackable image.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        partition: str | os.PathLike,
        paths: DataPaths | str | os.PathLike,
        npc: int,
        audited: str = "A",
        cfg: MonitorConfig | None = None,
        reference_model: str | os.PathLike | None = None,
        image_size: int | None = None,
        index: DatasetIndex | None = None,
        force: bool = False,
        device: str | None = None,
    ):
        self.cfg = cfg or MonitorConfig()
        self.cfg.validate()
        self.out = Path(out)
        if audited not in ("A", "B"):
            raise UsageError(f"monitor: audited must be A or B, got {audited!r}")
        if force and self.out.is_dir():
            shutil.rmtree(self.out)
        paths = paths if isinstance(paths, DataPaths) else DataPaths.resolve(data=paths)
        acfg = self.cfg.audit_config()
        other = "B" if audited == "A" else "A"
        base = AuditConfig()
        acfg = dataclasses.replace(
            acfg,
            npc=int(npc),
            audit_set=acfg.audit_set if acfg.audit_set != base.audit_set else f"bbox_{audited}",
            train_set=acfg.train_set if acfg.train_set != base.train_set else f"bbox_{other}",
        )
        acfg.validate()
        self.history: list[dict[str, Any]] = []
        self._reference_model = str(reference_model) if reference_model is not None else None
        self._job = self._setup(acfg, Path(partition), paths, reference_model, image_size, index, device)
        self.out.mkdir(parents=True, exist_ok=True)

        self._clf, self._clf_info, counts = _crop_classifier(self._job, resume=True, force=False)
        self.counts = counts
        self._write_state(acfg, reference_model)

    # ------------------------------------------------------------------ setup

    def _setup(self, acfg: AuditConfig, partition: Path, paths: DataPaths, reference_model, image_size, index, device):
        """The audit's sets (checked as the audit checks them), the subsample and its crops."""

        index, part, public, audit_idx, train_idx = audit_sets(acfg, partition, paths, reference_model, index)
        ref = _reference(reference_model, index, audit_idx, part, acfg.npc) if reference_model is not None else None
        min_px = resolve_min_crop_px(acfg.min_crop_px, paths.images)
        att = acfg.attack_config()
        sub_a, sub_p = self._recorded_or_drawn(acfg, audit_idx, public, index, paths, att, min_px)
        what = f"monitor, audit set {acfg.audit_set}"
        crops = compute_crops(index, paths.annotation_dir, sub_a, att, min_px, desc="crops (monitor)", what=what)
        if len(sub_p) < acfg.k:
            raise DejavuError(f"monitor: {len(sub_p)} public images, fewer than k={acfg.k}; raise the public subsample")
        size = int(acfg.image_size or image_size or 224)
        dev = _device_of(None, device or acfg.device)
        job_cfg = dataclasses.replace(acfg, audit_set=str(self.out / "audit_set.npy"))
        return AuditJob(
            job_cfg,
            self.out,
            paths,
            index,
            part,
            sub_p,
            crops.indices,
            train_idx,
            dev,
            None,
            ref,
            size,
            min_px,
            att,
            crops,
        )

    def _recorded_or_drawn(self, acfg, audit_idx, public, index, paths, att, min_px) -> tuple[np.ndarray, np.ndarray]:
        """The subsample: read back from ``out`` (a resumed run), else drawn with the seed among
        the audited set's attackable images and the public set."""

        state = self.out / "monitor.json"
        if state.is_file():
            self._check_state(state, acfg, index.fingerprint.id)
            return np.load(self.out / "audit_set.npy"), np.load(self.out / "public_set.npy")
        attackable = compute_crops(index, paths.annotation_dir, audit_idx, att, min_px, desc="crops (audited)").indices
        rng = np.random.default_rng(self.cfg.seed)
        sub_a = _subsample(attackable, self.cfg.crops, rng)
        sub_p = _per_class(public, index.targets[public], self.cfg.public_per_class, rng)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(self.out / "audit_set.npy", sub_a.astype(np.int64))
        atomic_save_npy(self.out / "public_set.npy", sub_p.astype(np.int64))
        return sub_a, sub_p

    def _settings(self, acfg: AuditConfig) -> dict[str, Any]:
        """What the recorded state depends on (a reopened monitor must match it)."""
        return {
            "crops": self.cfg.crops,
            "public_per_class": self.cfg.public_per_class,
            "seed": self.cfg.seed,
            "reference_model": self._reference_model,
            "audit": recorded_config(acfg, {}),
        }

    def _check_state(self, path: Path, acfg: AuditConfig, index_id: str) -> None:
        st = read_json(path)
        if not isinstance(st, dict) or st.get("format") != FORMAT:
            raise DejavuError(f"{path}: not a monitor state (expected format {FORMAT})")
        now = self._settings(acfg)
        was = st.get("settings") or {}
        fp = (st.get("fingerprint") or {}).get("id")
        if fp != index_id:
            raise DejavuError(f"{path}: recorded for dataset {fp}, this dataset is {index_id}; start over (--force)")
        diff = sorted(k for k in ("crops", "public_per_class", "seed", "reference_model") if was.get(k) != now[k])
        diff += sorted(f"audit.{k}" for k, v in now["audit"].items() if (was.get("audit") or {}).get(k) != v)
        if diff:
            raise DejavuError(
                f"{path}: the monitor recorded other settings ({', '.join(diff)}); use them, or start over "
                f"(--force, or delete {path.parent})"
            )

    def _write_state(self, acfg: AuditConfig, reference_model) -> None:
        job = self._job
        atomic_write_json(
            self.out / "monitor.json",
            {
                "format": FORMAT,
                "settings": self._settings(acfg),
                "partition": str(job.part.root),
                "npc": acfg.npc,
                "audit_set": acfg.audit_set,
                "train_set": acfg.train_set,
                "fingerprint": job.index.fingerprint.to_dict(),
                "files": {"audit_set": "audit_set.npy", "public_set": "public_set.npy"},
                "classifier": self._clf_info,
                "reference_model": str(reference_model) if reference_model is not None else None,
                "counts": {"crops": len(job.crops.indices), "public": len(job.public), **self.counts},
                "image_size": job.image_size,
                "audit_args": self.audit_args(),  # dejavu audit's flags reproducing a score (+ the audit config)
            },
        )

    # ------------------------------------------------------------------ scoring

    @property
    def classifier_path(self) -> Path:
        return Path(self._clf_info["path"])

    @property
    def audit_config(self) -> AuditConfig:
        """The audit's settings as the monitor uses them (``audit_set``: the recorded subsample)."""
        return self._job.cfg

    def audit_args(self) -> list[str]:
        """The ``dejavu audit`` flags that reproduce a score on a snapshot: the audit config and
        its overrides, the classifier, the recorded subsample, no control."""
        sets = [a for kv in self.cfg.audit_overrides for a in ("--set", kv)]
        return [
            "--config",
            self.cfg.audit,
            *sets,
            "--reference-model",
            str(self.classifier_path),
            "--control",
            "none",
            "--set",
            f"audit_set={self.out / 'audit_set.npy'}",
            "--set",
            f"public_set={self.out / 'public_set.npy'}",
        ]

    def score(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        epoch: int | None = None,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """Score a model now (its train/eval modes are restored afterwards).

        Args:
            model: an ``nn.Module`` with ``embed(x, kind)`` (dejavu's models), or any module whose
                forward returns embeddings (e.g. a lightly backbone), or a plain callable
                ``x -> (n, d)`` (called as is: put its modules in eval mode yourself).
            epoch: recorded with the scores; with it, ``out/ep{epoch}.json`` keeps the full
                metrics block.
            embed: ``x -> embeddings`` used instead of ``model``'s own (``model`` still
                chooses the device and gets eval mode).

        Returns:
            ``score`` (top-1, 20%) and ``score_100`` with ``*_ci95``, ``memorized`` (sample
            test) with ``memorized_ci95``, ``model_acc``/``classifier_acc`` (top-1, 20%),
            ``classifier_heldout_acc``, ``n_crops``, ``n_public``, ``seconds`` (and ``epoch``).
        """

        t0 = time.perf_counter()
        module = model if isinstance(model, nn.Module) else None
        fn = embed if embed is not None else (None if module is not None else model)
        job = self._job
        job.device = _device_of(module, job.device)
        job.lm = _Live(_Embedder(module, fn, job.cfg.embed))
        modes = [(m, m.training) for m in module.modules()] if module is not None else []
        try:
            with torch.no_grad():
                lab = _embed_and_label(job, self._clf, _Control(), "")
        finally:
            for m, was in modes:
                m.train(was)
            job.lm = None
        n_cls = len(job.index.classes)
        *_, metrics = score_arrays(lab.arrays, job.cfg, n_cls, lab.resolved["k_attk"], "audit_set")
        res = summarize(metrics, self._clf_info, len(job.crops.indices), len(job.public))
        res["seconds"] = time.perf_counter() - t0
        if epoch is not None:
            res = {"epoch": int(epoch), **res}
            atomic_write_json(self.out / f"ep{int(epoch)}.json", {"format": FORMAT, "epoch": epoch, "metrics": metrics})
        self.history.append(res)
        return res


@dataclass
class _Live:
    """What the audit's embedding step reads of a loaded model (``model``; ``sha256`` names
    its public-embedding cache entry, off here: a training model changes every epoch)."""

    model: nn.Module
    sha256: str = ""


def summarize(metrics: dict[str, Any], clf_info: dict[str, Any], n_crops: int, n_public: int) -> dict[str, Any]:
    """The monitor's numbers from an audit's ``metrics`` block.

    Args:
        metrics: the audit's metrics block (:func:`dejavu.audit.run.score_arrays`) (or a ``results.json``'s).
        clf_info: the classifier's info (``heldout_acc``).
        n_crops: audited crops scored.
        n_public: public images searched.

    Returns:
        The keys listed in :meth:`Monitor.score` (less ``seconds`` and ``epoch``).
    """
    t1 = metrics["top1"]
    ho = clf_info.get("heldout_acc")
    return {
        "score": score_at(t1, 20),
        "score_ci95": list(score_at(t1["ci95"], 20)),
        "score_100": score_at(t1, 100),
        "score_100_ci95": list(score_at(t1["ci95"], 100)),
        "memorized": metrics["quadrants"]["memorized"],
        "memorized_ci95": list(metrics["quadrants_ci95"]["memorized"]),
        "model_acc": t1["target"]["20"],
        "classifier_acc": t1["reference"]["20"],
        "classifier_heldout_acc": None if ho is None else float(ho),
        "n_crops": int(n_crops),
        "n_public": int(n_public),
    }
