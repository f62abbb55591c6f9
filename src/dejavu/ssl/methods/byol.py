"""BYOL (Grill et al. 2020): online predictor onto an EMA teacher (0.996 -> 1, cosine).

The teacher copies backbone + projector at initialisation; its parameters follow
the EMA and its BatchNorm buffers are copied from the student. The predictor is
lightly's ``BYOLPredictionHead`` (Linear-BN-ReLU-Linear). As the original, the two
views go through the student, its predictor and the teacher as ONE batch each
(BatchNorm statistics span both views).
"""

from __future__ import annotations

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import byol_loss
from dejavu.ssl.methods.base import (
    Method,
    StepInfo,
    check_ema,
    cosine_momentum,
    ema_update,
    joint_forward,
    make_teacher,
)
from dejavu.ssl.model import SSLModel


class BYOL(Method):
    name = "byol"
    config_keys = ("byol_hidden", "ema_start", "ema_end")

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        from lightly.models.modules import BYOLPredictionHead

        d = model.embed_dim
        self.predictor = BYOLPredictionHead(d, cfg.byol_hidden, d)
        self.teacher = make_teacher(model.backbone, model.projector)

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        super().check_config(cfg)
        check_ema(cfg)

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
        return cosine_momentum(self.cfg.ema_start, self.cfg.ema_end, (info.step + 1) / max(1, info.total_steps))

    def after_step(self, model: SSLModel, info: StepInfo) -> None:
        # info.step is the step just taken; momentum for it, reaching ema_end at the last step
        """EMA update of the teacher (backbone and projector) at this step's momentum.

        Args:
            model: the SSL model, already stepped.
            info: the step just taken.
        """
        ema_update(self.teacher, [model.backbone, model.projector], self.momentum(info))
