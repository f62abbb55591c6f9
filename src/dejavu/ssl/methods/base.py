"""The interface every method implements.

A method is an ``nn.Module`` holding what the method adds to the shared
:class:`~dejavu.ssl.model.SSLModel` (BYOL predictor and EMA teacher, DINO
prototypes, teacher and center, loss modules). Its ``state_dict`` is saved under
``extra`` in checkpoints. Trainable method parameters are optimised with the model's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from dejavu.ssl.model import SSLModel


@dataclass
class StepInfo:
    step: int  # global optimisation step (0-based)
    total_steps: int
    epoch: int  # 0-based epoch being trained
    warmup_steps: int = 0

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total_steps)


def cosine_momentum(start: float, end: float, progress: float) -> float:
    """Teacher EMA momentum: ``start`` -> ``end`` along a half cosine, reaching ``end``
    at the last step (the original DINO run passed a wrong final value; we do not)."""
    return end - (end - start) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


class Method(nn.Module):
    name = ""
    num_views = 2
    view_kind = "ssl"  # "ssl": two asymmetric views; "supervised": one view
    needs_labels = False

    def __init__(self, model: SSLModel, cfg):
        super().__init__()
        self.cfg = cfg

    def forward(self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor,
                info: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, model: SSLModel, info: StepInfo) -> None:
        """Called after each optimizer step (EMA teachers)."""


def joint_forward(net, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """``net`` applied to the views concatenated into ONE batch (the original's
    ``images_big``), split back per view: BatchNorm statistics span all views."""
    return list(net(torch.cat(views)).chunk(len(views)))


def make_teacher(*modules: nn.Module) -> nn.ModuleList:
    t = nn.ModuleList([copy.deepcopy(m) for m in modules])
    for p in t.parameters():
        p.requires_grad_(False)
    return t


@torch.no_grad()
def ema_update(teacher: nn.ModuleList, students: list[nn.Module], momentum: float) -> None:
    """params: t = m*t + (1-m)*s; buffers (BN running stats) are copied."""
    for t, s in zip(teacher, students):
        for pt, ps in zip(t.parameters(), s.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
        for bt, bs in zip(t.buffers(), s.buffers()):
            bt.copy_(bs)
