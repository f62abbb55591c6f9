"""`dejavu audit` of a released-layout ViT (a DINO teacher checkpoint, tiny): what was loaded
is said on one line and stored, the image size follows --image-size, and a classifier run far
above the crops' own resolution is warned about."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.audit.run import size_warning
from dejavu.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "ssl"))
from test_checkpoint_vit import ARCH, DinoViT, _dino_head

FAST = ["--set", "k=20", "--set", "clf_epochs=1", "--set", "n_boot=20", "--set", "clf_batch_size=32"]


@pytest.fixture(scope="module")
def dino_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    teacher = DinoViT()
    d = tmp_path_factory.mktemp("vit")
    sd = {**{f"backbone.{k}": v for k, v in teacher.state_dict().items()}, **_dino_head()}
    ckpt = {"teacher": sd, "student": sd, "epoch": 5, "args": argparse.Namespace(arch="vit_small")}
    torch.save(ckpt, d / "checkpoint.pth")
    return d / "checkpoint.pth"


def test_audit_a_dino_vit_says_what_was_loaded(dino_ckpt, synth_small, partition_small, tmp_path, capsys):
    out = tmp_path / "a"
    args = ["audit", "--model", str(dino_ckpt), "--arch", ARCH, "--image-size", "48", "--partition"]
    args += [str(partition_small), "--npc", "10", "--data", str(synth_small), "--out", str(out), *FAST]
    args += ["--set", "clf_image_size=160", "--control", "none"]
    assert main(args) == 0
    cap = capsys.readouterr()
    line = next(x for x in cap.err.splitlines() if x.startswith("dejavu audit: loaded"))
    assert "layout vit (DINO release, teacher weights)" in line and f"arch {ARCH}_48" in line
    assert "embedding [CLS] token after the final norm (48-d)" in line and "image size 48" in line
    res = json.loads((out / "results.json").read_text())
    loaded = res["models"]["audited"]["loaded"]
    assert loaded["layout"] == "vit" and loaded["weights"] == "teacher" and loaded["image_size"] == 48
    assert res["config"]["image_size"] == 48 and res["config"]["classifier_image_size"] == 160
    assert "loaded" in cap.out.splitlines()[0]  # the summary repeats it
    boxes = np.load(out / "crops.npy")
    assert size_warning(160, boxes) is not None and res["warnings"] == [size_warning(160, boxes)]
    assert "upsampled" in cap.err and any("warning" in x and "upsampled" in x for x in cap.out.splitlines())
    # no control: "memorized" is an upper bound, said so
    assert res["memorization"]["reading"] == "upper bound (no control)" and "UPPER BOUNDS" in cap.err
    assert "memorized <= " in cap.out and "upper bound on memorization" in cap.out


def test_size_warning_threshold():
    boxes = np.array([[0, 0, 10, 20], [0, 0, 30, 10], [5, 5, 25, 10]], dtype=float)  # long sides 20, 30, 20
    assert size_warning(80, boxes) is None  # 4x the median: fine
    w = size_warning(224, boxes)
    assert w is not None and "median long side is 20 px" in w and "11x" in w and "clf_image_size" in w


def test_loaded_line_says_a_defaulted_image_size(tmp_path):
    import torchvision

    from dejavu.ssl.checkpoint import load_model

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    lm = load_model(tmp_path / "r18.pth")
    assert lm.loaded["layout"] == "torchvision" and lm.loaded["image_size"] is None
    assert "image size not recorded" in lm.describe() and "global-average-pooled features (512-d)" in lm.describe()
    lm.loaded.update(image_size=224, image_size_note="default: the checkpoint records none; --image-size N sets it")
    assert lm.describe().endswith("image size 224 (default: the checkpoint records none; --image-size N sets it)")
