"""``audit(...)``: the one-model déjà vu test of one checkpoint (docs/DESIGN.md §7.3).

Phases: the sets and the audited set's crops (:func:`_setup`); the held-out control's crops
(:func:`_control_crops`, :mod:`dejavu.audit.control`); the crop classifier, trained or
loaded (:func:`_crop_classifier`); public embeddings, then the audited and control crops
embedded, KNN-searched and classified (:func:`_embed_and_label`); the comparison of the model
with its classifier scored by :mod:`dejavu.analysis` and the files written, ``results.json``
last (:func:`_write`). Under torchrun rank 0 trains the classifier and writes; every rank
embeds and searches its share. The folder's files: docs/CONTRACTS.md ("Audit folder").
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from dejavu import DejavuError, UsageError, formats
from dejavu.analysis.metrics import SETS, Comparison, other_set, score_at, scores_from_neighbours
from dejavu.analysis.significance import control_block, control_summary_lines, primary_endpoint
from dejavu.analysis.summary import compute_all
from dejavu.analysis.tables import accuracy_table_lines, write_examples_csv
from dejavu.attack import dist
from dejavu.attack.config import AttackConfig, recorded_config
from dejavu.attack.crops import SetCrops, compute_crops, resolve_min_crop_px
from dejavu.attack.embed import ImageCrops, embed_cache_dir, embed_rows, public_embeddings, resolved_precision
from dejavu.attack.run import model_info
from dejavu.audit.classifier import (
    CropSet,
    SquareJpeg,
    classifier_dir_clean,
    classifier_scores,
    is_finished,
    num_outputs,
    train_classifier,
    unanimous,
    with_input,
)
from dejavu.audit.config import AuditConfig, check_preset
from dejavu.audit.control import (
    AUDIT_EXCESS,
    AUDIT_UNIT,
    PREFIX,
    AuditControl,
    check_control_public,
    memorization_reading,
    resolve_audit_control,
)
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.data.transforms import describe_eval_transform, eval_transform
from dejavu.device import choose_device
from dejavu.io import atomic_save_npy, atomic_write_json, check_can_write, index_hash, locks_output
from dejavu.partition import Partition, load_index_file
from dejavu.ssl.checkpoint import LoadedModel, describe_loaded, load_model
from dejavu.units import ci95_text, pct, pts

FORMAT = formats.AUDIT


@dataclass
class AuditResult:
    """What :func:`audit` returns: the audit folder and its ``results.json`` contents."""

    out: Path
    results: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        """The ``metrics`` block of ``results.json`` (:func:`dejavu.analysis.summary.compute_all` of the audit's comparison)."""
        return self.results["metrics"]


def load_set(part: Partition, index: DatasetIndex, npc: int, name: str) -> np.ndarray:
    """A partition set by name (``bbox_A``, ``train_B``...) or an index file (``.npy``).

    Args:
        part: the :class:`dejavu.partition.Partition` the set names refer to.
        index: the training images' index; the indices are checked against it.
        npc: images per class: which ``<npc>_per_class/`` folder a set name is read from
            (unused for a ``.npy`` path).
        name: a set name of the partition, or the path of a ``.npy`` file of dataset indices.

    Returns:
        The set's dataset indices (int64).

    Raises:
        DejavuError: an unknown set or npc, an unreadable file, an empty set or an index outside
            the dataset.
    """
    if str(name).endswith(".npy"):
        return index.check_indices(np.asarray(load_index_file(name, index)), str(name))
    arr = part.load_set(npc, name)
    return index.check_indices(np.asarray(arr), f"{part.root}/{npc}_per_class/{name}.npy")


def check_disjoint(
    audit_idx: np.ndarray, train_idx: np.ndarray | None, public: np.ndarray, names: tuple[str, str]
) -> None:
    """The classifier must never have seen an audited image, nor the KNN search find one.

    Args:
        audit_idx: the audited images (dataset indices).
        train_idx: the classifier's training images; None skips that check (a reference
            classifier that does not record them).
        public: the public set the KNN searches.
        names: (audited set, classifier training set) as named in the messages.

    Raises:
        UsageError: the audited set and the classifier's training set overlap (a choice of sets).
        DejavuError: the audited set overlaps the public set.
    """
    if train_idx is not None:
        clash = np.intersect1d(audit_idx, train_idx)
        if len(clash):
            raise UsageError(
                f"audit set {names[0]} and classifier training set {names[1]} overlap in "
                f"{len(clash)} image(s) (e.g. index {int(clash[0])}); choose disjoint sets"
            )
    clash = np.intersect1d(audit_idx, public)
    if len(clash):
        raise DejavuError(
            f"audit set {names[0]} overlaps the public set in {len(clash)} image(s) (e.g. index {int(clash[0])})"
        )


class _Logits(nn.Module):
    """Adapter: a classifier that answers ``embed(x, kind)`` with its logits, so one
    :func:`dejavu.attack.embed.embed_dataset` pass feeds the model and the classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def embed(self, x, kind):
        return self.model.embed(x, "logits")


def _check_model_sets(lm: LoadedModel, part: Partition, cfg: AuditConfig, audit_idx: np.ndarray) -> None:
    """The model must have trained on the partition's training set holding the audited images
    (when it records its training index); with ``unseen_ok`` it may instead record the
    partition's other training set, the audit then being a control (said on stderr)."""
    sets = {y: part.load_set(cfg.npc, f"train_{y}") for y in SETS}
    for y, train_y in sets.items():
        if not np.isin(audit_idx, train_y).all():
            continue
        if cfg.unseen_ok and lm.config.get("index_sha256") == index_hash(sets[other_set(y)]):
            _say(f"note: {lm.path} trained on train_{other_set(y)}, not on the audited images: a control")
            return
        lm.check_trained_on(train_y, f"{part.root}/{cfg.npc}_per_class/train_{y}.npy")


def _say(line: str) -> None:
    """One line on stderr (what was loaded, warnings), before the long steps (torchrun: rank 0's)."""
    if dist.is_main():
        print(f"dejavu audit: {line}", file=sys.stderr, flush=True)


def size_warning(clf_size: int, boxes: np.ndarray, factor: float = 4.0) -> str | None:
    """A warning when the classifier's input side is more than ``factor`` times the crops'
    median long side (upsampled pixels carry no detail and cost time), else None."""
    if not len(boxes):
        return None
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    med = float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    if med <= 0 or clf_size <= factor * med:
        return None
    return (
        f"the crop classifier runs at {clf_size} px on crops whose median long side is {med:.0f} px "
        f"({clf_size / med:.0f}x upsampled: slower, no more detail); --set clf_image_size=N sets its own size"
    )


@dataclass
class AuditJob:
    """What an audit resolved before training or embedding anything (:func:`_setup`)."""

    cfg: AuditConfig
    out: Path
    paths: DataPaths
    index: DatasetIndex
    part: Partition
    public: np.ndarray
    audit_idx: np.ndarray
    train_idx: np.ndarray | None  # the classifier's training set; None with --reference-model
    device: str
    lm: Any  # the audited LoadedModel; a monitor puts its live model here per epoch (None between)
    ref: tuple[LoadedModel, dict[str, Any], np.ndarray | None] | None  # :func:`_reference`'s answer
    image_size: int
    min_px: float
    acfg: AttackConfig  # the attack's settings of the crops
    crops: SetCrops  # the audited set's crops (:func:`dejavu.attack.crops.compute_crops`)
    warnings: list[str] = field(default_factory=list)  # said on stderr and kept in results.json
    extra_clfs: list[LoadedModel] = field(default_factory=list)  # classifiers 2..N (``classifiers``)

    @property
    def clf_train(self) -> np.ndarray | None:
        """The images the classifier trained on (None: a reference classifier that does not say)."""
        return self.train_idx if self.ref is None else self.ref[2]

    @property
    def public_labels(self) -> np.ndarray:
        return self.index.targets[self.public]


def audit_sets(
    cfg: AuditConfig,
    partition: str | os.PathLike,
    paths: DataPaths,
    reference_model: str | os.PathLike | None,
    index: DatasetIndex | None,
) -> tuple[DatasetIndex, Partition, np.ndarray, np.ndarray, np.ndarray | None]:
    """The dataset and the sets of an audit (and of the monitor), refused if they overlap.

    Returns:
        ``(index, partition, public, audited, classifier training set)``; the last is None
        with a reference classifier (``reference_model``).
    """
    index = index or scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    public = load_set(part, index, cfg.npc, cfg.public_set) if cfg.public_set else part.attack_public()
    audit_idx = load_set(part, index, cfg.npc, cfg.audit_set)
    train_idx = load_set(part, index, cfg.npc, cfg.train_set) if reference_model is None else None
    check_disjoint(audit_idx, train_idx, public, (cfg.audit_set, cfg.train_set))
    return index, part, public, audit_idx, train_idx


def _setup(
    model: str | os.PathLike,
    partition: str | os.PathLike,
    paths: DataPaths,
    out: Path,
    cfg: AuditConfig,
    reference_model: str | os.PathLike | None,
    index: DatasetIndex | None,
) -> AuditJob:
    """Phase 1: the sets (refused if they overlap), the audited model (and a reference
    classifier), the audited set's crops."""
    device = str(choose_device(cfg.device, dist.current().local_rank))  # torchrun: each rank its GPU
    index, part, public, audit_idx, train_idx = audit_sets(cfg, partition, paths, reference_model, index)
    lm = load_model(model, arch=cfg.arch, projector=cfg.projector, image_size=cfg.image_size)
    lm.check_dataset(index)
    if reference_model is not None and cfg.classifiers > 1:
        raise UsageError(
            f"--classifiers {cfg.classifiers} trains its classifiers; it does not go with --reference-model"
        )
    _check_model_sets(lm, part, cfg, audit_idx)
    ref = _reference(reference_model, index, audit_idx, part, cfg.npc) if reference_model is not None else None
    min_px = resolve_min_crop_px(cfg.min_crop_px, paths.images)
    acfg = cfg.attack_config()
    what = f"audit set {cfg.audit_set}"
    crops = compute_crops(index, paths.annotation_dir, audit_idx, acfg, min_px, desc="crops (audited)", what=what)
    image_size = int(cfg.image_size or lm.config.get("image_size") or 224)
    lm.loaded.update(image_size=image_size, embed=cfg.embed)
    if not cfg.image_size and not lm.config.get("image_size"):
        lm.loaded["image_size_note"] = "default: the checkpoint records none; --image-size N sets it"
    _say(lm.describe(cfg.embed))
    return AuditJob(
        cfg, out, paths, index, part, public, audit_idx, train_idx, device, lm, ref, image_size, min_px, acfg, crops
    )


def _crop_classifier(job: AuditJob, resume: bool, force: bool) -> tuple[LoadedModel, dict[str, Any], dict[str, Any]]:
    """Phase 3: the crop classifier (trained here, or the reference one); returns
    (LoadedModel, its ``results.json`` info, the audit's ``counts``). With ``classifiers``
    N > 1, N - 1 more, seeded ``seed + i``, go to ``job.extra_clfs`` (``OUT/classifier_{i+1}``)."""
    counts: dict[str, Any] = {"audit": job.crops.counts, "public": len(job.public)}
    ref_size = job.ref[0].config.get("image_size") if job.ref is not None else None
    warn = size_warning(int(ref_size or job.cfg.clf_image_size or job.image_size), job.crops.boxes)
    if warn:
        _say("warning: " + warn)
        job.warnings.append(warn)
    if job.ref is not None:
        clf, clf_info, _ = job.ref
        return clf, clf_info, counts
    sc = _classifier_crops(job)
    clf, clf_info = _classifier(job, resume, force, sc, 0)
    counts["classifier_train"] = sc.counts
    for i in range(1, job.cfg.classifiers):
        extra, info = _classifier(job, resume, force, sc, i)
        job.extra_clfs.append(extra)
        clf_info.setdefault("others", []).append(info)
    return clf, clf_info, counts


def _classifier_crops(job: AuditJob) -> SetCrops:
    """The crops of the classifier's training set (:func:`dejavu.attack.crops.compute_crops`)."""
    cfg, train_idx = job.cfg, job.train_idx
    assert train_idx is not None  # no reference classifier
    sc = compute_crops(
        job.index, job.paths.annotation_dir, train_idx, cfg.attack_config(), job.min_px, desc="crops (classifier)"
    )
    if len(sc.indices) < 2:
        raise DejavuError(
            f"classifier training set {cfg.train_set}: {len(sc.indices)} attackable image(s) "
            f"out of {len(train_idx)}; need more"
        )
    return sc


def _classifier(
    job: AuditJob, resume: bool, force: bool, sc: SetCrops, i: int = 0
) -> tuple[LoadedModel, dict[str, Any]]:
    """Train (or finish training) crop classifier ``i`` (seed ``seed + i``, folder
    ``OUT/classifier`` for 0, ``OUT/classifier_{i+1}`` after); returns (LoadedModel, info).
    Under torchrun rank 0 trains it, as one process would; the other ranks load its file."""
    cfg = dataclasses.replace(job.cfg, seed=job.cfg.seed + i)
    cdir = job.out / ("classifier" if i == 0 else f"classifier_{i + 1}")
    if dist.is_main():
        _train_classifier_file(job, cfg, cdir, resume, force, sc)
    dist.barrier()  # the classifier's file is there for every rank
    lm = load_model(cdir / "classifier.pth")
    diff = sorted(k for k, v in cfg.classifier_config().items() if lm.config.get(k) != v)
    if diff:
        raise DejavuError(
            f"{cdir / 'classifier.pth'}: trained with other settings ({', '.join(diff)}); pass --force to retrain"
        )
    return lm, {**lm.config.get("metrics", {}), "trained": True, "path": str(cdir / "classifier.pth")}


def _train_classifier_file(
    job: AuditJob, cfg: AuditConfig, cdir: Path, resume: bool, force: bool, sc: SetCrops
) -> None:
    """Write ``cdir/classifier.pth`` unless a finished one is there (``force``: retrain)."""
    index = job.index
    if force and not resume:
        classifier_dir_clean(cdir)
    if not is_finished(cdir):
        crops = CropSet(sc.indices, sc.boxes, index.targets[sc.indices])
        meta = {
            "set": cfg.train_set,
            "npc": cfg.npc,
            "fingerprint": index.fingerprint.to_dict(),
            "partition": str(job.part.root),
        }
        clf_size = int(cfg.clf_image_size or job.image_size)
        train_classifier(cfg, index, crops, len(index.classes), clf_size, cdir, job.device, resume=resume, meta=meta)


def _reference(
    path: str | os.PathLike, index: DatasetIndex, audit_idx: np.ndarray, part: Partition, npc: int
) -> tuple[LoadedModel, dict[str, Any], np.ndarray | None]:
    """A classifier trained elsewhere: it needs a classifier head over this dataset's classes.
    Returns (LoadedModel, info, its training images or None when it does not record them)."""
    lm = load_model(path)
    if lm.model.classifier is None:
        raise DejavuError(
            f"{path}: no classifier head; --reference-model needs a crop classifier "
            f"(e.g. OUT/classifier/classifier.pth of an earlier audit)"
        )
    n_out = num_outputs(lm.model)
    if n_out != len(index.classes):
        raise DejavuError(f"{path}: predicts {n_out} classes but the dataset has {len(index.classes)}")
    lm.check_dataset(index)
    seen = lm.config.get("set")
    trained_on = None
    if seen:
        try:
            trained_on = load_set(part, index, int(lm.config.get("npc") or npc), str(seen))
        except DejavuError:
            trained_on = None
        if trained_on is not None:
            check_disjoint(audit_idx, trained_on, np.zeros(0, np.int64), ("audited", f"{seen} (of {path})"))
    info = {k: v for k, v in (lm.config.get("metrics") or {}).items()}
    return lm, {**info, "trained": False, "path": str(path)}, trained_on


def _trained_here(lm: LoadedModel, part: Partition) -> bool:
    """Does the audited checkpoint record which of this partition's sets it trained on
    (this tool's training on ``<npc>_per_class/train_{A,B}.npy`` of this partition)?"""
    cfg = lm.config
    if lm.source != "dejavu" or cfg.get("set") not in ("A", "B") or int(cfg.get("npc") or -1) not in part.npcs:
        return False
    where = cfg.get("partition")
    return where is None or Path(where).resolve() == Path(part.root).resolve()


@dataclass
class _Labelled:
    """Phase 4's answer: the audited (and control) crops' arrays, and what was resolved."""

    arrays: dict[str, np.ndarray]
    carrays: dict[str, np.ndarray] | None
    cached: bool
    resolved: dict[str, Any]


def _embed_and_label(job: AuditJob, clf: LoadedModel, ctrl: _Control, cache_dir: str | os.PathLike | None) -> _Labelled:
    """Phase 4: the public embeddings (cached), then the audited crops and the control's
    embedded, KNN-searched and classified by the same model and classifier."""
    clf_size = int(clf.config.get("image_size") or job.image_size)
    clf_input = str(clf.config.get("clf_input") or job.cfg.clf_input)  # a foreign reference: as configured
    op = SquareJpeg(clf_size) if clf_input == "square" else None
    same = clf_size == job.image_size and op is None
    clf_tf = None if same else with_input(op, eval_transform(clf_size))
    cdir = embed_cache_dir(cache_dir, job.out)
    tf, tdesc = eval_transform(job.image_size), describe_eval_transform(job.image_size)
    (pub_emb,), (cached,) = public_embeddings([job.lm], job.index, job.public, tf, tdesc, job.cfg, job.device, cdir)
    clfs = [clf, *job.extra_clfs]
    arrays = _label_crops(job, clfs, job.index, job.crops, pub_emb, tf, clf_tf, "audited")
    carrays = None
    if ctrl.src is not None and ctrl.crops is not None:
        carrays = _label_crops(job, clfs, ctrl.src.index, ctrl.crops, pub_emb, tf, clf_tf, "control")
    resolved = {
        "image_size": job.image_size,
        "min_crop_px": job.min_px,
        "device": job.device,
        "transform": tdesc,
        "classifier_image_size": clf_size,
        "classifier_input": clf_input,
        "k_attk": job.acfg.k_attk,
        "forward_precision": resolved_precision(job.device, job.cfg.precision),
    }
    return _Labelled(arrays, carrays, cached, resolved)


def _label_crops(
    job: AuditJob,
    clfs: list[LoadedModel],
    cindex: DatasetIndex,
    crops: SetCrops,
    pub_emb: Any,
    transform,
    clf_transform,
    what: str,
) -> dict[str, np.ndarray]:
    """KNN of the model's crop embeddings over its public embeddings, and the classifier's
    logits on the same crops (one decode per crop when both use the same transform), for each
    classifier of ``clfs`` (``classifier_logits``, then ``classifier{i}_logits`` for i = 2..N).
    ``cindex``: the crops' image index (the training set's, or a validation listing)."""
    cfg = job.cfg

    def run(models: list[nn.Module], tf, kind: str, desc: str) -> list[Any]:
        ds = ImageCrops.of(cindex, crops.indices, crops.boxes, tf)
        return embed_rows(  # embed_dataset; under torchrun each rank its share
            models, ds, kind, cfg.batch_size, job.device, cfg.workers, desc=desc, precision=cfg.precision
        )

    heads: list[nn.Module] = [_Logits(c.model) for c in clfs]
    if clf_transform is None:  # same resolution: one pass
        emb, *logits = run([job.lm.model, *heads], transform, cfg.embed, f"{what} crops")
    else:
        (emb,) = run([job.lm.model], transform, cfg.embed, f"{what} crops (model)")
        logits = run(heads, clf_transform, "logits", f"{what} crops (classifier)")
    _, pos = dist.knn(emb, pub_emb, cfg.k, backend=cfg.knn, device=job.device, desc=f"knn {what} crops")
    logits = [dist.gather(lg) for lg in logits]  # torchrun: on rank 0 ((n, 0) elsewhere)
    # the attack's (and the original's) contents: dataset indices, labels of shape (n, 1)
    return {
        "attk_idxs": crops.indices,
        "labels": cindex.targets[crops.indices][:, None],
        "model_neighb_idxs": job.public[pos],
        "model_neighb_labels": job.public_labels[pos],
        "classifier_logits": logits[0],
        **{f"classifier{i + 1}_logits": lg for i, lg in enumerate(logits) if i},
    }


@dataclass
class _Control:
    """The control's images (:class:`dejavu.audit.control.AuditControl`) and their crops,
    or the note saying why there is none."""

    src: AuditControl | None = None
    crops: SetCrops | None = None
    note: str | None = None


def _control_crops(
    control: str | os.PathLike | None, control_bboxes: str | os.PathLike | None, job: AuditJob
) -> _Control:
    """Phase 2: resolve the held-out control (:mod:`dejavu.audit.control`) and crop it as the
    audited set (before the classifier trains, so a bad control fails early)."""
    src, note = resolve_audit_control(
        control,
        job.part,
        job.index,
        job.paths,
        control_bboxes,
        job.audit_idx,
        job.clf_train,
        _trained_here(job.lm, job.part),
    )
    if src is None:
        return _Control(note=note)
    check_control_public(src, job.public)
    ann_dir = job.paths.annotation_dir if src.info.get("kind") == "partition" else None
    what = f"control ({src.info.get('kind')})"
    crops = compute_crops(
        src.index, ann_dir, src.idx, job.acfg, job.min_px, desc="crops (control)", ann_path=src.ann_path, what=what
    )
    return _Control(src, crops)


@dist.stage(lambda a: a["cfg"].device if a["cfg"] is not None else None)  # torchrun / SLURM tasks: join the group
@locks_output("audit", folder_of=dist.main_rank_out)
def audit(
    model: str | os.PathLike,
    partition: str | os.PathLike,
    paths: DataPaths,
    out: str | os.PathLike,
    cfg: AuditConfig | None = None,
    force: bool = False,
    resume: bool = False,
    reference_model: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    index: DatasetIndex | None = None,
    control: str | os.PathLike | None = "auto",
    control_bboxes: str | os.PathLike | None = None,
) -> AuditResult:
    """Audit one checkpoint and write ``out`` (the module docstring lists the files), without
    autograd (the classifier's training turns it back on), holding the output folder's lock.

    Args:
        model: the audited checkpoint (this tool's, or released weights ``load_model`` reads).
        partition: the partition folder (``dejavu partition``) of the training images.
        paths: the dataset's image folder and box annotations.
        out: the audit folder; refused if it holds an audit, unless ``force``.
        cfg: the audit's settings (default :class:`AuditConfig`), validated first.
        force: overwrite an earlier audit in ``out`` (and retrain its classifier unless ``resume``).
        resume: finish an interrupted classifier training in ``out/classifier``.
        reference_model: a crop classifier trained elsewhere (e.g. an earlier audit's
            ``classifier/classifier.pth``) instead of training one here.
        cache_dir: public-embedding cache; default ``out/../.embed_cache``, ``""`` turns it off.
        index: the training images' index, when the caller has scanned them already.
        control: the held-out control: ``"auto"``, ``"none"``, ``"partition"`` or a folder of
            annotated validation images (:mod:`dejavu.audit.control`).
        control_bboxes: box files of a validation control (default: its folder).

    Returns:
        The audit folder and its ``results.json`` contents.

    Raises:
        DejavuError: an audit already in ``out`` without ``force``; overlapping sets; a set
            or control with no attackable image; a classifier trained with other settings.
    """
    cfg = cfg or AuditConfig()
    cfg.validate()
    check_preset(cfg)
    out = _prepare_out(Path(out), force)
    job = _setup(model, partition, paths, out, cfg, reference_model, index)
    ctrl = _control_crops(control, control_bboxes, job)
    out.mkdir(parents=True, exist_ok=True)
    clf, clf_info, counts = _crop_classifier(job, resume, force)
    lab = _embed_and_label(job, clf, ctrl, cache_dir)
    if not dist.is_main():  # torchrun: the other ranks' part ends with the last search
        return AuditResult(out, {})
    return _write(job, lab, clf, clf_info, counts, ctrl)


def _prepare_out(out: Path, force: bool) -> Path:
    """Refuse to overwrite an audit without ``force``; with it, ``results.json`` goes first
    (no reader pairs the old results with new arrays)."""
    if (out / "results.json").exists() and not force:
        raise DejavuError(f"{out}: an audit already exists here; pass --force to overwrite")
    dist.barrier()  # torchrun: every rank has looked before rank 0 removes anything
    if not dist.is_main():
        return out
    if force:
        (out / "results.json").unlink(missing_ok=True)
    check_can_write(out, force=True)
    return out


def _write(
    job: AuditJob, lab: _Labelled, clf: LoadedModel, clf_info: dict[str, Any], counts: dict[str, Any], ctrl: _Control
) -> AuditResult:
    """Phase 5: metrics, the arrays, ``examples.csv``, the control's files, and
    ``results.json`` last."""
    cfg, index, out, arrays = job.cfg, job.index, job.out, lab.arrays
    num_classes = len(index.classes)
    k_attk = lab.resolved["k_attk"]
    comp, metrics = score_arrays(arrays, cfg, num_classes, k_attk, _set_label(cfg.audit_set))
    atomic_save_npy(out / "public_idxs.npy", job.public)
    atomic_save_npy(out / "public_labels.npy", job.public_labels)
    atomic_save_npy(out / "crops.npy", job.crops.boxes)
    for name, arr in arrays.items():
        atomic_save_npy(out / f"{name}.npy", arr)
    write_examples_csv(out / "examples.csv", [comp])
    control = _write_control(out, cfg, ctrl, lab.carrays, comp, num_classes, k_attk)
    results = _results(job, lab, clf, clf_info, counts, metrics)
    if isinstance(control, dict):
        results["control"] = control
    elif control:
        results["control_skipped"] = control
    results["memorization"] = memorization_reading(results)
    for note in results["memorization"]["notes"]:
        _say("warning: " + note)
    results["primary_endpoint"] = primary_endpoint(results)  # named; every other number is secondary
    atomic_write_json(out / "results.json", results)
    return AuditResult(out, results)


def score_arrays(
    arrays: dict[str, np.ndarray], cfg: AuditConfig, num_classes: int, k_attk: int, set_name: str
) -> tuple[Comparison, dict[str, Any]]:
    """The audit's comparison of labelled crops (:func:`_label_crops`'s arrays) and its
    ``metrics`` block (also :mod:`dejavu.monitor`'s).

    Args:
        arrays: ``labels``, ``attk_idxs``, ``model_neighb_labels``, ``classifier_logits`` and, with
            several classifiers, ``classifier<i>_logits``.
        cfg: the audit's settings (``confidence``, ``n_boot``, ``seed``).
        num_classes: classes of the dataset.
        k_attk: neighbours voting.
        set_name: the audited set's name in the metrics block.

    Returns:
        ``(comparison, metrics)``: the model (target) against the (first) classifier (reference;
        the classifiers' unanimous scores as the sample test's reference with several).
    """
    comp = _comparison(arrays, cfg, num_classes, k_attk, set_name)
    metrics = compute_all([comp], num_classes, n_boot=cfg.n_boot, seed=cfg.seed, unit=AUDIT_UNIT)
    metrics["sample_rule"] = _sample_rule(arrays)
    sref = comp.sample_reference
    if sref is not None:  # DejaVuOSS's correlation set: crops every classifier gets right
        metrics["correlation_set"] = {"n": int(np.sum(sref.correct1 == 1)), "share": float(np.mean(sref.correct1))}
    return comp, metrics


def _comparison(
    arrays: dict[str, np.ndarray], cfg: AuditConfig, num_classes: int, k_attk: int, name: str
) -> Comparison:
    """The model's KNN scores against the first classifier's and, with several classifiers,
    their :func:`dejavu.audit.classifier.unanimous` scores as the sample test's reference."""
    labels = arrays["labels"].reshape(-1)
    target = scores_from_neighbours(arrays["model_neighb_labels"], labels, arrays["attk_idxs"], k_attk, num_classes)
    names = ["classifier_logits"] + sorted(
        (k for k in arrays if k.startswith("classifier") and k[len("classifier") : -len("_logits")].isdigit()),
        key=lambda k: int(k[len("classifier") : -len("_logits")]),
    )
    refs = [classifier_scores(arrays[k], labels, arrays["attk_idxs"], cfg.confidence) for k in names]
    return Comparison(name, target, refs[0], unanimous(refs) if len(refs) > 1 else None)


def _sample_rule(arrays: dict[str, np.ndarray]) -> str:
    n = 1 + sum(1 for k in arrays if k.startswith("classifier") and k[len("classifier") : -len("_logits")].isdigit())
    if n == 1:
        return "classifier right = the crop classifier's top-1 is right"
    return (
        f"classifier right = all {n} crop classifiers (seeds seed..seed+{n - 1}) right, as DejaVuOSS's "
        "correlation set; the population test uses the first"
    )


def _results(
    job: AuditJob,
    lab: _Labelled,
    clf: LoadedModel,
    clf_info: dict[str, Any],
    counts: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The ``results.json`` contents, less the control block."""
    cfg = job.cfg
    return {
        "format": FORMAT,
        "kind": "one-model",
        "config": recorded_config(cfg, lab.resolved),
        "method": job.lm.config.get("method"),
        "npc": cfg.npc,
        "epoch": job.lm.epoch,
        "sets": {"audit": cfg.audit_set, "classifier_train": clf.config.get("set")},
        "models": {"audited": model_info(job.lm, loaded=True), "classifier": model_info(clf, loaded=True)},
        "classifier": {**clf_info, "accuracy_on_audited": metrics["top1"]["reference"]["100"]},
        "fingerprint": job.index.fingerprint.to_dict(),
        "partition": str(job.part.root),
        "counts": counts,
        "embed_cache": {"hit": bool(lab.cached)},
        "num_classes": len(job.index.classes),
        "metrics": metrics,
        "warnings": list(job.warnings),
    }


def _write_control(
    out: Path,
    cfg: AuditConfig,
    ctrl: _Control | None,
    carrays: dict[str, np.ndarray] | None,
    comp: Comparison,
    num_classes: int,
    k_attk: int,
) -> dict[str, Any] | str | None:
    """The control's files (``control_`` + the audit's names) and ``results.json`` block, or
    the note saying why there is no control."""
    if ctrl is None or ctrl.src is None or ctrl.crops is None or carrays is None:
        for f in out.glob(f"{PREFIX}*.npy"):  # an earlier audit's control (--force): not this audit's
            f.unlink()
        return ctrl.note if ctrl is not None else None
    ccomp = _comparison(carrays, cfg, num_classes, k_attk, "control")
    atomic_save_npy(out / f"{PREFIX}crops.npy", ctrl.crops.boxes)
    for name, arr in carrays.items():
        atomic_save_npy(out / f"{PREFIX}{name}.npy", arr)
    counts = {"control": ctrl.crops.counts}
    return control_block(
        [comp], [ccomp], counts, ctrl.src.info, num_classes, cfg.n_boot, cfg.seed, AUDIT_UNIT, AUDIT_EXCESS
    )


def _set_label(name: str) -> str:
    """``bbox_A`` -> ``A`` (the examples.csv ``set`` column); other names as given."""
    return name[-1] if name in ("bbox_A", "bbox_B") else Path(name).stem


def summary_text(res: dict[str, Any]) -> str:
    """The CLI's summary of an audit.

    Args:
        res: an audit's ``results.json`` contents (format ``dejavu-audit/1``).

    Returns:
        Lines joined by newlines: crop counts and the classifier; model and classifier accuracy
        and their gap per top-k and fraction (5/20/100%); the score (top-1, 20%) with its 95% CI;
        the sample test's shares; the held-out control (:func:`dejavu.analysis.significance.control_summary_lines`).
    """
    m = res["metrics"]
    c = res["counts"]["audit"]
    clf = res["classifier"]
    ho = clf.get("heldout_acc")
    loaded = res.get("models", {}).get("audited", {}).get("loaded")
    lines = [describe_loaded(loaded, loaded.get("embed", "projector"))] if loaded else []
    lines += [f"warning: {w}" for w in res.get("warnings", [])]
    lines += [
        f"audit set {res['sets']['audit']}: {c['attacked']}/{c['bbox']} crops; classifier "
        f"{'trained on ' + str(res['sets']['classifier_train']) if clf.get('trained') else 'from ' + clf['path']}"
        + (f", held-out accuracy {pct(ho)} ({clf.get('n_heldout')} crops)" if ho is not None else ""),
    ]

    lines += accuracy_table_lines(m, "model", "clf")
    bound = "control" not in res
    lines.append(
        f"one-model deja vu score (top-1, 20%): {pts(score_at(m['top1']))}  {ci95_text(score_at(m['top1']['ci95']))}"
        + ("  (an upper bound on memorization: no control)" if bound else "")
    )
    shares = ", ".join(f"{k} {'<= ' if bound and k == 'memorized' else ''}{pct(v)}" for k, v in m["quadrants"].items())
    lines.append(f"sample test{' (no control: memorized is an upper bound)' if bound else ''}: {shares}")
    if "correlation_set" in m:
        lines.append(f"  ({m['sample_rule']}: correlation set {m['correlation_set']['n']} crops)")

    notes = (res.get("memorization") or memorization_reading(res))["notes"]
    return "\n".join(lines + control_summary_lines(res) + [f"note: {n}" for n in notes])
