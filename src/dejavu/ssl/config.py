"""``TrainConfig``: every setting of an SSL training run, from YAML + ``--set``.

The dataclass defaults are the **synthetic default** (32 px, smallcnn, VICReg,
AdamW at an absolute lr 2e-3, mild augmentation), the setting that makes deja vu
measurable on a CPU. The paper setting lives in ``configs/ssl/<method>.yaml``.

Fields in :data:`RESUME_FREE` may change between a run and its ``--resume``
(they do not change the weights); any other difference is refused by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dejavu import DejavuError

OPTIMIZERS = ("lars", "sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
AUGMENT_PRESETS = ("paper", "mild", "crop", "none")
DATA_MODES = ("auto", "memory", "loader")
AUGMENT_BACKENDS = ("device", "per_image")

# May differ on --resume: they only change logging, speed or where data is decoded.
# ``threads`` is handled on its own: a resumed run reuses the recorded thread count.
RESUME_FREE = frozenset({"snapshot_every", "knn_every", "knn_k", "num_workers", "data_mode", "channels_last",
                         "threads", "probe_recipe"})
PROBE_RECIPES = ("original", "bn-cosine")


@dataclass
class TrainConfig:
    method: str = "vicreg"
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
    seed: int = 0
    snapshot_every: int = 50
    knn_every: int = 10  # 0 = off
    knn_k: int = 20
    num_workers: int = 0
    data_mode: str = "auto"  # auto | memory | loader
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    channels_last: bool = True  # CUDA only
    num_classes: int = 0  # supervised: 0 = number of classes of the dataset
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

    def validate(self) -> None:
        from dejavu.ssl.backbones import BACKBONES
        from dejavu.ssl.heads import parse_spec
        from dejavu.ssl.registry import METHODS

        def bad(field: str, why: str) -> DejavuError:
            return DejavuError(f"config {field}={getattr(self, field)!r}: {why}")

        if self.method not in METHODS:
            raise bad("method", f"unknown; choose from {', '.join(METHODS)}")
        if self.arch not in BACKBONES:
            raise bad("arch", f"unknown; choose from {', '.join(BACKBONES)}")
        if self.projector not in ("", "none"):
            parse_spec(self.projector)
        for name, choices in (("optimizer", OPTIMIZERS), ("amp", AMP_MODES), ("augment", AUGMENT_PRESETS),
                              ("data_mode", DATA_MODES), ("augment_backend", AUGMENT_BACKENDS)):
            if getattr(self, name) not in choices:
                raise bad(name, f"choose from {', '.join(choices)}")
        for name in ("epochs", "batch_size", "image_size", "snapshot_every", "knn_k"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("knn_every", "num_workers", "warmup_epochs", "num_classes", "clip_grad", "weight_decay",
                     "min_res", "max_res", "start_ramp", "end_ramp", "threads", "dino_warmup_teacher_temp_epochs"):
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
        if not 0 <= self.ema_start <= self.ema_end <= 1:
            raise DejavuError(f"config ema_start={self.ema_start}, ema_end={self.ema_end}: need 0 <= start <= end <= 1")
        if self.probe_recipe not in PROBE_RECIPES:
            raise bad("probe_recipe", f"choose from {', '.join(PROBE_RECIPES)}")
        if (self.min_res > 0) != (self.max_res > 0) or self.min_res > self.max_res:
            raise DejavuError(f"config min_res={self.min_res}, max_res={self.max_res}: set both (min <= max) "
                              "for a resolution ramp, or neither")
        if self.start_ramp > self.end_ramp:
            raise bad("start_ramp", f"after end_ramp={self.end_ramp}")
        if self.method == "dino" and self.projector in ("", "none"):
            raise bad("projector", "dino needs a projector (its bottleneck feeds the prototypes)")

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


def resume_mismatch(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields that differ between a saved config and ``cfg`` and would change the weights."""
    now = cfg.to_dict()
    out = []
    for k, v in now.items():
        if k in RESUME_FREE:
            continue
        if k in saved and saved[k] != v:
            out.append(f"{k} (saved {saved[k]!r}, now {v!r})")
    return out


def load_train_config(path=None, sets: list[str] | None = None, method: str | None = None) -> TrainConfig:
    """YAML file (or packaged name like ``vicreg_synth``) + ``--set`` overrides; ``method``
    from the command line must agree with the file's."""
    from pathlib import Path

    from dejavu.config import load_config, packaged_config, read_yaml

    if path is not None and not Path(path).exists() and not str(path).endswith((".yaml", ".yml")):
        cand = packaged_config("ssl", f"{path}.yaml")
        if cand.is_file():
            path = cand
    if path is None:
        path = packaged_config("ssl", f"{method or 'vicreg'}_synth.yaml")
    base: dict[str, Any] = {}
    if method is not None:
        file_method = read_yaml(path).get("method")
        if file_method and file_method != method:
            raise DejavuError(f"{path}: config is for method {file_method!r} but --method {method} was given")
        base["method"] = method
    return load_config(TrainConfig, path, sets, base=base)
