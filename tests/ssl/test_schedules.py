"""The original's schedules and defaults: DINO teacher temperature warm-up, the resolution
ramp (paper configs on, synthetic off), zero_init_residual off, the supervised baseline on
view 1 of the SSL pipeline."""

import numpy as np
import pytest
import torch

from dejavu.data.imagefolder import DataPaths
from dejavu.ssl.config import TrainConfig, load_train_config
from dejavu.ssl.methods.dino import teacher_temp_at
from dejavu.ssl.registry import METHODS


def _original_get_resolution(epoch, min_res=160, max_res=192, end_ramp=85, start_ramp=70):
    # train_SSL.py, ImageNetTrainer.get_resolution
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


def test_dino_teacher_temperature_as_the_original():
    for cfg in (TrainConfig(), load_train_config("dino"), load_train_config("dino_synth")):
        assert (cfg.dino.warmup_teacher_temp, cfg.dino.teacher_temp, cfg.dino.warmup_teacher_temp_epochs) == (
            0.04,
            0.07,
            50,
        )
    # the original: np.concatenate((np.linspace(0.04, 0.07, 50), np.ones(epochs - 50) * 0.07))[epoch]
    sched = np.concatenate((np.linspace(0.04, 0.07, 50), np.ones(950) * 0.07))
    got = [teacher_temp_at(e, 0.04, 0.07, 50) for e in range(1000)]
    np.testing.assert_allclose(got, sched, rtol=1e-12)
    assert teacher_temp_at(0, 0.04, 0.07, 0) == 0.07 and teacher_temp_at(0, 0.04, 0.07, 1) == 0.04


def test_resolution_ramp_on_in_paper_configs_off_in_synthetic():
    for m in METHODS:
        paper, synth = load_train_config(m), load_train_config(f"{m}_synth")
        assert (paper.min_res, paper.max_res, paper.start_ramp, paper.end_ramp) == (160, 192, 70, 85), m
        assert [paper.resolution(e) for e in range(200)] == [_original_get_resolution(e) for e in range(200)]
        assert {synth.resolution(e) for e in range(300)} == {synth.image_size}, m
        assert not paper.zero_init_residual and not synth.zero_init_residual
    assert [load_train_config("vicreg").resolution(e) for e in (0, 70, 77, 78, 85, 999)] == [
        160,
        160,
        160,
        192,
        192,
        192,
    ]


def test_zero_init_residual_is_torchvisions_default_unless_set():
    import torchvision

    from dejavu.ssl.backbones import build_backbone, zero_init_residuals

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(zero_init_residual=True).state_dict()
    torch.manual_seed(0)
    ours, _ = build_backbone("resnet18")
    assert all(float(b.bn2.weight.detach().min()) == 1.0 for layer in (ours.layer1, ours.layer4) for b in layer)
    assert zero_init_residuals(ours) == 8
    sd = ours.state_dict()
    for k in sd:
        assert torch.equal(sd[k], ref[k]), k


@pytest.fixture(scope="module")
def paths(synth_small):
    return DataPaths.resolve(data=synth_small)


def _record_views(monkeypatch):
    import dejavu.ssl.train as T

    seen = []
    orig = T.train_step

    def spy(eng, views, labels, info):
        seen.append((info.epoch, len(views), tuple(views[0].shape[-2:])))
        return orig(eng, views, labels, info)

    monkeypatch.setattr(T, "train_step", spy)
    return seen


def test_training_follows_the_ramp(paths, partition_small, tmp_path, monkeypatch):
    from dejavu.ssl.train import train

    seen = _record_views(monkeypatch)
    cfg = load_train_config(
        None,
        [
            "projector=32-32",
            "knn_every=0",
            "warmup_epochs=0",
            "epochs=3",
            "batch_size=50",
            "min_res=16",
            "max_res=32",
            "start_ramp=1",
            "end_ramp=2",
        ],
        method="simclr",
    )
    res = train(cfg, paths, partition_small / "10_per_class" / "train_A.npy", tmp_path / "r", device="cpu")
    assert sorted({(e, s) for e, _, s in seen}) == [(0, (16, 16)), (1, (16, 16)), (2, (32, 32))]
    assert [r["resolution"] for r in res.history] == [16, 16, 32]


def test_supervised_trains_on_view_1_of_the_ssl_pipeline(paths, partition_small, tmp_path, monkeypatch):
    import dejavu.ssl.train as T
    from dejavu.ssl.train import train

    built = []
    orig = T.build_views
    monkeypatch.setattr(T, "build_views", lambda *a, **k: built.append((a, k)) or orig(*a, **k))
    seen = _record_views(monkeypatch)
    cfg = load_train_config(
        "supervised_synth",
        ["projector=32-32", "knn_every=0", "warmup_epochs=0", "epochs=1", "batch_size=50", "augment=paper"],
    )
    train(cfg, paths, partition_small / "10_per_class" / "train_A.npy", tmp_path / "s", device="cpu")
    assert built and all(a[:3] == ("paper", 32, 1) for a, _ in built)
    assert {n for _, n, _ in seen} == {1}
    assert (
        load_train_config("supervised").augment == "paper" and load_train_config("supervised_synth").augment == "mild"
    )
