"""VICReg (Bardes et al. 2022): invariance + variance + covariance, 25/25/1."""

from __future__ import annotations

from dejavu.ssl.losses import vicreg_loss
from dejavu.ssl.methods.base import Method


class VICReg(Method):
    name = "vicreg"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = vicreg_loss(cfg.vicreg_sim, cfg.vicreg_std, cfg.vicreg_cov)

    def forward(self, model, views, labels, info):
        # Views go through the network separately (BatchNorm statistics per view), as the original.
        z1 = model(views[0])[1]
        z2 = model(views[1])[1]
        loss = self.loss(z1, z2)
        return loss, {}
