"""The déjà vu attack (DESIGN 2.3-2.4): crops, embeddings, KNN, files, metrics.

``attack(...)`` attacks one snapshot pair (model A trained on set A, model B on set B)
and writes one attack folder (docs/CONTRACTS.md "Attack folder"); ``attack_runs(...)``
attacks every ``model_ep{E}.pth`` present in two run folders, one ``ep{E}/`` each.

Order of work (each image decoded once per attack):
1. dataset index, partition and checkpoint fingerprints checked against each other;
2. crops of bbox_A and bbox_B computed from the annotations and image headers, in a
   background thread while 3. runs (an error there stops 3. at its next batch);
3. public embeddings of both models (cached on disk, see :mod:`dejavu.attack.embed`);
4. crops of each set decoded once and embedded by BOTH models;
5. exact KNN for the four arrays X_attk_Y; files; metrics (:mod:`dejavu.analysis`).
``results.json`` is written last: its presence marks a complete attack folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError, UsageError, formats
from dejavu.analysis.metrics import Comparison, two_model
from dejavu.analysis.significance import control_block, primary_endpoint
from dejavu.analysis.summary import compute_all
from dejavu.analysis.tables import scores_from_arrays, write_conf_sweeps, write_examples_csv
from dejavu.attack import dist
from dejavu.attack.config import AttackConfig, recorded_config
from dejavu.attack.control import attack_control, resolve_control
from dejavu.attack.crops import SetCrops, compute_crops, resolve_min_crop_px
from dejavu.attack.dist import is_main
from dejavu.attack.embed import embed_cache_dir, public_embeddings, resolved_precision
from dejavu.attack.search import AttackContext, CropDatasets, search_sets
from dejavu.data.imagefolder import DataPaths, DatasetIndex, scan_imagefolder
from dejavu.data.transforms import describe_eval_transform, eval_transform
from dejavu.device import choose_device
from dejavu.io import atomic_save_npy, atomic_write_json, check_can_write, locks_output
from dejavu.partition import Partition
from dejavu.ssl.checkpoint import LoadedModel, check_pair, load_model
from dejavu.ssl.config import pair_design

FORMAT = formats.ATTACK


@dataclass
class AttackResult:
    out: Path
    results: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.results["metrics"]


def _default_device() -> str:
    return str(choose_device(None, dist.current().local_rank))  # torchrun: each rank its GPU


def model_info(lm: LoadedModel, loaded: bool = False) -> dict[str, Any]:
    """A checkpoint as ``results.json`` records it (attack and audit): path, hash, epoch,
    layout and training config; with ``loaded`` also what was loaded (the audit's record)."""
    info = {"path": str(lm.path), "sha256": lm.sha256, "epoch": lm.epoch, "source": lm.source, "config": lm.config}
    return {**info, "loaded": lm.loaded} if loaded and lm.loaded else info


def _check_model(lm, index: DatasetIndex, expected_set: str, npc: int) -> None:
    lm.check_dataset(index)
    s = lm.config.get("set")
    if s is not None and str(s) != expected_set:
        raise DejavuError(
            f"{lm.path}: trained on set {s} but passed as model {expected_set} (swap --model-a/--model-b)"
        )
    n = lm.config.get("npc")
    if n is not None and int(n) != int(npc):
        raise DejavuError(f"{lm.path}: trained with npc={n} but the attack uses --npc {npc}")


@dist.stage(lambda a: (a["cfg"] or AttackConfig()).device)  # torchrun / SLURM tasks: join the group
@locks_output("attack", folder_of=dist.main_rank_out)  # the whole attack: two writers never mix arrays and results.json
def attack(
    model_a: str | os.PathLike,
    model_b: str | os.PathLike,
    partition: str | os.PathLike,
    paths: DataPaths,
    out: str | os.PathLike,
    cfg: AttackConfig | None = None,
    *,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    index: DatasetIndex | None = None,
    control: str | os.PathLike = "auto",
    control_bboxes: str | os.PathLike | None = None,
    crop_datasets: CropDatasets | None = None,
) -> AttackResult:
    """Attack one snapshot pair and write ``out`` (see the module docstring), without autograd.

    Args:
        model_a: the checkpoint of the model trained on set A.
        model_b: the checkpoint of the model trained on set B.
        partition: the partition folder (or a loaded :class:`~dejavu.partition.Partition`).
        paths: the dataset's images and boxes.
        out: the attack folder.
        cfg: the attack's settings (default :class:`AttackConfig`).
        force: overwrite an existing attack.
        cache_dir: the public-embedding cache (None: ``out/../.embed_cache``; ``""``: off).
        index: the scanned dataset, if already at hand.
        control: the held-out control (:mod:`dejavu.attack.control`): ``"auto"`` (the
            partition's when it has one), ``"none"``, ``"partition"``, or a folder of annotated
            validation images (boxes in ``control_bboxes``).
        control_bboxes: box folder of a validation-image control.
        crop_datasets: the crops of sets A and B read from a store instead of decoded; given
            exactly when ``cfg.crops_betons`` is set (``dejavu.ffcv.betons.crop_datasets(cfg)``).

    Returns:
        The :class:`AttackResult` (on the other ranks of a torchrun: an empty one).

    Raises:
        UsageError: ``cfg.crops_betons`` without ``crop_datasets``, or the other way round.
    """
    cfg = cfg or AttackConfig()
    st = _setup(model_a, model_b, partition, paths, out, cfg, force, index, crop_datasets)
    csrc = resolve_control(control, st.part, st.index, paths, control_bboxes)
    # 1) crops (headers + XML only) beside 2) the public embeddings (cached)
    fut = _in_background(lambda: {y: _set_crops(st, y) for y in "AB"}, "dejavu-crops")
    try:
        pub_emb, cached = _public_embeddings(st, cache_dir, poll=lambda: _raise_if_failed(fut))
    except Exception:  # let the crops thread end first: one killed at exit aborted the process (-6)
        with contextlib.suppress(BaseException):
            fut.exception(timeout=120)
        raise
    crops = fut.result()
    arrays = _attack_sets(st, crops, pub_emb, crop_datasets)  # 3) crops embedded, 4) KNN
    control_arrays = _control_arrays(st, csrc, pub_emb)
    if not is_main():  # torchrun: the other ranks' part ends with the last search
        return AttackResult(st.out, {}, {})
    metrics, comps = _write_arrays_and_score(st, crops, arrays)
    control_res = _attack_control(st, csrc, control_arrays, comps)
    results = _results(st, crops, cached, metrics, None, False)
    if control_res is not None:
        results["control"] = control_res
    results["primary_endpoint"] = primary_endpoint(results)  # named; every other number is secondary
    atomic_write_json(st.out / "results.json", results)  # last: its presence marks a complete folder
    return AttackResult(st.out, results, results["counts"])


def _in_background(fn: Callable[[], Any], name: str) -> Future:
    """``fn()`` in a daemon thread (not joined on an error or Ctrl-C elsewhere); its
    outcome in the returned future."""
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn())
        except BaseException as e:  # handed to the future's reader
            fut.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


def _raise_if_failed(fut: Future) -> None:
    if fut.done() and (e := fut.exception()) is not None:
        raise e


def _setup(
    model_a,
    model_b,
    partition,
    paths: DataPaths,
    out,
    cfg: AttackConfig,
    force: bool,
    index: DatasetIndex | None,
    crop_datasets: CropDatasets | None,
) -> AttackContext:
    """Checks (settings, existing output, partition, checkpoints) and everything loaded once."""
    cfg.validate()
    if bool(cfg.crops_betons) != (crop_datasets is not None):
        raise UsageError(
            "AttackConfig.crops_betons and attack(crop_datasets=...) go together: pass "
            "crop_datasets=dejavu.ffcv.betons.crop_datasets(cfg), as dejavu attack does"
        )
    out = Path(out)
    if (out / "results.json").exists() and not force:
        raise DejavuError(f"{out}: an attack already exists here; pass --force to overwrite")
    _check_attack_folder(out, force)
    index = index or scan_imagefolder(paths.images)
    part = Partition.load(partition)
    part.check(index)
    if cfg.npc not in part.npcs:
        raise DejavuError(f"{part.root}: no {cfg.npc}_per_class split (have {part.npcs}); check --npc")
    part.check_attack_sets(cfg.npc)
    lms = _load_models(model_a, model_b, cfg, index)
    for y in "AB":  # the models' training sets are the partition's (hash recorded by dejavu train)
        lms[y].check_trained_on(part.load_set(cfg.npc, f"train_{y}"), f"{part.root}/{cfg.npc}_per_class/train_{y}.npy")
    image_size = int(cfg.image_size or lms["A"].config.get("image_size") or lms["B"].config.get("image_size") or 224)
    min_px = resolve_min_crop_px(cfg.min_crop_px, paths.images)
    public = index.check_indices(part.attack_public(), f"{part.root}/{part.manifest['attack_public']}")
    if len(np.unique(index.targets[public])) < 2:  # every neighbour votes for the one class
        raise DejavuError(
            f"{part.root}: the public set holds images of one class only: every label guess is right "
            "and the deja vu score measures nothing; a dataset of 2 or more classes is needed"
        )
    if cfg.k > len(public):  # before any work: the KNN cannot store k neighbours
        raise DejavuError(
            f"--k {cfg.k} exceeds the {len(public)} images of the public set; pass --k {len(public)} or less"
        )
    return AttackContext(
        cfg,
        out,
        cfg.device or _default_device(),
        paths,
        index,
        part,
        lms,
        image_size,
        min_px,
        eval_transform(image_size),
        describe_eval_transform(image_size),
        public,
        index.targets[public],
    )


def _load_models(model_a, model_b, cfg: AttackConfig, index: DatasetIndex) -> dict[str, LoadedModel]:
    lms = {}
    for name, p in (("A", model_a), ("B", model_b)):
        lm = load_model(p, arch=cfg.arch, projector=cfg.projector, image_size=cfg.image_size)
        _check_model(lm, index, name, cfg.npc)
        lms[name] = lm
    for w in check_pair(lms["A"], lms["B"]):
        print(f"dejavu: warning: {w}", file=sys.stderr)
    if cfg.embed == "logits" and any(lm.model.classifier is None for lm in lms.values()):
        raise DejavuError(f"--embed logits needs supervised checkpoints with a classifier head ({model_a}, {model_b})")
    return lms


def _set_crops(st: AttackContext, y: str) -> SetCrops:
    cfg, index = st.cfg, st.index
    bbox = index.check_indices(
        st.part.load_set(cfg.npc, f"bbox_{y}"), f"{st.part.root}/{cfg.npc}_per_class/bbox_{y}.npy"
    )
    return compute_crops(index, st.paths.annotation_dir, bbox, cfg, st.min_px, desc=f"crops {y}", what=f"set {y}")


def _public_embeddings(st: AttackContext, cache_dir, poll=None) -> tuple[list[np.ndarray], list[bool]]:
    """Both models' public embeddings (cached on disk); none for the logits variant.
    ``poll``: called after each batch (:func:`dejavu.attack.embed.embed_dataset`)."""
    if st.cfg.embed == "logits":
        return [], [False, False]
    cdir = embed_cache_dir(cache_dir, st.out)
    lms = [st.lms[n] for n in "AB"]
    return public_embeddings(lms, st.index, st.public, st.transform, st.tdesc, st.cfg, st.device, cdir, poll)


def _attack_sets(
    st: AttackContext, crops: dict[str, SetCrops], pub_emb: list[np.ndarray], crop_datasets: CropDatasets | None
) -> dict[str, dict[str, np.ndarray]]:
    datasets = None
    if crop_datasets is not None:  # the same crops, stored (e.g. in betons)
        datasets = {y: crop_datasets(y, crops[y].indices, crops[y].boxes, st.transform) for y in "AB"}
    return search_sets(st, crops, pub_emb, datasets)


def _write_arrays_and_score(st: AttackContext, crops, arrays) -> tuple[dict[str, Any], list[Comparison]]:
    """The original's files, the confidence sweeps and examples.csv; returns (metrics, comparisons)."""
    out = st.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out / "public_idxs.npy", st.public)
    atomic_save_npy(out / "public_labels.npy", st.public_labels)
    for y in "AB":
        atomic_save_npy(out / f"crops_{y}.npy", crops[y].boxes)
    for name, a in arrays.items():
        for key, arr in a.items():
            atomic_save_npy(out / f"{name}_{key}.npy", arr)
    comps = _comparisons(st, arrays)
    metrics = compute_all(comps, st.num_classes, n_boot=st.cfg.n_boot, seed=st.cfg.seed)
    write_conf_sweeps(out, metrics)
    write_examples_csv(out / "examples.csv", comps)
    return metrics, comps


def _comparisons(st: AttackContext, arrays: dict[str, dict[str, np.ndarray]]) -> list[Comparison]:
    """The two-model test's comparisons of the four ``X_attk_Y`` arrays."""
    return two_model({name: scores_from_arrays(a, st.cfg.k_attk, st.num_classes) for name, a in arrays.items()})


def _control_arrays(st: AttackContext, csrc, pub_emb) -> tuple[dict, dict] | None:
    """The held-out control's arrays and crop counts, with the same models and public
    embeddings (:mod:`dejavu.attack.control`); None without a control."""
    return None if csrc is None else attack_control(csrc, st, pub_emb)


def _attack_control(st: AttackContext, csrc, control, comps: list[Comparison]) -> dict[str, Any] | None:
    """The held-out control's block of results.json (``control``: :func:`_control_arrays`)."""
    if csrc is None or control is None:
        return None
    carrays, ccounts = control
    ccomps = _comparisons(st, carrays)
    return control_block(comps, ccomps, ccounts, csrc.info, st.num_classes, st.cfg.n_boot, st.cfg.seed)


def _results(st: AttackContext, crops, cached, metrics, label: str | None, override: bool) -> dict[str, Any]:
    resolved = {"image_size": st.image_size, "min_crop_px": st.min_px, "transform": st.tdesc, "device": st.device}
    resolved["forward_precision"] = resolved_precision(st.device, st.cfg.precision)
    counts: dict[str, Any] = {y: crops[y].counts for y in "AB"}
    counts["public"] = int(len(st.public))
    return {
        "format": FORMAT,
        "config": recorded_config(st.cfg, resolved),
        "method": st.lms["A"].config.get("method"),
        "npc": st.cfg.npc,
        "epoch": st.lms["A"].epoch,
        "models": {n: model_info(st.lms[n]) for n in "AB"},
        "design": pair_design(st.lms["A"].config, st.lms["B"].config),
        "fingerprint": st.index.fingerprint.to_dict(),
        "partition": str(st.part.root),
        "label": label,
        "sets_override": override,
        "counts": counts,
        "annotation_error_examples": {y: crops[y].errors[:20] for y in "AB"},
        "embed_cache": {"hit": {"A": bool(cached[0]), "B": bool(cached[1])}},
        "num_classes": st.num_classes,
        "metrics": metrics,
    }


def _check_attack_folder(out: Path, force: bool) -> None:
    """A folder without results.json that holds only attack files is an interrupted attack:
    rerun into it (every file is rewritten atomically). With ``force``, results.json goes
    first, so no reader ever pairs the old results.json with new arrays."""
    if force:
        (out / "results.json").unlink(missing_ok=True)
        return
    if out.is_dir():
        other = [
            p.name
            for p in out.iterdir()
            if p.suffix not in (".npy", ".csv") and p.name != "slurm" and not p.name.startswith(".")
        ]
        if other:
            check_can_write(out, force=False)


_EP = re.compile(r"^model_ep(\d+)\.pth$")


def snapshot_epochs(run: Path) -> dict[int, Path]:
    return {int(m.group(1)): run / f for f in os.listdir(run) if (m := _EP.match(f))}


def attack_runs(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike,
    partition,
    paths: DataPaths,
    out: str | os.PathLike,
    cfg: AttackConfig | None = None,
    force: bool = False,
    skip_existing: bool = False,
    cache_dir: str | os.PathLike | None = None,
    epochs: list[int] | None = None,
    control: str | os.PathLike = "auto",
    control_bboxes: str | os.PathLike | None = None,
    crop_datasets: CropDatasets | None = None,
) -> list[AttackResult]:
    """Attack every ``model_ep{E}.pth`` present in both run folders into ``out/ep{E}/``.

    Args:
        run_a: the run folder of the model trained on set A.
        run_b: the run folder of the model trained on set B.
        partition: the partition folder (or a loaded :class:`~dejavu.partition.Partition`).
        paths: the dataset's images and boxes.
        out: the folder receiving one ``ep{E}/`` per snapshot.
        cfg: the attack's settings (default :class:`AttackConfig`).
        force: overwrite existing ``ep{E}/`` folders.
        skip_existing: leave finished ``ep{E}/`` folders as they are.
        cache_dir: the public-embedding cache (None: ``out/../.embed_cache``; ``""``: off).
        epochs: only these snapshots (default: every one present in both).
        control: the held-out control (see :func:`attack`).
        control_bboxes: box folder of a validation-image control.
        crop_datasets: the crops read from a store (see :func:`attack`).

    Returns:
        One :class:`AttackResult` per snapshot attacked, in epoch order.

    Raises:
        DejavuError: no common snapshot, or a requested epoch missing from a run.
    """
    run_a, run_b, out = Path(run_a), Path(run_b), Path(out)
    ea, eb = snapshot_epochs(run_a), snapshot_epochs(run_b)
    common = sorted(set(ea) & set(eb))
    if epochs:
        missing = sorted(set(epochs) - set(common))
        if missing:
            raise DejavuError(f"epochs {missing} not present in both {run_a} and {run_b} (common: {common})")
        common = sorted(set(epochs))
    if not common:
        raise DejavuError(
            f"{run_a} and {run_b}: no model_ep{{E}}.pth present in both (A has {sorted(ea)}, B has {sorted(eb)})"
        )
    index = scan_imagefolder(paths.images)
    results = []
    for e in common:
        dest = out / f"ep{e}"
        if (dest / "results.json").exists() and skip_existing and not force:
            continue
        results.append(
            attack(
                ea[e],
                eb[e],
                partition,
                paths,
                dest,
                cfg,
                force=force,
                cache_dir=cache_dir,
                index=index,
                control=control,
                control_bboxes=control_bboxes,
                crop_datasets=crop_datasets,
            )
        )
    return results
