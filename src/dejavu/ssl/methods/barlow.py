"""Barlow Twins (Zbontar et al. 2021): cross-correlation to identity, lambda 0.0051."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import BarlowTwinsLoss
from dejavu.ssl.methods.base import Method, StepInfo, check_nonnegative, joint_forward
from dejavu.ssl.model import SSLModel


@dataclass
class BarlowSettings:
    lambd: float = field(default=0.0051, metadata={"help": "weight of the off-diagonal (redundancy) term"})

    def validate(self) -> None:
        check_nonnegative(self, "barlow")


class BarlowTwins(Method):
    name = "barlow"
    Settings = BarlowSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        s: BarlowSettings = cfg.method_settings
        self.loss = BarlowTwinsLoss(s.lambd)

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        # one batch through the network, as the original; each view is standardised on its own
        """Args:
            model: the SSL model.
            views: the two views.
            labels: unused.
            info: unused.

        Returns:
            ``(Barlow Twins loss, {})``.
        """
        z1, z2 = joint_forward(lambda x: model(x)[1], views)
        return self.loss(z1, z2), {}
