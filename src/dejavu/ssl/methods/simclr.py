"""SimCLR (Chen et al. 2020): NT-Xent over the global batch, temperature 0.15."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import ntxent_loss
from dejavu.ssl.methods.base import Method, StepInfo, check_nonnegative, joint_forward
from dejavu.ssl.model import SSLModel


@dataclass
class SimCLRSettings:
    temperature: float = field(default=0.15, metadata={"help": "NT-Xent temperature"})

    def validate(self) -> None:
        check_nonnegative(self, "simclr")


class SimCLR(Method):
    name = "simclr"
    Settings = SimCLRSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        s: SimCLRSettings = cfg.method_settings
        self.loss = ntxent_loss(s.temperature)

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Args:
            model: the SSL model.
            views: the two views.
            labels: unused.
            info: unused.

        Returns:
            ``(NT-Xent loss, {})``.
        """
        z1, z2 = joint_forward(lambda x: model(x)[1], views)  # both views in one batch, as the original
        return self.loss(z1, z2), {}
