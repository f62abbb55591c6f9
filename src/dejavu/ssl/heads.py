"""Projector heads, in the original code's spec-string form (``"8192-8192-8192"``).

Our projector is a *flat* ``nn.Sequential``: ``[Linear-BN-ReLU] x (n-1) + Linear(no bias)``
(keys ``projector.0.weight``, ``projector.1.running_mean``, ..., ``projector.{3(n-1)}.weight``),
the layout of VICReg's official code. The original deja vu code (``SSLNetwork.MLP``) computes the
same function but nests each Linear-BN-ReLU block in its own ``nn.Sequential`` (keys
``projector.0.0.weight``, ``projector.0.1.running_mean``, ..., the last Linear
``projector.{n-1}.weight``),
so its checkpoints do *not* load unchanged: :mod:`dejavu.ssl.checkpoint` renumbers them.

Heads of other codebases (Barlow Twins' bias-free Linears, lightly's and solo-learn's biased last
Linear, SimCLR heads without BatchNorm) are represented exactly by a *head plan*: the list of
layers read from the state dict (:func:`plan_from_flat`), built by :func:`build_head`.
"""

from __future__ import annotations

import itertools
import re

import torch
from torch import nn

from dejavu import DejavuError

# ("linear", in, out, bias) | ("bn", dim, affine) | ("relu",)
HeadLayer = tuple


def parse_spec(spec: str) -> list[int]:
    try:
        dims = [int(x) for x in str(spec).split("-") if x.strip()]
    except ValueError:
        raise DejavuError(f"projector spec {spec!r}: expected dims like '8192-8192-8192'") from None
    if not dims or min(dims) < 1:
        raise DejavuError(f"projector spec {spec!r}: expected positive dims like '8192-8192-8192'")
    return dims


def build_projector(in_dim: int, spec: str) -> tuple[nn.Module, int]:
    """``spec`` lists the output widths; ``""`` or ``"none"`` gives the identity.

    Args:
        in_dim: the backbone's feature width.
        spec: output widths, e.g. ``"8192-8192-8192"``: Linear-BN-ReLU blocks, then a Linear
            without bias.

    Returns:
        ``(projector, embedding width)``.

    Raises:
        DejavuError: a malformed spec.
    """
    if spec in ("", "none", None):
        return nn.Identity(), in_dim
    dims = [in_dim] + parse_spec(spec)
    layers: list[nn.Module] = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers), dims[-1]


def build_classifier(in_dim: int, num_classes: int) -> nn.Module:
    """Supervised baseline head on the projector: BN-ReLU-Linear (DESIGN 2.6), the layout of
    the original ``SSLNetwork.fc`` for ``loss=supervised``.

    Args:
        in_dim: the embedding width.
        num_classes: number of classes.

    Returns:
        The ``nn.Sequential`` head (keys ``0.*`` BN, ``2.*`` Linear).
    """
    return nn.Sequential(nn.BatchNorm1d(in_dim), nn.ReLU(True), nn.Linear(in_dim, num_classes))


def _layer_at(sd: dict[str, torch.Tensor], i: int) -> HeadLayer:
    w, b = sd.get(f"{i}.weight"), sd.get(f"{i}.bias")
    if f"{i}.running_mean" in sd:
        return ("bn", int(sd[f"{i}.running_mean"].shape[0]), w is not None)
    if w is not None and w.dim() == 2:
        return ("linear", int(w.shape[1]), int(w.shape[0]), b is not None)
    if w is None and b is None:
        return ("relu",)
    raise DejavuError(
        f"head layer {i}: not a Linear or BatchNorm1d (weight shape {tuple(w.shape) if w is not None else None})"
    )


def plan_from_flat(sd: dict[str, torch.Tensor]) -> list[HeadLayer]:
    """The layers of a flat ``nn.Sequential`` head from its state dict (keys ``"{i}.{param}"``).

    Positions without parameters are activations (ReLU, as in every supported codebase); an
    activation after the last parameterised layer leaves no key and cannot be seen.

    Returns:
        The head plan, one entry per position ``0..last``.
    """
    idx = sorted({int(m.group(1)) for k in sd if (m := re.match(r"(\d+)\.", k))})
    if not idx or len(idx) != len({k.split(".")[0] for k in sd}):
        raise DejavuError(f"head keys are not a flat nn.Sequential: {sorted(sd)[:4]}")
    plan = [_layer_at(sd, i) for i in range(idx[-1] + 1)]
    lin = [p for p in plan if p[0] == "linear"]
    for a, b in itertools.pairwise(lin):
        if a[2] != b[1]:
            raise DejavuError(f"head Linears do not chain: {a[1]}->{a[2]} then {b[1]}->{b[2]}")
    return plan


def plan_dims(plan: list[HeadLayer]) -> list[int]:
    """``[in, out_1, ..., out_n]`` of the plan's Linear layers."""
    lin = [p for p in plan if p[0] == "linear"]
    return [lin[0][1]] + [p[2] for p in lin] if lin else []


def standard_spec(plan: list[HeadLayer]) -> str | None:
    """The spec string when ``plan`` is exactly our :func:`build_projector` layout, else None."""
    dims = plan_dims(plan)
    if len(dims) < 2:
        return None
    want: list[HeadLayer] = []
    for i in range(len(dims) - 2):
        want += [("linear", dims[i], dims[i + 1], True), ("bn", dims[i + 1], True), ("relu",)]
    want.append(("linear", dims[-2], dims[-1], False))
    return "-".join(map(str, dims[1:])) if plan == want else None


def describe_plan(plan: list[HeadLayer]) -> str:
    """E.g. ``"Linear(512,64)-BN-ReLU-Linear(64,32,nobias)"``."""
    names = {"relu": "ReLU"}
    out = []
    for p in plan:
        if p[0] == "linear":
            out.append(f"Linear({p[1]},{p[2]}{'' if p[3] else ',nobias'})")
        elif p[0] == "bn":
            out.append("BN" if p[2] else "BN(affine=False)")
        else:
            out.append(names[p[0]])
    return "-".join(out)


def build_head(plan: list[HeadLayer]) -> nn.Sequential:
    """A flat ``nn.Sequential`` whose state-dict keys are the plan's positions."""
    layers: list[nn.Module] = []
    for p in plan:
        if p[0] == "linear":
            layers.append(nn.Linear(p[1], p[2], bias=p[3]))
        elif p[0] == "bn":
            layers.append(nn.BatchNorm1d(p[1], affine=p[2]))
        else:
            layers.append(nn.ReLU(True))
    return nn.Sequential(*layers)
