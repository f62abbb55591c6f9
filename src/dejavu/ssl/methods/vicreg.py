"""VICReg (Bardes et al. 2022): invariance + variance + covariance, 25/25/1."""

from __future__ import annotations

from dejavu.ssl.losses import vicreg_loss
from dejavu.ssl.methods.base import Method, joint_forward


class VICReg(Method):
    name = "vicreg"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = vicreg_loss(cfg.vicreg_sim, cfg.vicreg_std, cfg.vicreg_cov)

    def forward(self, model, views, labels, info):
        z1, z2 = joint_forward(lambda x: model(x)[1], views)  # both views in one batch, as the original
        return self.loss(z1, z2), {}
