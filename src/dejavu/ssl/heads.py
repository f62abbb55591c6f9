"""Projector heads, in the original code's spec-string form (``"8192-8192-8192"``).

The layer layout ``[Linear-BN-ReLU] x (n-1) + Linear(no bias)`` and its
``nn.Sequential`` indices match VICReg's/the original deja vu code, so
``projector.0.weight``... keys of their checkpoints load unchanged.
"""

from __future__ import annotations

from torch import nn

from dejavu import DejavuError


def parse_spec(spec: str) -> list[int]:
    try:
        dims = [int(x) for x in str(spec).split("-") if x.strip()]
    except ValueError:
        raise DejavuError(f"projector spec {spec!r}: expected dims like '8192-8192-8192'") from None
    if not dims or min(dims) < 1:
        raise DejavuError(f"projector spec {spec!r}: expected positive dims like '8192-8192-8192'")
    return dims


def build_projector(in_dim: int, spec: str) -> tuple[nn.Module, int]:
    """``spec`` lists the output widths; ``""`` or ``"none"`` gives the identity."""
    if spec in ("", "none", None):
        return nn.Identity(), in_dim
    dims = [in_dim] + parse_spec(spec)
    layers: list[nn.Module] = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers), dims[-1]


def build_classifier(in_dim: int, num_classes: int) -> nn.Module:
    """Supervised baseline head on the projector: BN-ReLU-Linear (DESIGN 2.6)."""
    return nn.Sequential(nn.BatchNorm1d(in_dim), nn.ReLU(True), nn.Linear(in_dim, num_classes))
