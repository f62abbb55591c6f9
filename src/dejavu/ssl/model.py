"""The network every stage shares: backbone + projector (+ a classifier for the
supervised baseline). Method-specific parts (BYOL predictor, EMA teachers, DINO
prototypes) live in the method and are saved under ``extra`` in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dejavu.ssl.backbones import build_backbone
from dejavu.ssl.heads import build_classifier, build_projector


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "smallcnn"
    projector: str = "1024-1024"
    num_classes: int = 0  # > 0 adds the supervised classifier head

    def to_dict(self) -> dict:
        return {"arch": self.arch, "projector": self.projector, "num_classes": self.num_classes}


class SSLModel(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone, self.feature_dim = build_backbone(spec.arch)
        self.projector, self.embed_dim = build_projector(self.feature_dim, spec.projector)
        self.classifier = build_classifier(self.embed_dim, spec.num_classes) if spec.num_classes > 0 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(backbone features, projector embedding)``."""
        h = self.backbone(x)
        return h, self.projector(h)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, kind: str = "projector") -> torch.Tensor:
        """Embedding used by the attack: ``projector`` | ``backbone`` | ``logits`` | ``both``
        (``both`` = concat(backbone, projector), the RCDM conditioning).

        Args:
            x: (n, 3, S, S) normalized images.
            kind: ``projector``, ``backbone``, ``logits`` or ``both``.

        Returns:
            (n, d) embeddings (no gradient).

        Raises:
            ValueError: an unknown kind, or ``logits`` without a classifier.
        """
        h = self.backbone(x)
        if kind == "backbone":
            return h
        z = self.projector(h)
        if kind == "projector":
            return z
        if kind == "both":
            return torch.cat([h, z], dim=1)
        if kind == "logits":
            if self.classifier is None:
                raise ValueError("logits embedding needs a supervised model (with a classifier head)")
            return self.classifier(z)
        raise ValueError(f"unknown embedding kind {kind!r}")
