"""``TrainConfig``: every setting of an SSL training run, from YAML + ``--set``.

The dataclass defaults are the **synthetic default** (32 px, smallcnn, VICReg,
AdamW at an absolute lr 2e-3, mild augmentation), the setting that makes deja vu
measurable on a CPU. The paper setting lives in ``configs/ssl/<method>.yaml`` (each a few
lines over ``configs/ssl/base/paper.yaml``).

Fields in :data:`RESUME_FREE` may change between a run and its ``--resume``
(they do not change the weights); any other difference is refused by name.

Each method's own settings are a section named after it, a dataclass owned by the method
module (``Method.Settings``) and checked by it: ``vicreg: {sim: 30}`` in YAML, ``--set
vicreg.sim=30``. The flat keys of configs written before the sections (``vicreg_sim``,
``ema_start``, ...) are still read (:data:`FLAT_METHOD_KEYS`), from files, ``--set`` and the
configs stored in checkpoints.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dejavu import DejavuError, UsageError
from dejavu.config import (
    check_choices,
    config_from_args,
    from_dict,
    load_config,
    merge_into,
    packaged_config,
    read_yaml,
    resolve_config,
)
from dejavu.ssl.registry import METHODS, get_method

OPTIMIZERS = ("lars", "sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
AUGMENT_PRESETS = ("paper", "mild", "crop", "none")
DATA_MODES = ("auto", "memory", "loader")
AUGMENT_BACKENDS = ("device", "per_image")
# How the two models of a pair are seeded: ``independent`` (default, as the original, which
# seeded nothing): B trains with seed + B_SEED_OFFSET, so initial weights, batch order and
# augmentations differ from A's; ``coupled``: both with ``seed`` (identical initial weights
# and random streams: common random numbers, a variance-reduction design).
DESIGNS = ("independent", "coupled")
B_SEED_OFFSET = 1_000_003
PROBE_RECIPES = ("original", "bn-cosine")

# May differ on --resume: they only change logging, speed or where data is decoded.
# ``threads`` is handled on its own: a resumed run reuses the recorded thread count.
# The online monitor and TensorBoard (dejavu.monitor) only log: free on --resume too.
RESUME_FREE = frozenset(
    {"snapshot_every", "knn_every", "knn_k", "num_workers", "data_mode", "channels_last", "threads", "probe_recipe"}
    | {"monitor", "monitor_every", "monitor_crops", "monitor_public_per_class", "monitor_seed", "monitor_audit"}
    | {"monitor_audit_set", "monitor_reference", "tensorboard"}
)
# TrainConfig fields that are also ``dejavu train`` flags (the rest: --set key=value)
TRAIN_FLAGS = ("method", "monitor", "monitor_every", "monitor_crops", "monitor_reference", "tensorboard")

# The flat method keys of configs written before the method sections -> their place in the
# sections (``ema_start`` was shared by BYOL and DINO). Read for one format version.
FLAT_METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "vicreg_sim": ("vicreg.sim",),
    "vicreg_std": ("vicreg.std",),
    "vicreg_cov": ("vicreg.cov",),
    "simclr_temperature": ("simclr.temperature",),
    "barlow_lambda": ("barlow.lambd",),
    "byol_hidden": ("byol.hidden",),
    "ema_start": ("byol.ema_start", "dino.ema_start"),
    "ema_end": ("byol.ema_end", "dino.ema_end"),
    "dino_out_dim": ("dino.out_dim",),
    "dino_teacher_temp": ("dino.teacher_temp",),
    "dino_warmup_teacher_temp": ("dino.warmup_teacher_temp",),
    "dino_warmup_teacher_temp_epochs": ("dino.warmup_teacher_temp_epochs",),
    "dino_student_temp": ("dino.student_temp",),
    "dino_center_momentum": ("dino.center_momentum",),
}

T = TypeVar("T")


def settings_class(method: str) -> type:
    """The settings dataclass of a registered method (its module imported now)."""
    return get_method(method).Settings


def _default_settings(method: str) -> Any:
    return settings_class(method)()


def _method_sections(cls: type[T]) -> type[T]:
    """Give ``cls`` one field per registered method, named after it, holding the method's
    settings (``Method.Settings``): a new method needs no line here. The settings classes
    are imported when a config is built, so the CLI's ``--help`` imports no method."""
    for name in METHODS:
        cls.__annotations__[name] = "Any"
        meta = {"help": f"{name}'s own settings ({name}.KEY=VALUE)"}
        setattr(cls, name, field(default_factory=partial(_default_settings, name), metadata=meta))
    return cls


@dataclass
@_method_sections
class TrainConfig:
    """Every setting of one training run; one section per method (``vicreg``, ``dino``, ...)
    is added from the registry."""

    method: str = field(
        default="vicreg",
        metadata={"choices": tuple(METHODS), "help": "training method (given with --config, it must be the file's)"},
    )
    arch: str = "smallcnn"
    projector: str = "1024-1024"
    image_size: int = 32
    epochs: int = 300
    batch_size: int = 100
    lr: float = 2e-3  # base lr; effective = lr * batch_size / 256 unless absolute_lr
    absolute_lr: bool = True
    optimizer: str = field(default="adamw", metadata={"choices": OPTIMIZERS})
    weight_decay: float = 1e-5
    momentum: float = 0.9  # sgd / lars
    lars_eta: float = 0.001
    warmup_epochs: int = 5
    final_lr_ratio: float = 0.001  # cosine ends at final_lr_ratio * lr
    clip_grad: float = 0.0  # max grad norm; 0 = off
    augment: str = field(default="mild", metadata={"choices": AUGMENT_PRESETS})  # supervised: the preset's view 1
    # resolution ramp (the original's get_resolution): train at min_res up to epoch start_ramp,
    # max_res from end_ramp, linear between (rounded to a multiple of 32); 0/0 = off (image_size)
    min_res: int = 0
    max_res: int = 0
    start_ramp: int = 70
    end_ramp: int = 85
    zero_init_residual: bool = False  # ResNets: torchvision's default (False), as the original
    threads: int = 0  # torch CPU threads; 0 = DEJAVU_THREADS, else the resumed run's, else OMP_NUM_THREADS/cores
    # the default linear-probe recipe for this model (dejavu probe)
    probe_recipe: str = field(default="bn-cosine", metadata={"choices": PROBE_RECIPES})
    # device: whole batches on the training device (dejavu.ssl.batch_augment; measured
    # 1.3x faster per step on the CPU demo, bench/RESULTS.md); per_image: torchvision per image
    augment_backend: str = field(default="device", metadata={"choices": AUGMENT_BACKENDS})
    seed: int = 0  # the pair's seed; the run trains with train_seed(seed, set, design)
    # the pair's experimental design (see DESIGNS)
    design: str = field(default="independent", metadata={"choices": DESIGNS})
    snapshot_every: int = 50
    knn_every: int = 10  # 0 = off
    knn_k: int = 20
    num_workers: int = 0
    data_mode: str = field(default="auto", metadata={"choices": DATA_MODES})
    amp: str = field(default="none", metadata={"choices": AMP_MODES})  # CUDA only
    channels_last: bool = True  # CUDA only
    num_classes: int = 0  # supervised: 0 = number of classes of the dataset
    # the online deja vu monitor (dejavu.monitor) and TensorBoard: off by default, logging only
    monitor: bool = field(
        default=False,
        metadata={"help": "score the one-model deja vu test while training (metrics.jsonl monitor_*; OUT/monitor/)"},
    )
    monitor_every: int = field(
        default=0, metadata={"help": "epochs between two monitor scores, and the last epoch (0: epochs // 10)"}
    )
    monitor_crops: int = field(default=500, metadata={"help": "audited images the monitor scores (0: all)"})
    monitor_public_per_class: int = 50  # public images per class the monitor's KNN searches (0: all)
    monitor_seed: int = 0  # seed of the monitor's subsample
    monitor_audit: str = "synth"  # the monitor's audit config: a packaged name (synth, imagenet) or a YAML file
    monitor_audit_set: list[str] = field(default_factory=list)  # its key=value overrides, e.g. k=20,clf_epochs=30
    monitor_reference: str = field(
        default="",
        metadata={
            "help": "a crop classifier for the monitor (e.g. an audit's classifier/classifier.pth); "
            "default: trained once into OUT/monitor/classifier"
        },
    )
    tensorboard: bool = field(
        default=False, metadata={"help": "also write TensorBoard scalars to OUT/tb (the tensorboard extra)"}
    )

    def __post_init__(self) -> None:
        # a section given as a mapping (e.g. ``TrainConfig(**cfg.to_dict())``): the method's dataclass
        for name in METHODS:
            value, cls = getattr(self, name), settings_class(name)
            if isinstance(value, dict):
                setattr(self, name, from_dict(cls, value, source=f"section {name}"))
            elif not isinstance(value, cls):
                raise UsageError(f"config {name}={value!r}: expected the method's settings, e.g. {name}.KEY=VALUE")

    @property
    def method_settings(self) -> Any:
        """The section of the method being trained (its ``Method.Settings``)."""
        return getattr(self, self.method)

    @classmethod
    def normalize_keys(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """Old flat method keys moved into their sections (:data:`FLAT_METHOD_KEYS`), and each
        section's keys checked against the method's settings.

        Args:
            d: a config mapping as read (YAML, ``--set`` or a checkpoint's stored config).
            source: where ``d`` came from, named in errors.

        Returns:
            ``d`` with flat method keys nested (other keys unchanged; a nested value wins).

        Raises:
            UsageError: a section key the method's settings do not have, named with the method's keys.
        """

        out: dict[str, Any] = {}
        for k, v in d.items():
            for dotted in FLAT_METHOD_KEYS.get(k, ()):
                m, key = dotted.split(".")
                merge_into(out, {m: {key: v}})
        merge_into(out, {k: v for k, v in d.items() if k not in FLAT_METHOD_KEYS})
        for m, sub in out.items():
            if m in METHODS and isinstance(sub, dict):
                owned = [f.name for f in fields(settings_class(m))]
                unknown = [k for k in sub if k not in owned]
                if unknown:
                    raise UsageError(
                        f"{source}: unknown key {m}.{unknown[0]}; method {m} takes "
                        + (", ".join(f"{m}.{x}" for x in owned) or "no keys of its own")
                    )
        return out

    def validate(self) -> None:
        from dejavu.ssl.backbones import BACKBONES
        from dejavu.ssl.heads import parse_spec

        def bad(field: str, why: str) -> DejavuError:
            return DejavuError(f"config {field}={getattr(self, field)!r}: {why}")

        check_choices(self)
        if self.arch not in BACKBONES:
            raise bad("arch", f"unknown; choose from {', '.join(BACKBONES)}")
        if self.projector not in ("", "none"):
            parse_spec(self.projector)
        for name in ("epochs", "batch_size", "image_size", "snapshot_every", "knn_k"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in (
            "knn_every",
            "num_workers",
            "warmup_epochs",
            "num_classes",
            "clip_grad",
            "weight_decay",
            "min_res",
            "max_res",
            "start_ramp",
            "end_ramp",
            "threads",
            "monitor_every",
            "monitor_crops",
            "monitor_public_per_class",
        ):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.batch_size < 2:
            raise bad("batch_size", "must be >= 2 (batch statistics)")
        if self.warmup_epochs > self.epochs:
            raise bad("warmup_epochs", f"longer than epochs={self.epochs}")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not 0 <= self.final_lr_ratio <= 1:
            raise bad("final_lr_ratio", "must be in [0, 1]")
        if (self.min_res > 0) != (self.max_res > 0) or self.min_res > self.max_res:
            raise DejavuError(
                f"config min_res={self.min_res}, max_res={self.max_res}: set both (min <= max) "
                "for a resolution ramp, or neither"
            )
        if self.start_ramp > self.end_ramp:
            raise bad("start_ramp", f"after end_ramp={self.end_ramp}")
        get_method(self.method).check_config(self)  # what the method needs of the rest

    def resolution(self, epoch: int) -> int:
        """Training resolution of 0-based ``epoch`` (the original's ``get_resolution``, its
        result kept within [min_res, max_res]); ``image_size`` when the ramp is off."""
        if self.min_res <= 0:
            return self.image_size
        if epoch <= self.start_ramp:
            return self.min_res
        if epoch >= self.end_ramp:
            return self.max_res
        interp = np.interp([epoch], [self.start_ramp, self.end_ramp], [self.min_res, self.max_res])[0]
        return int(min(self.max_res, max(self.min_res, int(np.round(interp / 32)) * 32)))

    @property
    def effective_lr(self) -> float:
        return self.lr if self.absolute_lr else self.lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_seed(seed: int, side: str | None, design: str = "independent") -> int:
    """The seed a run of a pair trains with (initial weights, batch order, augmentations).

    Args:
        seed: the pair's seed (``TrainConfig.seed``).
        side: ``"A"`` or ``"B"`` (from the index file name ``train_<A|B>.npy``; None: neither).
        design: ``independent`` (B trains with ``seed + B_SEED_OFFSET``, A with ``seed``) or
            ``coupled`` (both with ``seed``).

    Returns:
        The run's training seed.
    """
    if design not in DESIGNS:
        raise UsageError(f"design {design!r}: choose independent or coupled")
    return int(seed) + B_SEED_OFFSET if design == "independent" and side == "B" else int(seed)


def pair_design(cfg_a: dict[str, Any], cfg_b: dict[str, Any]) -> dict[str, Any]:
    """How a target/reference pair was trained, from the two runs' stored configs.

    ``design`` is read from the seeds the runs trained with (``train_seed``, else ``seed``
    for runs that did not record it): equal = ``coupled``, different = ``independent``,
    ``unknown`` when either is missing (e.g. released checkpoints).

    Args:
        cfg_a: model A's stored config. cfg_b: model B's.

    Returns:
        ``{"design", "train_seeds": {"A", "B"}, "declared": {"A", "B"}}``.
    """
    seeds = {y: c.get("train_seed", c.get("seed")) for y, c in (("A", cfg_a), ("B", cfg_b))}
    a, b = seeds["A"], seeds["B"]
    design = "unknown" if a is None or b is None else "coupled" if int(a) == int(b) else "independent"
    return {"design": design, "train_seeds": seeds, "declared": {"A": cfg_a.get("design"), "B": cfg_b.get("design")}}


def resume_mismatch(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields that differ between a saved config and ``cfg`` and would change the weights.

    Args:
        saved: the config stored in the checkpoint (a dict; flat method keys of older runs
            are read into their sections).
        cfg: the config of the resumed run.

    Returns:
        ``"key (saved X, now Y)"`` per differing field (``vicreg.sim`` for a setting of the
        method trained; other methods' sections are not compared); fields in
        :data:`RESUME_FREE` and fields absent from ``saved`` are not compared. Empty when
        the run may resume.
    """
    saved = TrainConfig.normalize_keys(saved, "the checkpoint's config")
    now = cfg.to_dict()
    compared = [(k, saved[k], v) for k, v in now.items() if k not in METHODS and k not in RESUME_FREE and k in saved]
    section = saved.get(cfg.method)
    if isinstance(section, dict):
        compared += [(f"{cfg.method}.{k}", section[k], v) for k, v in now[cfg.method].items() if k in section]
    return [f"{k} (saved {a!r}, now {b!r})" for k, a, b in compared if a != b]


def _config_source(path: Any, method: str | None) -> tuple[Path | None, dict[str, Any]]:
    """``--config`` as a YAML path and the defaults under it. ``<method>_synth`` (the default)
    is the synthetic setting: the dataclass defaults with that method, plus the packaged
    ``<method>_synth.yaml`` where the method has one. A ``--method`` that contradicts the
    file's is refused.

    Returns:
        ``(path or None, {"method": ...} or {})``.
    """

    name = str(path) if path is not None else f"{method or 'vicreg'}_synth"
    synth = name.removesuffix("_synth") if name.endswith("_synth") and not Path(name).is_file() else None
    if synth in METHODS:
        file = packaged_config("ssl", f"{name}.yaml")
        found: Path | None = file if file.is_file() else None
        file_method: str | None = synth
    else:
        found = resolve_config(path, "ssl", also=tuple(f"{m}_synth" for m in METHODS))
        file_method = read_yaml(found).get("method") if found is not None and method is not None else None
    if method is not None and file_method and file_method != method:
        raise UsageError(f"{found or name}: config is for method {file_method!r} but --method {method} was given")
    return found, {"method": method or file_method} if (method or file_method) else {}


def load_train_config(path: Any = None, sets: list[str] | None = None, method: str | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file and ``key=value`` overrides (the library path of
    :func:`train_config_from_args`).

    Args:
        path: a YAML file or a packaged name (``vicreg``, ``vicreg_synth``, ...); default
            ``<method>_synth``.
        sets: ``key=value`` overrides (method settings as ``vicreg.sim=30``).
        method: the training method; must agree with the file's.

    Returns:
        The validated config.
    """

    found, base = _config_source(path, method)
    return load_config(TrainConfig, found, sets, base=base)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of ``dejavu train``: ``--config`` (default ``<--method>_synth``), ``--method``,
    ``--set`` (see :func:`dejavu.config.config_from_args`)."""

    found, base = _config_source(args.config, getattr(args, "method", None))
    args = argparse.Namespace(**{**vars(args), "config": str(found) if found else None})
    return config_from_args(TrainConfig, args, flags=TRAIN_FLAGS, kind="ssl", base=base)
