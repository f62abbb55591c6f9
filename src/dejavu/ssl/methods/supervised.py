"""Supervised baseline: cross-entropy through ``SSLModel.classifier`` (BN-ReLU-Linear on
the projector, DESIGN 2.6), one augmented view (random-resized crop + flip)."""

from __future__ import annotations

import torch.nn.functional as F

from dejavu.ssl.methods.base import Method


class Supervised(Method):
    name = "supervised"
    num_views = 1
    view_kind = "supervised"
    needs_labels = True

    def forward(self, model, views, labels, info):
        z = model(views[0])[1]
        logits = model.classifier(z)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean().item()
        return loss, {"train_acc": acc}
