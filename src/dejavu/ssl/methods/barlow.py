"""Barlow Twins (Zbontar et al. 2021): cross-correlation to identity, lambda 0.0051."""

from __future__ import annotations

from dejavu.ssl.losses import BarlowTwinsLoss
from dejavu.ssl.methods.base import Method, joint_forward


class BarlowTwins(Method):
    name = "barlow"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = BarlowTwinsLoss(cfg.barlow_lambda)

    def forward(self, model, views, labels, info):
        # one batch through the network, as the original; each view is standardised on its own
        z1, z2 = joint_forward(lambda x: model(x)[1], views)
        return self.loss(z1, z2), {}
