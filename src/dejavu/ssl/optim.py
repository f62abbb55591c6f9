"""Optimizers (LARS, SGD, AdamW) and the learning-rate schedule.

LARS is our own, following the VICReg/Barlow Twins reference code (weight decay
added before the trust ratio ``eta * |w| / |g|``, momentum 0.9); neither
torch nor lightly ships it in this form. For every optimizer, 1-D parameters
(biases, BatchNorm) get no weight decay, and for LARS no adaptation either.

Schedule: linear warm-up from 0 over ``warmup_epochs``, then cosine to
``final_lr_ratio * lr``; evaluated per step from the global step counter, which
is all the state a resume needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not g["lars_exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    pn, un = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(pn)
                    q = torch.where(pn > 0, torch.where(un > 0, g["eta"] * pn / un, one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Parameter groups: weights with weight decay, biases and norm parameters (ndim <= 1)
    without (and excluded from LARS adaptation).

    Args:
        modules: the modules whose trainable parameters are optimized (shared ones once).
        weight_decay: decay of the first group.

    Returns:
        One or two groups, each with ``params``, ``weight_decay`` and ``lars_exclude``.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in modules:
        for p in m.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def build_optimizer(cfg, modules: list[nn.Module]) -> torch.optim.Optimizer:
    """The run's optimizer (``lars``, ``sgd`` or AdamW) at ``cfg.effective_lr``.

    Args:
        cfg: the run's :class:`~dejavu.ssl.config.TrainConfig`.
        modules: the modules to optimize (:func:`param_groups`).

    Returns:
        The optimizer.
    """
    groups = param_groups(modules, cfg.weight_decay)
    lr = cfg.effective_lr
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, eta=cfg.lars_eta)
    for g in groups:
        g.pop("lars_exclude")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_ratio: float = 0.001) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``base_lr``, then a half cosine
    down to ``base_lr * final_ratio`` at ``total_steps``.

    Args:
        step: 0-based step.
        total_steps: steps of the whole run.
        warmup_steps: warm-up length (0: none).
        base_lr: the peak learning rate.
        final_ratio: final lr as a fraction of ``base_lr``.

    Returns:
        The learning rate.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    final = base_lr * final_ratio
    return final + (base_lr - final) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group of ``opt``.

    Args:
        opt: the optimizer.
        lr: the learning rate.
    """
    for g in opt.param_groups:
        g["lr"] = lr
