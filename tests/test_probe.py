"""Linear probe on the synthetic dataset: beats chance with a briefly trained model,
writes the contract's results.json, refuses silent overwrites and foreign datasets."""

from __future__ import annotations

import json

import pytest
import torch

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.data.dataset import IndexedImages
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.data.transforms import eval_transform
from dejavu.io import atomic_torch_save
from dejavu.partition import Partition
from dejavu.probe import probe, topk_accuracy
from dejavu.ssl.model import ModelSpec, SSLModel


def _save(path, model, fingerprint, epoch=3, **cfg):
    config = {"method": "supervised", "arch": "smallcnn", "projector": "64-32", "image_size": 32,
              "num_classes": model.spec.num_classes, "npc": 10, "set": "A", **cfg}
    atomic_torch_save(path, {"format": "dejavu-ckpt/1", "model": model.state_dict(), "epoch": epoch,
                             "config": config, "fingerprint": fingerprint})
    return path


@pytest.fixture(scope="module")
def trained_ckpt(synth_small, partition_small, tmp_path_factory):
    """A smallcnn trained briefly (supervised, 4 epochs on train_B) so the probe has a real model."""
    torch.manual_seed(0)
    index = scan_imagefolder(synth_small / "train")
    idx = Partition.load(partition_small).load_set(10, "train_B")
    ds = IndexedImages(index, idx, eval_transform(32))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    model = SSLModel(ModelSpec("smallcnn", "64-32", num_classes=10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in torch.randperm(len(x)).split(20):
            loss = torch.nn.functional.cross_entropy(model.classifier(model(x[i])[1]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "model_ep4.pth"
    return _save(path, model, index.fingerprint.to_dict(), epoch=4)


def test_probe_beats_chance_and_writes_contract(synth_small, partition_small, trained_ckpt, tmp_path):
    res = probe(trained_ckpt, partition_small, 10, DataPaths.resolve(data=synth_small), tmp_path / "p",
                augment=False, epochs=40, device="cpu")
    # 10 classes: chance is 0.1 top-1 and 0.5 top-5
    assert res.top1 > 0.3, res.top1
    assert res.top5 > res.top1 and res.top5 > 0.6
    d = json.loads((tmp_path / "p" / "results.json").read_text())
    assert d["format"] == "dejavu-probe/1"
    assert d["top1"] == pytest.approx(res.top1) and d["top5"] == pytest.approx(res.top5)
    assert d["method"] == "supervised" and d["npc"] == 10 and d["epoch"] == 4
    assert d["model"]["epoch"] == 4 and len(d["model"]["sha256"]) == 64
    assert d["model"]["config"]["arch"] == "smallcnn"
    assert d["config"]["augment"] is False and d["config"]["features"] == "backbone"
    assert d["fingerprint"]["num_files"] == 600
    assert d["counts"]["train"] == 100 and d["counts"]["val"] == len(Partition.load(partition_small).val_set())
    # the loss went down: the linear layer actually learned
    assert d["history"][-1]["loss"] < d["history"][0]["loss"]


def test_probe_cli_augmented_projector_and_no_overwrite(synth_small, partition_small, trained_ckpt, tmp_path):
    argv = ["probe", "--model", str(trained_ckpt), "--partition", str(partition_small), "--npc", "10",
            "--data", str(synth_small), "--out", str(tmp_path / "q"), "--features", "projector",
            "--epochs", "8", "--batch-size", "32", "--device", "cpu"]
    assert main(argv) == 0
    d = json.loads((tmp_path / "q" / "results.json").read_text())
    assert d["config"]["augment"] is True and d["config"]["features"] == "projector"
    assert d["counts"]["feature_dim"] == 32
    assert d["top1"] > 0.2  # augmented path on a projector of 32 dims, 8 epochs: still well above chance
    assert main(argv) == 1  # existing result, no --force
    assert main(argv + ["--force"]) == 0


def test_probe_refuses_checkpoint_of_another_dataset(synth_small, partition_small, tmp_path):
    fp = scan_imagefolder(synth_small / "train").fingerprint.to_dict()
    fp = {**fp, "paths_sha256": "0" * 64, "id": "deadbeefdeadbeef"}
    ck = _save(tmp_path / "m.pth", SSLModel(ModelSpec("smallcnn", "64-32")), fp)
    with pytest.raises(DejavuError, match="m.pth"):
        probe(ck, partition_small, 10, DataPaths.resolve(data=synth_small), tmp_path / "p", augment=False, epochs=1)


def test_topk_accuracy_hand_worked():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 1])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3)
    assert acc[2] == pytest.approx(2 / 3)  # row 2: top-2 = {2, 1}
    assert acc[5] == pytest.approx(1.0)  # k capped at 3 classes
