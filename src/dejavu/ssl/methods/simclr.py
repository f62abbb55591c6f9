"""SimCLR (Chen et al. 2020): NT-Xent over the global batch, temperature 0.15."""

from __future__ import annotations

from dejavu.ssl.losses import ntxent_loss
from dejavu.ssl.methods.base import Method, joint_forward


class SimCLR(Method):
    name = "simclr"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.loss = ntxent_loss(cfg.simclr_temperature)

    def forward(self, model, views, labels, info):
        z1, z2 = joint_forward(lambda x: model(x)[1], views)  # both views in one batch, as the original
        return self.loss(z1, z2), {}
