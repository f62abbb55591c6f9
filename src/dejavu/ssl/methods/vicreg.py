"""VICReg (Bardes et al. 2022): invariance + variance + covariance, 25/25/1."""

from __future__ import annotations

import torch

from dejavu.ssl.config import TrainConfig
from dejavu.ssl.losses import vicreg_loss
from dejavu.ssl.methods.base import Method, StepInfo, joint_forward
from dejavu.ssl.model import SSLModel


class VICReg(Method):
    name = "vicreg"
    config_keys = ("vicreg_sim", "vicreg_std", "vicreg_cov")

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__(model, cfg)
        self.loss = vicreg_loss(cfg.vicreg_sim, cfg.vicreg_std, cfg.vicreg_cov)

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
