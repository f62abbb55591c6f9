"""``TrainConfig``: every setting of an SSL training run, from YAML + ``--set``.

The dataclass defaults are the **synthetic default** (32 px, smallcnn, VICReg,
AdamW at an absolute lr 2e-3, mild augmentation), the setting that makes deja vu
measurable on a CPU. The paper setting lives in ``configs/ssl/<method>.yaml``.

Fields in :data:`RESUME_FREE` may change between a run and its ``--resume``
(they do not change the weights); any other difference is refused by name.

Method hyper-parameters (``vicreg_sim``, ``dino_teacher_temp``, ...) are flat fields, so
stored configs and checkpoints keep loading; each method declares the ones it owns
(``Method.config_keys``) and validates them (``Method.check_config``). They may also be
given nested under the method's name -- ``--set vicreg.sim=30``, ``--set byol.ema_start=0.99``,
or ``dino: {teacher_temp: 0.05}`` in YAML (:meth:`TrainConfig.normalize_keys`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dejavu import DejavuError, UsageError
from dejavu.ssl.registry import METHODS

OPTIMIZERS = ("lars", "sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
AUGMENT_PRESETS = ("paper", "mild", "crop", "none")
DATA_MODES = ("auto", "memory", "loader")
AUGMENT_BACKENDS = ("device", "per_image")
# How the two models of a pair are seeded (issue 28): ``independent`` (default, as the
# original, which seeded nothing): B trains with seed + B_SEED_OFFSET, so initial weights,
# batch order and augmentations differ from A's; ``coupled``: both with ``seed`` (identical
# initial weights and random streams: common random numbers, a variance-reduction design).
DESIGNS = ("independent", "coupled")
B_SEED_OFFSET = 1_000_003

# May differ on --resume: they only change logging, speed or where data is decoded.
# ``threads`` is handled on its own: a resumed run reuses the recorded thread count.
RESUME_FREE = frozenset(
    {"snapshot_every", "knn_every", "knn_k", "num_workers", "data_mode", "channels_last", "threads", "probe_recipe"}
)
PROBE_RECIPES = ("original", "bn-cosine")
# the online monitor and TensorBoard (dejavu.monitor) only log: free on --resume too
RESUME_FREE = RESUME_FREE | {
    "monitor",
    "monitor_every",
    "monitor_crops",
    "monitor_public_per_class",
    "monitor_seed",
    "monitor_audit",
    "monitor_audit_set",
    "monitor_reference",
    "tensorboard",
}
# TrainConfig fields that are also ``dejavu train`` flags (the rest: --set key=value)
TRAIN_FLAGS = ("method", "monitor", "monitor_every", "monitor_crops", "monitor_reference", "tensorboard")


@dataclass
class TrainConfig:
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
    optimizer: str = "adamw"
    weight_decay: float = 1e-5
    momentum: float = 0.9  # sgd / lars
    lars_eta: float = 0.001
    warmup_epochs: int = 5
    final_lr_ratio: float = 0.001  # cosine ends at final_lr_ratio * lr
    clip_grad: float = 0.0  # max grad norm; 0 = off
    augment: str = "mild"  # paper | mild | crop | none (supervised: the preset's view 1)
    # resolution ramp (the original's get_resolution): train at min_res up to epoch start_ramp,
    # max_res from end_ramp, linear between (rounded to a multiple of 32); 0/0 = off (image_size)
    min_res: int = 0
    max_res: int = 0
    start_ramp: int = 70
    end_ramp: int = 85
    zero_init_residual: bool = False  # ResNets: torchvision's default (False), as the original
    threads: int = 0  # torch CPU threads; 0 = DEJAVU_THREADS, else the resumed run's, else OMP_NUM_THREADS/cores
    probe_recipe: str = "bn-cosine"  # default linear-probe recipe for this model (dejavu probe)
    # device: whole batches on the training device (dejavu.ssl.batch_augment; measured
    # 1.3x faster per step on the CPU demo, bench/RESULTS.md); per_image: torchvision per image
    augment_backend: str = "device"
    seed: int = 0  # the pair's seed; the run trains with train_seed(seed, set, design)
    design: str = "independent"  # independent | coupled (DESIGNS; the pair's experimental design)
    snapshot_every: int = 50
    knn_every: int = 10  # 0 = off
    knn_k: int = 20
    num_workers: int = 0
    data_mode: str = "auto"  # auto | memory | loader
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
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
    # method hyper-parameters (a method reads only its own)
    vicreg_sim: float = 25.0
    vicreg_std: float = 25.0
    vicreg_cov: float = 1.0
    simclr_temperature: float = 0.15
    barlow_lambda: float = 0.0051
    ema_start: float = 0.996  # BYOL / DINO teacher momentum, cosine to ema_end
    ema_end: float = 1.0
    byol_hidden: int = 4096
    dino_out_dim: int = 4096
    dino_teacher_temp: float = 0.07
    dino_warmup_teacher_temp: float = 0.04
    dino_warmup_teacher_temp_epochs: int = 50
    dino_student_temp: float = 0.1
    dino_center_momentum: float = 0.9

    @classmethod
    def normalize_keys(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """Nested method keys onto the flat fields: ``{"vicreg": {"sim": 30}}`` ->
        ``{"vicreg_sim": 30}`` (or the bare name, ``byol.ema_start`` -> ``ema_start``). A key
        the method does not own is the user's mistake, reported with the keys it owns.

        Args:
            d: a config mapping as read (YAML or ``--set``).
            source: where ``d`` came from, named in errors.

        Returns:
            ``d`` with each method's nested keys flattened (other keys unchanged).

        Raises:
            UsageError: a nested key the method does not own.
        """
        from dejavu.ssl.registry import get_method

        out = {k: v for k, v in d.items() if not (k in METHODS and isinstance(v, dict))}
        for m, sub in d.items():
            if m not in METHODS or not isinstance(sub, dict):
                continue
            owned = get_method(m).config_keys
            for k, v in sub.items():
                flat = next((f for f in (f"{m}_{k}", k) if f in owned), None)
                if flat is None:
                    short = [f[len(m) + 1 :] if f.startswith(m + "_") else f for f in owned]
                    raise UsageError(
                        f"{source}: unknown key {m}.{k}; method {m} takes "
                        + (", ".join(f"{m}.{x}" for x in short) or "no keys of its own")
                    )
                out[flat] = v
        return out

    def validate(self) -> None:
        from dejavu.ssl.backbones import BACKBONES
        from dejavu.ssl.heads import parse_spec
        from dejavu.ssl.registry import get_method

        def bad(field: str, why: str) -> DejavuError:
            return DejavuError(f"config {field}={getattr(self, field)!r}: {why}")

        if self.method not in METHODS:
            raise bad("method", f"unknown; choose from {', '.join(METHODS)}")
        if self.arch not in BACKBONES:
            raise bad("arch", f"unknown; choose from {', '.join(BACKBONES)}")
        if self.projector not in ("", "none"):
            parse_spec(self.projector)
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("amp", AMP_MODES),
            ("augment", AUGMENT_PRESETS),
            ("data_mode", DATA_MODES),
            ("augment_backend", AUGMENT_BACKENDS),
            ("design", DESIGNS),
        ):
            if getattr(self, name) not in choices:
                raise bad(name, f"choose from {', '.join(choices)}")
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
        if self.probe_recipe not in PROBE_RECIPES:
            raise bad("probe_recipe", f"choose from {', '.join(PROBE_RECIPES)}")
        if (self.min_res > 0) != (self.max_res > 0) or self.min_res > self.max_res:
            raise DejavuError(
                f"config min_res={self.min_res}, max_res={self.max_res}: set both (min <= max) "
                "for a resolution ramp, or neither"
            )
        if self.start_ramp > self.end_ramp:
            raise bad("start_ramp", f"after end_ramp={self.end_ramp}")
        get_method(self.method).check_config(self)  # the method's own keys

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
    for runs written before issue 28): equal = ``coupled``, different = ``independent``,
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
        saved: the config stored in the checkpoint (a dict).
        cfg: the config of the resumed run.

    Returns:
        ``"key (saved X, now Y)"`` per differing field; fields in :data:`RESUME_FREE` and fields
        absent from ``saved`` are not compared. Empty when the run may resume.
    """
    now = cfg.to_dict()
    out = []
    for k, v in now.items():
        if k in RESUME_FREE:
            continue
        if k in saved and saved[k] != v:
            out.append(f"{k} (saved {saved[k]!r}, now {v!r})")
    return out


def _config_path(path: Any, method: str | None) -> Any:
    """``--config`` as a path (a packaged name resolved), default ``<method>_synth``; a
    ``--method`` that contradicts the file's is refused."""
    from dejavu.config import packaged_config, read_yaml, resolve_config

    path = (
        resolve_config(path, "ssl") if path is not None else packaged_config("ssl", f"{method or 'vicreg'}_synth.yaml")
    )
    if method is not None:
        file_method = read_yaml(path).get("method")
        if file_method and file_method != method:
            raise UsageError(f"{path}: config is for method {file_method!r} but --method {method} was given")
    return path


def load_train_config(path: Any = None, sets: list[str] | None = None, method: str | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file and ``key=value`` overrides (the library path of
    :func:`train_config_from_args`).

    Args:
        path: a YAML file or a packaged name (``vicreg``, ``vicreg_synth``, ...); default
            ``<method>_synth``.
        sets: ``key=value`` overrides (nested method keys as ``vicreg.sim=30``).
        method: the training method; must agree with the file's.

    Returns:
        The validated config.
    """
    from dejavu.config import load_config

    path = _config_path(path, method)
    return load_config(TrainConfig, path, sets, base={"method": method} if method else None)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of ``dejavu train``: ``--config`` (default ``<--method>_synth``), ``--method``,
    ``--set`` (see :func:`dejavu.config.config_from_args`)."""
    from dejavu.config import config_from_args

    method = getattr(args, "method", None)
    args = argparse.Namespace(**{**vars(args), "config": str(_config_path(args.config, method))})
    return config_from_args(TrainConfig, args, flags=TRAIN_FLAGS, kind="ssl")
