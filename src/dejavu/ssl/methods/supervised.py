"""Supervised baseline: cross-entropy through ``SSLModel.classifier`` (BN-ReLU-Linear on
the projector, DESIGN 2.6), trained on view 1 of the SSL pipeline (``cfg.augment``'s
first view: with ``paper``, crop, flip, jitter, greyscale and the Gaussian blur), as the
original (which forwarded that view twice, ``images_big_0.repeat(2, 1, 1, 1)``; once gives
the same loss and gradient)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dejavu.ssl.methods.base import Method, StepInfo
from dejavu.ssl.model import SSLModel


class Supervised(Method):
    name = "supervised"
    num_views = 1
    needs_classifier = True

    def forward(
        self, model: SSLModel, views: list[torch.Tensor], labels: torch.Tensor, info: StepInfo
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Args:
            model: the SSL model, with a classifier.
            views: one view.
            labels: (n,) int64 class labels.
            info: unused.

        Returns:
            ``(cross-entropy, {"train_acc": batch accuracy, a 0-d tensor})``.

        Raises:
            ValueError: the model has no classifier.
        """
        z = model(views[0])[1]
        if model.classifier is None:
            raise ValueError("the supervised method needs a model with a classifier (num_classes > 0)")
        logits = model.classifier(z)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean().detach()  # a tensor: no device sync per step
        return loss, {"train_acc": acc}
