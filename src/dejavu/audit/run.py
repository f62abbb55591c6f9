"""``audit(...)``: the one-model déjà vu test of one checkpoint (DESIGN 7.3).

Order of work, reusing the attack's pieces (:mod:`dejavu.attack`):
1. the audited set (bbox_A by default) and the classifier's training set (bbox_B by
   default) from the partition, refused if they overlap or the audited set meets the
   public set; their periphery crops (:func:`dejavu.attack.crops.compute_crops`);
2. the crop classifier: trained into ``OUT/classifier/`` (:mod:`dejavu.audit.classifier`),
   or loaded from ``reference_model``;
3. public embeddings of the audited model (cached, :class:`dejavu.attack.embed.CachedEmbedder`);
4. the audited crops decoded once, embedded by the model and classified by the classifier;
5. KNN of the model's crop embeddings over the public set (:func:`dejavu.attack.knn.knn`);
6. the held-out control (:mod:`dejavu.audit.control`): images neither the model nor
   the classifier trained on (``--control auto|none|partition|VAL_DIR``), cropped (before the
   classifier trains, so a bad control fails early), embedded, searched and classified as the
   audited set, by the same model and classifier;
7. metrics (:mod:`dejavu.audit.metrics`), the control's and the excess of the score over it
   (paired bootstrap over both sets), files; ``results.json`` last.

Under torchrun (:mod:`dejavu.attack.dist`) rank 0 trains the classifier (the other ranks
wait and load its file), every rank embeds its share of the public set and of the crops and
searches its share of the public set, and rank 0 writes the same bytes as one process.

Why the control, and which images: a score S = model − classifier can be positive without
any memorization (the KNN over the public set and a classifier trained on few crops are not
equally good at recognising an object from its background). The same model and classifier
on images that neither trained on give that part, C; the excess S − C is the memorization.
The classifier must never have trained on the control (its accuracy there would be inflated,
C too low and the excess too high): images of the classifier's training set and audited
images are removed from a partition control (the classifier trained on ``control_B.npy``
leaves ``control_A`` as the control), and ``auto`` skips a control that nothing is left of,
or that a released checkpoint may have trained on, with a note (``control_skipped``).

Audit folder ``OUT/``: ``attk_idxs.npy``, ``labels.npy`` (n, 1), ``model_neighb_idxs.npy``
(dataset indices) / ``model_neighb_labels.npy`` (as the attack's ``X_attk_Y_*``), ``classifier_logits.npy``,
``crops.npy``, ``public_idxs.npy``, ``public_labels.npy``, ``examples.csv`` (the attack's
columns: target = the audited model, reference = the classifier) and ``results.json``
(format ``dejavu-audit/1``, the attack's ``metrics`` block, and a ``control`` block shaped
as the attack's: ``source``, ``counts``, ``metrics``, ``excess``), and the control's arrays
with the prefix ``control_``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from dejavu import DejavuError, UsageError, formats
from dejavu.audit.config import AuditConfig
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.io import atomic_save_npy, atomic_write_json, check_can_write, index_hash, locks_output

FORMAT = formats.AUDIT


@dataclass
class AuditResult:
    """What :func:`audit` returns: the audit folder and its ``results.json`` contents."""

    out: Path
    results: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        """The ``metrics`` block of ``results.json`` (:func:`dejavu.audit.metrics.one_model_metrics`)."""
        return self.results["metrics"]


def load_set(part, index: DatasetIndex, npc: int, name: str) -> np.ndarray:
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
    from dejavu.partition import load_index_file

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


def _model_info(lm) -> dict[str, Any]:
    info = {"path": str(lm.path), "sha256": lm.sha256, "epoch": lm.epoch, "source": lm.source, "config": lm.config}
    return {**info, "loaded": lm.loaded} if lm.loaded else info


def _check_model_sets(lm: Any, part: Any, cfg: AuditConfig, audit_idx: np.ndarray) -> None:
    """The model must have trained on the partition's training set holding the audited images
    (when it records its training index); with ``unseen_ok`` it may instead record the
    partition's other training set, the audit then being a control (said on stderr)."""
    sets = {y: part.load_set(cfg.npc, f"train_{y}") for y in "AB"}
    for y, train_y in sets.items():
        if not np.isin(audit_idx, train_y).all():
            continue
        other = sets["B" if y == "A" else "A"]
        if cfg.unseen_ok and lm.config.get("index_sha256") == index_hash(other):
            _say(f"note: {lm.path} trained on train_{'B' if y == 'A' else 'A'}, not on the audited images: a control")
            return
        lm.check_trained_on(train_y, f"{part.root}/{cfg.npc}_per_class/train_{y}.npy")


def _say(line: str) -> None:
    """One line on stderr (what was loaded, warnings), before the long steps (torchrun: rank 0's)."""
    import sys

    from dejavu.attack.dist import is_main

    if is_main():
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
class _Job:
    """What an audit resolved before training or embedding anything (:func:`_setup`)."""

    cfg: AuditConfig
    out: Path
    paths: DataPaths
    index: DatasetIndex
    part: Any  # dejavu.partition.Partition
    public: np.ndarray
    audit_idx: np.ndarray
    train_idx: np.ndarray | None  # the classifier's training set; None with --reference-model
    device: str
    lm: Any  # the audited model (LoadedModel)
    ref: tuple[Any, dict[str, Any], np.ndarray | None] | None  # :func:`_reference`'s answer
    image_size: int
    min_px: float
    acfg: Any  # the attack's settings of the crops (AttackConfig)
    crops: Any  # the audited set's crops (:func:`dejavu.attack.crops.compute_crops`)
    warnings: list[str] = field(default_factory=list)  # said on stderr and kept in results.json
    extra_clfs: list[Any] = field(default_factory=list)  # classifiers 2..N (``classifiers``)

    @property
    def clf_train(self) -> np.ndarray | None:
        """The images the classifier trained on (None: a reference classifier that does not say)."""
        return self.train_idx if self.ref is None else self.ref[2]

    @property
    def public_labels(self) -> np.ndarray:
        return self.index.targets[self.public]


def _setup(
    model: str | os.PathLike,
    partition: str | os.PathLike,
    paths: DataPaths,
    out: Path,
    cfg: AuditConfig,
    reference_model: str | os.PathLike | None,
    index: DatasetIndex | None,
    public: np.ndarray | None,
) -> _Job:
    """Phase 1: the sets (refused if they overlap), the audited model (and a reference
    classifier), the audited set's crops."""
    from dejavu.attack.crops import compute_crops, default_min_crop_px
    from dejavu.attack.dist import current
    from dejavu.device import choose_device
    from dejavu.partition import Partition
    from dejavu.ssl.checkpoint import load_model

    device = str(choose_device(cfg.device, current().local_rank))  # torchrun: each rank its GPU
    index = index or scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    if public is None and cfg.public_set:
        public = load_set(part, index, cfg.npc, cfg.public_set)
    public = part.attack_public() if public is None else index.check_indices(np.asarray(public), "public override")
    audit_idx = load_set(part, index, cfg.npc, cfg.audit_set)
    train_idx = load_set(part, index, cfg.npc, cfg.train_set) if reference_model is None else None
    check_disjoint(audit_idx, train_idx, public, (cfg.audit_set, cfg.train_set))

    lm = load_model(model, arch=cfg.arch, projector=cfg.projector, image_size=cfg.image_size)
    if lm.fingerprint:
        index.fingerprint.check(lm.fingerprint, what=f"checkpoint {lm.path}")
    if reference_model is not None and cfg.classifiers > 1:
        raise UsageError(
            f"--classifiers {cfg.classifiers} trains its classifiers; it does not go with --reference-model"
        )
    _check_model_sets(lm, part, cfg, audit_idx)
    ref = _reference(reference_model, index, audit_idx, part, cfg.npc) if reference_model is not None else None
    min_px = float(cfg.min_crop_px if cfg.min_crop_px is not None else default_min_crop_px(paths.images))
    acfg = cfg.attack_config()
    crops = compute_crops(index, paths.annotation_dir, audit_idx, acfg, min_px, desc="crops (audited)")
    if len(crops.indices) == 0:
        raise DejavuError(
            f"audit set {cfg.audit_set}: no attackable image out of {len(audit_idx)} "
            f"(min_crop_px {min_px:g}); lower min_crop_px?"
        )
    image_size = int(cfg.image_size or lm.config.get("image_size") or 224)
    lm.loaded.update(image_size=image_size, embed=cfg.embed)
    if not cfg.image_size and not lm.config.get("image_size"):
        lm.loaded["image_size_note"] = "default: the checkpoint records none; --image-size N sets it"
    _say(lm.describe(cfg.embed))
    return _Job(
        cfg, out, paths, index, part, public, audit_idx, train_idx, device, lm, ref, image_size, min_px, acfg, crops
    )


def _crop_classifier(job: _Job, resume: bool, force: bool) -> tuple[Any, dict[str, Any], dict[str, Any]]:
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


def _classifier_crops(job: _Job):
    """The crops of the classifier's training set (:func:`dejavu.attack.crops.compute_crops`)."""
    from dejavu.attack.crops import compute_crops

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


def _classifier(job: _Job, resume: bool, force: bool, sc, i: int = 0) -> tuple[Any, dict[str, Any]]:
    """Train (or finish training) crop classifier ``i`` (seed ``seed + i``, folder
    ``OUT/classifier`` for 0, ``OUT/classifier_{i+1}`` after); returns (LoadedModel, info).
    Under torchrun rank 0 trains it, as one process would; the other ranks load its file."""
    import dataclasses

    from dejavu.attack import dist
    from dejavu.ssl.checkpoint import load_model

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


def _train_classifier_file(job: _Job, cfg: AuditConfig, cdir: Path, resume: bool, force: bool, sc) -> None:
    """Write ``cdir/classifier.pth`` unless a finished one is there (``force``: retrain)."""
    from dejavu.audit.classifier import CropSet, classifier_dir_clean, is_finished, train_classifier

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


def _reference(path: str | os.PathLike, index: DatasetIndex, audit_idx: np.ndarray, part, npc: int):
    """A classifier trained elsewhere: it needs a classifier head over this dataset's classes.
    Returns (LoadedModel, info, its training images or None when it does not record them)."""
    from dejavu.ssl.checkpoint import load_model

    lm = load_model(path)
    if lm.model.classifier is None:
        raise DejavuError(
            f"{path}: no classifier head; --reference-model needs a crop classifier "
            f"(e.g. OUT/classifier/classifier.pth of an earlier audit)"
        )
    from dejavu.audit.classifier import num_outputs

    n_out = num_outputs(lm.model)
    if n_out != len(index.classes):
        raise DejavuError(f"{path}: predicts {n_out} classes but the dataset has {len(index.classes)}")
    if lm.fingerprint:
        index.fingerprint.check(lm.fingerprint, what=f"checkpoint {path}")
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


def _trained_here(lm, part) -> bool:
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


def _embed_and_label(job: _Job, clf, ctrl: _Control, cache_dir: str | os.PathLike | None) -> _Labelled:
    """Phase 4: the public embeddings (cached), then the audited crops and the control's
    embedded, KNN-searched and classified by the same model and classifier."""
    from dejavu.attack.embed import resolved_precision
    from dejavu.audit.classifier import SquareJpeg, with_input
    from dejavu.data.transforms import describe_eval_transform, eval_transform

    clf_size = int(clf.config.get("image_size") or job.image_size)
    clf_input = str(clf.config.get("clf_input") or job.cfg.clf_input)  # a foreign reference: as configured
    op = SquareJpeg(clf_size) if clf_input == "square" else None
    same = clf_size == job.image_size and op is None
    clf_tf = None if same else with_input(op, eval_transform(clf_size))
    cdir = None if cache_dir == "" else Path(cache_dir) if cache_dir is not None else job.out.parent / ".embed_cache"
    tf, tdesc = eval_transform(job.image_size), describe_eval_transform(job.image_size)
    pub_emb, cached = _public_embeddings(job, tdesc, tf, cdir)
    clfs = [clf, *job.extra_clfs]
    arrays = _label_crops(job, clfs, job.index, job.crops, pub_emb, tf, clf_tf, "audited")
    carrays = None
    if ctrl.src is not None:
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


def _public_embeddings(job: _Job, tdesc: str, transform, cache_dir: Path | None) -> tuple[Any, bool]:
    """The audited model's embeddings of the public set (cached; under torchrun each rank's
    share, :class:`dejavu.attack.dist.Sharded`)."""
    from dejavu.attack.embed import CachedEmbedder, cache_key, resolved_precision

    cfg, index = job.cfg, job.index
    prec = resolved_precision(job.device, cfg.precision)
    key = cache_key(job.lm.sha256, job.public, tdesc, cfg.embed, index.fingerprint.id, cfg.decode, prec)
    (pub_emb,), (cached,) = CachedEmbedder(cache_dir).embed_public(
        [job.lm.model],
        [key],
        [index.path(i) for i in job.public],
        transform,
        cfg.embed,
        cfg.batch_size,
        job.device,
        cfg.workers,
        decode=cfg.decode,
        precision=cfg.precision,
    )
    return pub_emb, bool(cached)


def _label_crops(
    job: _Job,
    clfs: list,
    cindex: DatasetIndex,
    crops,
    pub_emb: Any,
    transform,
    clf_transform,
    what: str,
) -> dict[str, np.ndarray]:
    """KNN of the model's crop embeddings over its public embeddings, and the classifier's
    logits on the same crops (one decode per crop when both use the same transform), for each
    classifier of ``clfs`` (``classifier_logits``, then ``classifier{i}_logits`` for i = 2..N).
    ``cindex``: the crops' image index (the training set's, or a validation listing)."""
    from dejavu.attack import dist
    from dejavu.attack.embed import ImageCrops, embed_rows

    cfg = job.cfg
    paths, boxes = [cindex.path(i) for i in crops.indices], [tuple(b) for b in crops.boxes.tolist()]

    def run(models: list[nn.Module], tf, kind: str, desc: str) -> list[Any]:
        ds = ImageCrops(paths, boxes, tf)
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

    src: Any = None
    crops: Any = None
    note: str | None = None


def _control_crops(control: str | os.PathLike | None, control_bboxes: str | os.PathLike | None, job: _Job) -> _Control:
    """Phase 2: resolve the held-out control (:mod:`dejavu.audit.control`) and crop it as the
    audited set (before the classifier trains, so a bad control fails early)."""
    from dejavu.attack.crops import compute_crops
    from dejavu.audit.control import check_control_public, resolve_audit_control

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
    crops = compute_crops(
        src.index, ann_dir, src.idx, job.acfg, job.min_px, desc="crops (control)", ann_path=src.ann_path
    )
    if len(crops.indices) == 0:
        raise DejavuError(
            f"control ({src.info.get('kind')}): no attackable image out of {len(src.idx)} (min_crop_px {job.min_px:g})"
        )
    return _Control(src, crops)


def _lock_folder(a: dict[str, Any]) -> Any:
    from dejavu.attack.dist import is_main

    return a["out"] if is_main() else None  # torchrun: rank 0 writes, rank 0 locks


@locks_output("audit", folder_of=_lock_folder)
def _audit(
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
    public: np.ndarray | None = None,
    control: str | os.PathLike | None = "auto",
    control_bboxes: str | os.PathLike | None = None,
) -> AuditResult:
    """Audit one checkpoint and write ``out`` (the module docstring lists the files).

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
        public: dataset indices replacing the partition's public set (the demo removes its
            held-out control images from it).
        control: the held-out control: ``"auto"``, ``"none"``, ``"partition"`` or a folder of
            annotated validation images (:mod:`dejavu.audit.control`).
        control_bboxes: box files of a validation control (default: its folder).

    Returns:
        The audit folder and its ``results.json`` contents.

    Raises:
        DejavuError: an audit already in ``out`` without ``force``; overlapping sets; a set
            or control with no attackable image; a classifier trained with other settings.
    """
    from dejavu.attack.dist import is_main
    from dejavu.audit.config import check_preset

    cfg = cfg or AuditConfig()
    cfg.validate()
    check_preset(cfg)
    out = _prepare_out(Path(out), force)
    job = _setup(model, partition, paths, out, cfg, reference_model, index, public)
    ctrl = _control_crops(control, control_bboxes, job)
    out.mkdir(parents=True, exist_ok=True)
    clf, clf_info, counts = _crop_classifier(job, resume, force)
    lab = _embed_and_label(job, clf, ctrl, cache_dir)
    if not is_main():  # torchrun: the other ranks' part ends with the last search
        return AuditResult(out, {})
    return _write(job, lab, clf, clf_info, counts, ctrl)


def _prepare_out(out: Path, force: bool) -> Path:
    """Refuse to overwrite an audit without ``force``; with it, ``results.json`` goes first
    (no reader pairs the old results with new arrays)."""
    from dejavu.attack.dist import barrier, is_main

    if (out / "results.json").exists() and not force:
        raise DejavuError(f"{out}: an audit already exists here; pass --force to overwrite")
    barrier()  # torchrun: every rank has looked before rank 0 removes anything
    if not is_main():
        return out
    if force:
        (out / "results.json").unlink(missing_ok=True)
    check_can_write(out, force=True)
    return out


def _write(
    job: _Job, lab: _Labelled, clf, clf_info: dict[str, Any], counts: dict[str, Any], ctrl: _Control
) -> AuditResult:
    """Phase 5: metrics, the arrays, ``examples.csv``, the control's files, and
    ``results.json`` last."""
    cfg, index, out, arrays = job.cfg, job.index, job.out, lab.arrays
    num_classes = len(index.classes)
    set_name = _set_label(cfg.audit_set)
    k_attk = lab.resolved["k_attk"]
    target, reference, sref, metrics = score_arrays(arrays, cfg, num_classes, k_attk, set_name)
    atomic_save_npy(out / "public_idxs.npy", job.public)
    atomic_save_npy(out / "public_labels.npy", job.public_labels)
    atomic_save_npy(out / "crops.npy", job.crops.boxes)
    for name, arr in arrays.items():
        atomic_save_npy(out / f"{name}.npy", arr)
    write_examples_csv(out / "examples.csv", target, sref or reference, set_name)
    control = _write_control(out, cfg, ctrl, lab.carrays, target, reference, num_classes, k_attk)
    results = _results(job, lab, clf, clf_info, counts, metrics)
    if isinstance(control, dict):
        results["control"] = control
    elif control:
        results["control_skipped"] = control
    from dejavu.analysis.significance import primary_endpoint
    from dejavu.audit.control import memorization_reading

    results["memorization"] = memorization_reading(results)
    for note in results["memorization"]["notes"]:
        _say("warning: " + note)
    results["primary_endpoint"] = primary_endpoint(results)  # named; every other number is secondary
    atomic_write_json(out / "results.json", results)
    return AuditResult(out, results)


def score_arrays(
    arrays: dict[str, np.ndarray], cfg: AuditConfig, num_classes: int, k_attk: int, set_name: str
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The audit's scores of labelled crops (:func:`_label_crops`'s arrays): the model's
    KNN scores, the (first) classifier's, and the ``metrics`` block (also :mod:`dejavu.monitor`'s).

    Args:
        arrays: ``labels``, ``attk_idxs``, ``model_neighb_labels``, ``classifier_logits`` and, with
            several classifiers, ``classifier<i>_logits``.
        cfg: the audit's settings (``confidence``, ``n_boot``, ``seed``).
        num_classes: classes of the dataset.
        k_attk: neighbours voting.
        set_name: the audited set's name in the metrics block.

    Returns:
        ``(target, reference, sample reference, metrics)``: PairScores of the model and of the
        (first) classifier, the classifiers' unanimous scores (None with one), the metrics block.
    """
    from dejavu.analysis.metrics import scores_from_neighbours
    from dejavu.audit.metrics import one_model_metrics

    labels = arrays["labels"].reshape(-1)
    target = scores_from_neighbours(arrays["model_neighb_labels"], labels, arrays["attk_idxs"], k_attk, num_classes)
    reference, sref = _references(arrays, labels, cfg.confidence)
    metrics = one_model_metrics(
        target, reference, num_classes, set_name, n_boot=cfg.n_boot, seed=cfg.seed, sample_reference=sref
    )
    metrics["sample_rule"] = _sample_rule(arrays)
    if sref is not None:  # DejaVuOSS's correlation set: crops every classifier gets right
        metrics["correlation_set"] = {"n": int(np.sum(sref.correct1 == 1)), "share": float(np.mean(sref.correct1))}
    return target, reference, sref, metrics


def _references(arrays: dict[str, np.ndarray], labels: np.ndarray, confidence: str):
    """The first classifier's scores (the population test's reference) and, with several
    classifiers, their :func:`dejavu.audit.metrics.unanimous` (the sample test's; else None)."""
    from dejavu.audit.metrics import classifier_scores, unanimous

    names = ["classifier_logits"] + sorted(
        (k for k in arrays if k.startswith("classifier") and k[len("classifier") : -len("_logits")].isdigit()),
        key=lambda k: int(k[len("classifier") : -len("_logits")]),
    )
    refs = [classifier_scores(arrays[k], labels, arrays["attk_idxs"], confidence) for k in names]
    return refs[0], unanimous(refs) if len(refs) > 1 else None


def _sample_rule(arrays: dict[str, np.ndarray]) -> str:
    n = 1 + sum(1 for k in arrays if k.startswith("classifier") and k[len("classifier") : -len("_logits")].isdigit())
    if n == 1:
        return "classifier right = the crop classifier's top-1 is right"
    return (
        f"classifier right = all {n} crop classifiers (seeds seed..seed+{n - 1}) right, as DejaVuOSS's "
        "correlation set; the population test uses the first"
    )


def _results(
    job: _Job, lab: _Labelled, clf, clf_info: dict[str, Any], counts: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    """The ``results.json`` contents, less the control block."""
    cfg = job.cfg
    cfg_out = {k: v for k, v in asdict(cfg).items() if k not in ("device", "workers", "batch_size")}
    cfg_out.update(lab.resolved)
    return {
        "format": FORMAT,
        "kind": "one-model",
        "config": cfg_out,
        "method": job.lm.config.get("method"),
        "npc": cfg.npc,
        "epoch": job.lm.epoch,
        "sets": {"audit": cfg.audit_set, "classifier_train": clf.config.get("set")},
        "models": {"audited": _model_info(job.lm), "classifier": _model_info(clf)},
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
    target,
    reference,
    num_classes: int,
    k_attk: int,
) -> dict[str, Any] | str | None:
    """The control's files (``control_`` + the audit's names) and ``results.json`` block, or
    the note saying why there is no control."""
    from dejavu.analysis.metrics import scores_from_neighbours
    from dejavu.audit.control import PREFIX, control_block

    if ctrl is None or ctrl.src is None or carrays is None:
        for f in out.glob(f"{PREFIX}*.npy"):  # an earlier audit's control (--force): not this audit's
            f.unlink()
        return ctrl.note if ctrl is not None else None
    labels = carrays["labels"].reshape(-1)
    ct = scores_from_neighbours(carrays["model_neighb_labels"], labels, carrays["attk_idxs"], k_attk, num_classes)
    cr, csref = _references(carrays, labels, cfg.confidence)
    atomic_save_npy(out / f"{PREFIX}crops.npy", ctrl.crops.boxes)
    for name, arr in carrays.items():
        atomic_save_npy(out / f"{PREFIX}{name}.npy", arr)
    return control_block(
        target,
        reference,
        ct,
        cr,
        {"control": ctrl.crops.counts},
        ctrl.src.info,
        num_classes,
        cfg.n_boot,
        cfg.seed,
        c_sample_reference=csref,
    )


def _set_label(name: str) -> str:
    """``bbox_A`` -> ``A`` (the examples.csv ``set`` column); other names as given."""
    return name[-1] if name in ("bbox_A", "bbox_B") else Path(name).stem


def write_examples_csv(path: Path, target, reference, set_name: str) -> Path:
    """``examples.csv`` with the attack's columns: target = the audited model, reference =
    the crop classifier (top-1 correctness and quadrant).

    Args:
        path: the file to write (atomically, replacing one there).
        target: the audited model's KNN scores on the audited crops.
        reference: the classifier's scores on the same crops, in the same order.
        set_name: the ``set`` column (``A`` for ``bbox_A``, see :func:`_set_label`).

    Returns:
        ``path``.
    """
    import csv
    import io

    from dejavu.analysis.metrics import quadrant_labels
    from dejavu.analysis.tables import EXAMPLE_COLUMNS
    from dejavu.io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXAMPLE_COLUMNS)
    q = quadrant_labels(target, reference, 1)
    cols = zip(
        target.index.tolist(),
        target.labels.tolist(),
        target.pred.tolist(),
        reference.pred.tolist(),
        target.conf.tolist(),
        reference.conf.tolist(),
        map(_num, target.correct1),
        map(_num, reference.correct1),
        q.tolist(),
    )
    w.writerows((set_name, *row) for row in cols)
    return atomic_write_text(path, buf.getvalue())


def _num(v: float) -> str:
    """Correctness as the attack writes it: 1/0, or the expectation under a tie (e.g. 0.5)."""
    return f"{float(v):.10g}"


def audit(*args, **kwargs) -> AuditResult:
    """:func:`_audit` without autograd (the classifier's training turns it back on), holding
    the output folder's lock."""
    import torch

    from dejavu.attack import dist

    cfg = kwargs.get("cfg", args[4] if len(args) > 4 else None)
    dist.setup(cfg.device if cfg is not None else None)  # torchrun / SLURM tasks: join the group
    with torch.no_grad():
        res = _audit(*args, **kwargs)
    dist.barrier()  # the other ranks wait for rank 0's files
    return res


audit.__doc__ = (_audit.__doc__ or "") + "\n(Runs without autograd except the classifier's training.)"


def summary_text(res: dict[str, Any]) -> str:
    """The CLI's summary of an audit.

    Args:
        res: an audit's ``results.json`` contents (format ``dejavu-audit/1``).

    Returns:
        Lines joined by newlines: crop counts and the classifier; model and classifier accuracy
        and their gap per top-k and fraction (5/20/100%); the score (top-1, 20%) with its 95% CI;
        the sample test's shares; the held-out control (:func:`dejavu.audit.control.summary_lines`).
    """
    from dejavu.ssl.checkpoint import describe_loaded
    from dejavu.units import pct

    m = res["metrics"]
    c = res["counts"]["audit"]
    ci = m["top1"]["ci95"]["dejavu_score"]
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
    from dejavu.analysis.tables import accuracy_table_lines
    from dejavu.audit.control import memorization_reading, summary_lines
    from dejavu.units import ci95_text, pts

    lines += accuracy_table_lines(m, "model", "clf")
    bound = "control" not in res
    lines.append(
        f"one-model deja vu score (top-1, 20%): {pts(m['top1']['dejavu_score'])}  {ci95_text(ci)}"
        + ("  (an upper bound on memorization: no control)" if bound else "")
    )
    shares = ", ".join(f"{k} {'<= ' if bound and k == 'memorized' else ''}{pct(v)}" for k, v in m["quadrants"].items())
    lines.append(f"sample test{' (no control: memorized is an upper bound)' if bound else ''}: {shares}")
    if "correlation_set" in m:
        lines.append(f"  ({m['sample_rule']}: correlation set {m['correlation_set']['n']} crops)")

    notes = (res.get("memorization") or memorization_reading(res))["notes"]
    return "\n".join(lines + summary_lines(res) + [f"note: {n}" for n in notes])
