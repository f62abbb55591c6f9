"""DINO (Caron et al. 2021) with two global views (no multi-crop).

Student = backbone -> projector (the MLP whose last layer is DINO's bottleneck) ->
L2-normalise -> prototypes (a linear layer with unit-norm rows, i.e. DINO's
weight-normalised last layer with its gain frozen at 1). The teacher is an EMA copy
(0.996 -> 1 along a cosine, ending at 1 at the final step; the original deja vu run
passed a wrong final momentum). Teacher outputs are centred (EMA of the global batch
mean, saved as the ``loss.center`` buffer in ``extra``) and sharpened (teacher
temperature warmed up 0.04 -> 0.07 over the first 50 epochs, as the original);
student temperature 0.1. Both views go through student and teacher as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dejavu import DejavuError
from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import DINOLoss
from dejavu.ssl.methods.base import (
    Method,
    StepInfo,
    check_ema,
    check_nonnegative,
    cosine_momentum,
    ema_update,
    joint_forward,
    make_teacher,
)
from dejavu.ssl.model import SSLModel


def teacher_temp_at(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """Teacher temperature of 0-based ``epoch``: linear warm-up as ``np.linspace`` over
    ``warmup_epochs`` points (the original's ``teacher_temp_schedule``), then ``temp``.

    Args:
        epoch: 0-based epoch.
        warmup_temp: temperature at epoch 0.
        temp: temperature after the warm-up.
        warmup_epochs: warm-up length (0: none).

    Returns:
        The temperature.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        if warmup_epochs == 1:
            return warmup_temp
        return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)
    return temp


class Prototypes(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(z, dim=-1), F.normalize(self.weight, dim=-1))


@dataclass
class DINOSettings:
    out_dim: int = field(default=1024, metadata={"help": "number of prototypes"})
    teacher_temp: float = field(default=0.07, metadata={"help": "teacher temperature after the warm-up"})
    warmup_teacher_temp: float = field(default=0.04, metadata={"help": "teacher temperature at epoch 0"})
    warmup_teacher_temp_epochs: int = field(default=50, metadata={"help": "teacher temperature warm-up epochs"})
    student_temp: float = field(default=0.1, metadata={"help": "student temperature"})
    center_momentum: float = field(default=0.9, metadata={"help": "EMA momentum of the teacher's center"})
    ema_start: float = field(default=0.996, metadata={"help": "teacher momentum at the start (cosine to ema_end)"})
    ema_end: float = field(default=1.0, metadata={"help": "teacher momentum at the last step"})

    def validate(self) -> None:
        check_nonnegative(self, "dino")
        check_ema(self.ema_start, self.ema_end, "dino")


class DINO(Method):
    name = "dino"
    Settings = DINOSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.settings: DINOSettings = cfg.method_settings
        s = self.settings
        self.prototypes = Prototypes(model.embed_dim, s.out_dim)
        self.teacher = make_teacher(model.backbone, model.projector, self.prototypes)
        self.loss = DINOLoss(s.out_dim, s.student_temp, s.center_momentum)

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        if cfg.projector in ("", "none"):
            raise DejavuError(
                f"config projector={cfg.projector!r}: dino needs a projector (its bottleneck feeds the prototypes)"
            )

    def teacher_temp(self, epoch: int) -> float:
        """The original's schedule: ``linspace(warmup_temp, temp, W)[epoch]`` for the first
        W epochs (0-based; epoch W-1 reaches ``temp``), then ``temp``."""
        s = self.settings
        return teacher_temp_at(epoch, s.warmup_teacher_temp, s.teacher_temp, s.warmup_teacher_temp_epochs)

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher[2](self.teacher[1](self.teacher[0](x)))

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        # both views as one batch through student and teacher, as the original
        """Args:
            model: the SSL model (student backbone and projector).
            views: the views.
            labels: unused.
            info: the epoch (teacher temperature).

        Returns:
            ``(DINO loss, {"teacher_temp": ...})``.
        """
        student = joint_forward(lambda x: self.prototypes(model(x)[1]), views)
        with torch.no_grad():
            teacher = joint_forward(self._teacher, views)
        tt = self.teacher_temp(info.epoch)
        return self.loss(student, teacher, tt), {"teacher_temp": tt}

    def after_step(self, model: SSLModel, info: StepInfo) -> None:
        """EMA update of the teacher (backbone, projector, prototypes).

        Args:
            model: the SSL model, already stepped.
            info: the step just taken.
        """
        m = cosine_momentum(self.settings.ema_start, self.settings.ema_end, (info.step + 1) / max(1, info.total_steps))
        ema_update(self.teacher, [model.backbone, model.projector, self.prototypes], m)
