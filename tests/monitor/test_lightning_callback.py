"""The Lightning callback on a loop written as a lightly user writes one: a tiny ResNet with
lightly's SimCLR head and NT-Xent loss, trained 2 epochs by a pytorch_lightning Trainer;
the scores logged through the trainer's logger equal the monitor's own."""

from __future__ import annotations

import csv

import pytorch_lightning as pl  # lightly depends on it
import torch
from lightly.loss import NTXentLoss
from lightly.models import ResNetGenerator
from lightly.models.modules import SimCLRProjectionHead
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dejavu.monitor import DejavuMonitorCallback, Monitor, MonitorConfig


class TinySimCLR(pl.LightningModule):
    def __init__(self):
        super().__init__()
        resnet = ResNetGenerator("resnet-9", width=0.125)
        self.backbone = nn.Sequential(*list(resnet.children())[:-1], nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = SimCLRProjectionHead(64, 64, 32)
        self.loss = NTXentLoss()

    def view(self, x):
        flip = torch.rand(len(x), 1, 1, 1) < 0.5
        return torch.where(flip, x.flip(3), x) + 0.1 * torch.randn_like(x)

    def training_step(self, batch, _):
        (x,) = batch
        z0, z1 = self.head(self.backbone(self.view(x))), self.head(self.backbone(self.view(x)))
        return self.loss(z0, z1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.06)


def _images(synth_small, partition_small):
    import numpy as np

    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from dejavu.ssl.data import decode_all

    index = scan_imagefolder(synth_small / "train")
    x = decode_all(index, np.load(partition_small / "10_per_class" / "train_A.npy"), 32, "decode").float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def test_lightning_callback_logs_the_monitors_scores(synth_small, partition_small, audit_yaml, tmp_path):
    pl.seed_everything(0)
    cfg = MonitorConfig(crops=40, public_per_class=15, audit=str(audit_yaml))
    monitor = Monitor(tmp_path / "monitor", partition_small, synth_small, npc=10, audited="A", cfg=cfg, image_size=32)
    model = TinySimCLR()
    callback = DejavuMonitorCallback(monitor, model=lambda m: m.backbone, every=1)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=pl.loggers.CSVLogger(tmp_path / "logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(_images(synth_small, partition_small)), batch_size=25, shuffle=True)
    trainer.fit(model, loader)

    with open(tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("dejavu/score")]
    assert [int(float(r["epoch"])) for r in logged] == [1, 2] and len(callback.history) == 2
    # the epoch-2 numbers, logged during training, equal the monitor's on the trained model
    now = monitor.score(model.backbone)
    for key in ("score", "score_100", "memorized", "model_acc", "classifier_acc", "classifier_heldout_acc"):
        assert float(logged[1][f"dejavu/{key}"]) == now[key], key
    assert float(logged[1]["dejavu/score_ci95_lo"]) == now["score_ci95"][0]
    assert float(logged[0]["dejavu/memorized"]) == callback.history[0]["memorized"]
    assert model.backbone.training  # the callback left the model in training mode
