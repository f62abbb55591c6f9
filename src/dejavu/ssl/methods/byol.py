"""BYOL (Grill et al. 2020): online predictor onto an EMA teacher (0.996 -> 1, cosine).

The teacher copies backbone + projector at initialisation; its parameters follow
the EMA and its BatchNorm buffers are copied from the student. The predictor is
lightly's ``BYOLPredictionHead`` (Linear-BN-ReLU-Linear). As the original, the two
views go through the student, its predictor and the teacher as ONE batch each
(BatchNorm statistics span both views).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import byol_loss
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


@dataclass
class BYOLSettings:
    hidden: int = field(default=1024, metadata={"help": "hidden width of the predictor"})
    ema_start: float = field(default=0.996, metadata={"help": "teacher momentum at the start (cosine to ema_end)"})
    ema_end: float = field(default=1.0, metadata={"help": "teacher momentum at the last step"})

    def validate(self) -> None:
        check_nonnegative(self, "byol")
        check_ema(self.ema_start, self.ema_end, "byol")


class BYOL(Method):
    name = "byol"
    Settings = BYOLSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        from lightly.models.modules import BYOLPredictionHead

        self.settings: BYOLSettings = cfg.method_settings
        d = model.embed_dim
        self.predictor = BYOLPredictionHead(d, self.settings.hidden, d)
        self.teacher = make_teacher(model.backbone, model.projector)

    def _teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher[1](self.teacher[0](x))

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Args:
            model: the SSL model (online network).
            views: the two views.
            labels: unused.
            info: the step (for the logged momentum).

        Returns:
            ``(symmetrized BYOL loss, {"momentum": ...})``.
        """
        p1, p2 = joint_forward(lambda x: self.predictor(model(x)[1]), views)
        with torch.no_grad():
            t1, t2 = joint_forward(self._teacher, views)
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return loss, {"momentum": self.momentum(info)}

    def momentum(self, info: StepInfo) -> float:
        """The EMA momentum applied after this step (what :meth:`after_step` uses)."""
        return cosine_momentum(
            self.settings.ema_start, self.settings.ema_end, (info.step + 1) / max(1, info.total_steps)
        )

    def after_step(self, model: SSLModel, info: StepInfo) -> None:
        # info.step is the step just taken; momentum for it, reaching ema_end at the last step
        """EMA update of the teacher (backbone and projector) at this step's momentum.

        Args:
            model: the SSL model, already stepped.
            info: the step just taken.
        """
        ema_update(self.teacher, [model.backbone, model.projector], self.momentum(info))
