"""SSL losses, each computed over the *global* batch under DDP (as the paper's code did).

Which implementation and why:

* VICReg and SimCLR (NT-Xent): lightly's ``VICRegLoss`` / ``NTXentLoss`` with
  ``gather_distributed=True``. Their gather (``lightly.utils.dist.GatherLayer``)
  all-reduces gradients in backward, the same semantics as the original VICReg
  ``FullGatherLayer``; the VICReg formula (var eps 1e-4, centred covariance / (N-1),
  off-diagonal squares / D) is the original's. Verified to import offline (~1.3 s).
* Barlow Twins: our own. lightly's version normalises each rank's *local* batch
  before all-reducing the cross-correlation, so a 2-GPU run differs from a
  1-GPU run on the same global batch; we gather the embeddings first (with
  gradient) and normalise over the global batch, which matches one process exactly.
* BYOL (normalised MSE) and DINO (centred, sharpened teacher cross-entropy): our
  own, a few lines each; DINO's center is a buffer of the method (saved in the
  checkpoint) and is updated with the all-reduced batch mean.

The tests compare every loss with an independent formula on tiny tensors.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks; gradients flow back to each rank's part."""
    if world_size() == 1:
        return x
    from lightly.utils.dist import gather

    return torch.cat(gather(x), dim=0)


def vicreg_loss(sim: float = 25.0, std: float = 25.0, cov: float = 1.0) -> nn.Module:
    """VICReg's loss (lightly's ``VICRegLoss``, gathered over processes).

    Args:
        sim: weight of the invariance (MSE) term.
        std: weight of the variance term.
        cov: weight of the covariance term.

    Returns:
        The loss module, called as ``loss(z1, z2)``.
    """
    from lightly.loss import VICRegLoss

    return VICRegLoss(lambda_param=sim, mu_param=std, nu_param=cov, gather_distributed=True)


def ntxent_loss(temperature: float = 0.15) -> nn.Module:
    from lightly.loss import NTXentLoss

    return NTXentLoss(temperature=temperature, gather_distributed=True)


class BarlowTwinsLoss(nn.Module):
    """sum_i (1 - C_ii)^2 + lambda * sum_{i!=j} C_ij^2, with C the cross-correlation of the
    batch-standardised embeddings over the global batch (biased std, eps 1e-5 as BatchNorm)."""

    def __init__(self, lambd: float = 0.0051, eps: float = 1e-5):
        super().__init__()
        self.lambd = lambd
        self.eps = eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Args:
            z1: (n, d) embeddings of view 1 on this process.
            z2: (n, d) embeddings of view 2.

        Returns:
            The scalar loss over the global batch.
        """
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        n = z1.shape[0]
        z1 = F.batch_norm(z1, None, None, training=True, eps=self.eps)
        z2 = F.batch_norm(z2, None, None, training=True, eps=self.eps)
        c = z1.T @ z2 / n
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on + self.lambd * off


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), averaged over the batch (z from the teacher, no gradient).

    Args:
        p: (n, d) the student's predictions for one view.
        z: (n, d) the teacher's projections of the other view.

    Returns:
        The scalar loss.
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student, over all
    pairs of different views; the center is an EMA of the teacher's global-batch mean."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float) -> torch.Tensor:
        """Args:
            student: (n, K) prototype scores of each view (student).
            teacher: (n, K) prototype scores of each view (teacher); pairs of the same view
                index are skipped.
            teacher_temp: the teacher's temperature at this epoch.

        Returns:
            The mean cross-entropy over the pairs; in training mode the center is updated.
        """
        t = [F.softmax((x.detach() - self.center) / teacher_temp, dim=-1) for x in teacher]
        s = [F.log_softmax(x / self.student_temp, dim=-1) for x in student]
        terms = [(-ti * sj).sum(dim=-1).mean() for i, ti in enumerate(t) for j, sj in enumerate(s) if i != j]
        if self.training:
            self.update_center(torch.cat(teacher).detach())
        return sum(terms[1:], terms[0]) / len(terms)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        s = teacher.sum(dim=0, keepdim=True)
        cnt = torch.tensor(float(teacher.shape[0]), device=teacher.device)
        if world_size() > 1:
            dist.all_reduce(s)
            dist.all_reduce(cnt)
        self.center.mul_(self.center_momentum).add_(s / cnt, alpha=1 - self.center_momentum)
