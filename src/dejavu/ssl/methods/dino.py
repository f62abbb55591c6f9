"""DINO (Caron et al. 2021) with two global views (no multi-crop).

Student = backbone -> projector (the MLP whose last layer is DINO's bottleneck) ->
L2-normalise -> prototypes (a linear layer with unit-norm rows, i.e. DINO's
weight-normalised last layer with its gain frozen at 1). The teacher is an EMA copy
(0.996 -> 1 along a cosine, ending at 1 at the final step; the original deja vu run
passed a wrong final momentum). Teacher outputs are centred (EMA of the global batch
mean, saved as the ``loss.center`` buffer in ``extra``) and sharpened (teacher
temperature 0.04, optional linear warm-up); student temperature 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dejavu.ssl.losses import DINOLoss
from dejavu.ssl.methods.base import Method, cosine_momentum, ema_update, make_teacher


class Prototypes(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(z, dim=-1), F.normalize(self.weight, dim=-1))


class DINO(Method):
    name = "dino"

    def __init__(self, model, cfg):
        super().__init__(model, cfg)
        self.prototypes = Prototypes(model.embed_dim, cfg.dino_out_dim)
        self.teacher = make_teacher(model.backbone, model.projector, self.prototypes)
        self.loss = DINOLoss(cfg.dino_out_dim, cfg.dino_student_temp, cfg.dino_center_momentum)

    def teacher_temp(self, epoch: int) -> float:
        w = self.cfg.dino_warmup_teacher_temp_epochs
        if w > 0 and epoch < w:
            a = epoch / w
            return (1 - a) * self.cfg.dino_warmup_teacher_temp + a * self.cfg.dino_teacher_temp
        return self.cfg.dino_teacher_temp

    def forward(self, model, views, labels, info):
        student = [self.prototypes(model(v)[1]) for v in views]
        with torch.no_grad():
            teacher = [self.teacher[2](self.teacher[1](self.teacher[0](v))) for v in views]
        tt = self.teacher_temp(info.epoch)
        return self.loss(student, teacher, tt), {"teacher_temp": tt}

    def after_step(self, model, info):
        m = cosine_momentum(self.cfg.ema_start, self.cfg.ema_end, (info.step + 1) / max(1, info.total_steps))
        ema_update(self.teacher, [model.backbone, model.projector, self.prototypes], m)
