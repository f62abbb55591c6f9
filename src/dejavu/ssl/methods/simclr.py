"""SimCLR (Chen et al. 2020): NT-Xent over the global batch, temperature 0.15."""

from __future__ import annotations

from dejavu.ssl.losses import ntxent_loss
from dejavu.ssl.methods.base import Method


class SimCLR(Method):
    name = "simclr"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = ntxent_loss(cfg.simclr_temperature)

    def forward(self, model, views, labels, info):
        return self.loss(model(views[0])[1], model(views[1])[1]), {}
