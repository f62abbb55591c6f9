"""The interface every method implements.

A method is an ``nn.Module`` holding what the method adds to the shared
:class:`~dejavu.ssl.model.SSLModel` (BYOL predictor and EMA teacher, DINO
prototypes, teacher and center, loss modules). Its ``state_dict`` is saved under
``extra`` in checkpoints. Trainable method parameters are optimised with the model's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dejavu import DejavuError
from dejavu.ssl.model import SSLModel

if TYPE_CHECKING:
    from dejavu.ssl.config import TrainConfig


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
    at the last step (the original DINO run passed a wrong final value; we do not).

    Args:
        start: momentum at progress 0.
        end: momentum at progress 1.
        progress: fraction of training done (clamped to [0, 1]).

    Returns:
        The momentum.
    """
    return end - (end - start) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


@dataclass
class NoSettings:
    """The settings of a method that has none of its own."""


def check_nonnegative(settings: Any, section: str) -> None:
    """Raise :class:`dejavu.DejavuError` naming the first negative number of ``settings``.

    Args:
        settings: a method's settings (a dataclass).
        section: its name in the config (the method's name), e.g. ``vicreg``.
    """
    for f in fields(settings):
        v = getattr(settings, f.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise DejavuError(f"config {section}.{f.name}={v!r}: must be >= 0")


class Method(nn.Module):
    """A training method: its loss, what it adds to the model, and its own settings.

    ``Settings`` is a dataclass of the method's hyper-parameters (solo-learn's per-method
    kwargs): :class:`~dejavu.ssl.config.TrainConfig` holds one under the method's name
    (``vicreg: {sim: 25, ...}`` in YAML, ``--set vicreg.sim=30``), built and checked by the
    dataclass's ``validate()`` when the config is read. :meth:`check_config` checks what the
    method needs of the rest of the config.
    """

    name = ""
    num_views = 2
    needs_classifier = False  # True: the model gets a classifier head over num_classes (0: the dataset's)
    Settings: type = NoSettings

    def __init__(self, model: SSLModel, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:
        """Raise :class:`dejavu.DejavuError` naming a setting outside the method's section that
        the method cannot train with (none by default)."""

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """The method's loss on one batch.

        Args:
            model: the shared SSL model (student).
            views: ``num_views`` augmented batches, (n, 3, S, S) each.
            labels: (n,) int64 class labels (used by the supervised method only).
            info: the step, total steps and epoch.

        Returns:
            ``(loss, logs)``: the scalar loss and values to log (floats, or 0-d tensors so that
            the step does not wait for the device).
        """
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, model: SSLModel, info: StepInfo) -> None:
        """Called after each optimizer step (EMA teachers).

        Args:
            model: the shared SSL model, already stepped.
            info: the step just taken.
        """


def check_ema(start: float, end: float, section: str) -> None:
    """An EMA teacher's momentum: ``0 <= start <= end <= 1``."""
    if not 0 <= start <= end <= 1:
        raise DejavuError(f"config {section}.ema_start={start}, {section}.ema_end={end}: need 0 <= start <= end <= 1")


def joint_forward(net: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> list[torch.Tensor]:
    """``net`` applied to the views concatenated into ONE batch (the original's
    ``images_big``), split back per view: BatchNorm statistics span all views.

    Args:
        net: maps a batch to outputs of the same leading size.
        views: the views, equal batch sizes.

    Returns:
        One output per view.
    """
    return list(net(torch.cat(views)).chunk(len(views)))


def make_teacher(*modules: nn.Module) -> nn.ModuleList:
    t = nn.ModuleList([copy.deepcopy(m) for m in modules])
    for p in t.parameters():
        p.requires_grad_(False)
    return t


@torch.no_grad()
def ema_update(teacher: nn.ModuleList, students: list[nn.Module], momentum: float) -> None:
    """params: t = m*t + (1-m)*s; buffers (BN running stats) are copied.

    Args:
        teacher: the teacher copies (:func:`make_teacher`), in the order of ``students``.
        students: the modules the teacher follows.
        momentum: ``m`` in [0, 1].
    """
    for t, s in zip(teacher, students):
        for pt, ps in zip(t.parameters(), s.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)
        for bt, bs in zip(t.buffers(), s.buffers()):
            bt.copy_(bs)
