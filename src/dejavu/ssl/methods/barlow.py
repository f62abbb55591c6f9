"""Barlow Twins (Zbontar et al. 2021): cross-correlation to identity, lambda 0.0051."""

from __future__ import annotations

from dejavu.ssl.losses import BarlowTwinsLoss
from dejavu.ssl.methods.base import Method


class BarlowTwins(Method):
    name = "barlow"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = BarlowTwinsLoss(cfg.barlow_lambda)

    def forward(self, model, views, labels, info):
        return self.loss(model(views[0])[1], model(views[1])[1]), {}
