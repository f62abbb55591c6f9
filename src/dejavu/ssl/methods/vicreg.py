"""VICReg (Bardes et al. 2022): invariance + variance + covariance, 25/25/1."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import vicreg_loss
from dejavu.ssl.methods.base import Method, StepInfo, check_nonnegative, joint_forward
from dejavu.ssl.model import SSLModel


@dataclass
class VICRegSettings:
    sim: float = field(default=25.0, metadata={"help": "weight of the invariance (MSE) term"})
    std: float = field(default=25.0, metadata={"help": "weight of the variance term"})
    cov: float = field(default=1.0, metadata={"help": "weight of the covariance term"})

    def validate(self) -> None:
        check_nonnegative(self, "vicreg")


class VICReg(Method):
    name = "vicreg"
    Settings = VICRegSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        s: VICRegSettings = cfg.method_settings
        self.loss = vicreg_loss(s.sim, s.std, s.cov)

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Args:
            model: the SSL model.
            views: the two views.
            labels: unused.
            info: unused.

        Returns:
            ``(VICReg loss, {})``.
        """
        z1, z2 = joint_forward(lambda x: model(x)[1], views)  # both views in one batch, as the original
        return self.loss(z1, z2), {}
