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
    config = {
        "method": "supervised",
        "arch": "smallcnn",
        "projector": "64-32",
        "image_size": 32,
        "num_classes": model.spec.num_classes,
        "npc": 10,
        "set": "A",
        **cfg,
    }
    atomic_torch_save(
        path,
        {
            "format": "dejavu-ckpt/1",
            "model": model.state_dict(),
            "epoch": epoch,
            "config": config,
            "fingerprint": fingerprint,
        },
    )
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
    res = probe(
        trained_ckpt,
        partition_small,
        10,
        DataPaths.resolve(data=synth_small),
        tmp_path / "p",
        augment=False,
        epochs=40,
        device="cpu",
    )
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
    argv = [
        "probe",
        "--model",
        str(trained_ckpt),
        "--partition",
        str(partition_small),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(tmp_path / "q"),
        "--features",
        "projector",
        "--epochs",
        "8",
        "--batch-size",
        "32",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    d = json.loads((tmp_path / "q" / "results.json").read_text())
    assert d["config"]["augment"] is True and d["config"]["features"] == "projector"
    assert d["counts"]["feature_dim"] == 32
    # the ProbeConfig as given is stored beside what it resolved to
    assert d["settings"]["epochs"] == 8 and d["settings"]["batch_size"] == 32 and d["settings"]["recipe"] is None
    assert d["settings"]["features"] == "projector" and d["config"]["recipe"] == "bn-cosine"
    assert d["config"]["decode"] == "exact"  # the full decode, as the original (--decode draft: opt-in)
    assert d["top1"] > 0.2  # augmented path on a projector of 32 dims, 8 epochs: still well above chance
    assert main(argv) == 1  # existing result, no --force
    assert main(argv + ["--force"]) == 0


def test_probe_refuses_checkpoint_of_another_dataset(synth_small, partition_small, tmp_path):
    fp = scan_imagefolder(synth_small / "train").fingerprint.to_dict()
    fp = {**fp, "paths_sha256": "0" * 64, "id": "deadbeefdeadbeef"}
    ck = _save(tmp_path / "m.pth", SSLModel(ModelSpec("smallcnn", "64-32")), fp)
    with pytest.raises(DejavuError, match=r"m\.pth"):
        probe(ck, partition_small, 10, DataPaths.resolve(data=synth_small), tmp_path / "p", augment=False, epochs=1)


def test_topk_accuracy_hand_worked():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 1])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3)
    assert acc[2] == pytest.approx(2 / 3)  # row 2: top-2 = {2, 1}
    assert acc[5] == pytest.approx(1.0)  # k capped at 3 classes


def test_original_recipe_lr_is_lin_probe_py_staircase():
    from dejavu.probe import RECIPES, recipe_lr, resolve_recipe

    r = resolve_recipe("original")
    assert (r.head, r.epochs, r.batch_size, r.lr, r.end_lr, r.weight_decay, r.train_view) == (
        "linear",
        20,
        64,
        10.0,
        0.1,
        0.0,
        "original",
    )
    # lin_probe.py's loop, literally: after step ct, every 50 steps, lr = start*(1-ct/n) + end*(ct/n)
    n = 20 * 37
    lr, used = 10.0, []
    for ct in range(n):
        used.append(lr)
        if (ct + 1) % 50 == 0:
            lr = 10.0 * (1 - ct / n) + 0.1 * (ct / n)
    assert [recipe_lr(r, s, n) for s in range(n)] == pytest.approx(used, rel=1e-12)
    assert 0.1 < used[-1] < 1.0 and RECIPES["bn-cosine"].head == "bn-linear"


def test_original_recipe_run_names_itself(synth_small, partition_small, trained_ckpt, tmp_path):
    ck = tmp_path / "orig.pth"
    d = torch.load(trained_ckpt, weights_only=True)
    d["config"] = {**d["config"], "probe_recipe": "original"}
    atomic_torch_save(ck, d)
    res = probe(ck, partition_small, 10, DataPaths.resolve(data=synth_small), tmp_path / "o", epochs=2, device="cpu")
    c = res.results["config"]
    assert (c["recipe"], c["head"], c["batch_size"], c["lr"], c["end_lr"], c["weight_decay"], c["train_view"]) == (
        "original",
        "linear",
        64,
        10.0,
        0.1,
        0.0,
        "original",
    )
    assert c["epochs"] == 2 and c["augment"] is True  # the override is recorded, the recipe still named
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.results["history"])
    # the recipe passed explicitly wins over the checkpoint's
    res2 = probe(
        ck,
        partition_small,
        10,
        DataPaths.resolve(data=synth_small),
        tmp_path / "b",
        recipe="bn-cosine",
        epochs=1,
        augment=False,
        device="cpu",
    )
    assert res2.results["config"]["recipe"] == "bn-cosine" and res2.results["config"]["head"].startswith("bn")
    with pytest.raises(DejavuError, match="recipe"):
        probe(ck, partition_small, 10, DataPaths.resolve(data=synth_small), tmp_path / "x", recipe="mae")


def test_default_recipe_original_for_paper_configs_and_original_checkpoints():
    from dejavu.probe import default_recipe
    from dejavu.ssl.config import load_train_config
    from dejavu.ssl.registry import METHODS

    for m in METHODS:
        assert default_recipe(load_train_config(m).to_dict(), "dejavu") == "original"
        assert default_recipe(load_train_config(f"{m}_synth").to_dict(), "dejavu") == "bn-cosine"
    assert default_recipe({}, "original") == default_recipe(None, "torchvision") == "original"
    assert default_recipe({"method": "vicreg"}, "dejavu") == "bn-cosine"  # dejavu checkpoints made before recipes


def test_probe_cli_settings_errors_are_usage_errors(tmp_path, capsys):
    argv = ["probe", "--model", "m.pth", "--partition", "p", "--npc", "10", "--data", "d", "--out", str(tmp_path / "o")]
    assert main(argv + ["--set", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "--set: unknown key(s) epoch (did you mean epochs?); valid keys:" in err and "epochs" in err
    assert main(argv + ["--set", "recipe=mae"]) == 2
    assert "recipe='mae': choose from original, bn-cosine" in capsys.readouterr().err
    cfg = tmp_path / "probe.yaml"
    cfg.write_text("epochs: 3\nfeatures: projector\n")
    from dejavu.cli import build_parser
    from dejavu.config import config_from_args
    from dejavu.probe import PROBE_FLAGS, ProbeConfig

    args = build_parser().parse_args(argv + ["--config", str(cfg), "--epochs", "5", "--no-augment"])
    c = config_from_args(ProbeConfig, args, flags=PROBE_FLAGS)
    assert (c.epochs, c.features, c.augment) == (5, "projector", False)  # file < flags
