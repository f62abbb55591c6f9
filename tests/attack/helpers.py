"""Tiny checkpoints for attack tests (the training stage is built elsewhere)."""

from __future__ import annotations

from pathlib import Path

import torch


def make_checkpoint(
    path: Path,
    index,
    set_name: str,
    npc: int,
    seed: int,
    epoch: int = 1,
    projector: str = "64-32",
    num_classes: int = 0,
) -> Path:
    from dejavu.io import atomic_torch_save
    from dejavu.ssl.model import ModelSpec, SSLModel

    torch.manual_seed(seed)
    m = SSLModel(ModelSpec("smallcnn", projector, num_classes))
    # a few BN statistics updates so eval-mode outputs are not degenerate
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(16, 3, 32, 32))
    m.eval()
    cfg = {
        "method": "vicreg",
        "arch": "smallcnn",
        "projector": projector,
        "image_size": 32,
        "npc": npc,
        "set": set_name,
        "num_classes": num_classes,
    }
    atomic_torch_save(
        path,
        {
            "format": "dejavu-ckpt/1",
            "model": m.state_dict(),
            "epoch": epoch,
            "config": cfg,
            "fingerprint": index.fingerprint.to_dict(),
        },
    )
    return path
