"""Training on the synthetic fixture: every method learns, snapshots, exact resume,
checkpoint round trip, clear errors, CLI."""

import json

import numpy as np
import pytest
import torch

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.data.imagefolder import DataPaths
from dejavu.ssl.checkpoint import load_model
from dejavu.ssl.config import TrainConfig, load_train_config
from dejavu.ssl.registry import METHODS
from dejavu.ssl.train import train

FAST = ["projector=64-64", "knn_every=0", "warmup_epochs=0", "snapshot_every=2"]


def _cfg(method, *sets):
    return load_train_config(None, FAST + list(sets), method=method)


@pytest.fixture(scope="module")
def paths(synth_small):
    return DataPaths.resolve(data=synth_small)


@pytest.fixture(scope="module")
def index_a(partition_small):
    return partition_small / "10_per_class" / "train_A.npy"


# every registered method is trained; a method may shrink its settings here (faster), none must
SMALLER = {
    "byol": ["byol.hidden=64"],
    "dino": ["projector=64-32", "dino.out_dim=64", "lr=0.01"],
}


# batch 25 on 100 images -> 4 steps per epoch
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_learns(method, paths, index_a, tmp_path):
    cfg = _cfg(method, "epochs=3", "batch_size=25", *SMALLER.get(method, []))
    res = train(cfg, paths, index_a, tmp_path / "run", device="cpu")
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert [p.name for p in res.snapshots] == ["model_ep2.pth", "model_ep3.pth"]
    lm = load_model(res.snapshots[-1])
    assert lm.epoch == 3 and lm.config["method"] == method and lm.config["npc"] == 10 and lm.config["set"] == "A"
    assert lm.config[method] == cfg.to_dict()[method]  # the method's section is stored
    if method == "supervised":
        assert lm.model.classifier is not None and lm.model.classifier[-1].out_features == 10
    ck = torch.load(res.last, weights_only=True)
    assert {"optimizer", "rng", "step", "extra", "fingerprint", "scaler"} <= set(ck)
    # what the method adds to the model (teachers, prototypes, centers) is saved and reloads
    from dejavu.ssl.train import build_engine

    eng = build_engine(cfg, torch.device("cpu"))
    assert sorted(ck["extra"]) == sorted(eng.method.state_dict())
    eng.method.load_state_dict(ck["extra"])
    if method in ("byol", "dino"):
        assert any(k.startswith("teacher.") for k in ck["extra"])
    if method == "dino":
        assert "loss.center" in ck["extra"] and ck["extra"]["loss.center"].abs().sum() > 0


def test_resume_equals_uninterrupted(paths, index_a, tmp_path):
    full = train(
        _cfg("byol", "epochs=4", "byol.hidden=32", "batch_size=50"), paths, index_a, tmp_path / "full", device="cpu"
    )
    part = tmp_path / "part"
    cfg = _cfg("byol", "epochs=4", "byol.hidden=32", "batch_size=50")
    _train_until(cfg, paths, index_a, part, stop_after=2)
    assert json.loads((part / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    res = train(cfg, paths, index_a, part, resume=True, device="cpu")
    a = torch.load(full.last, weights_only=True)
    b = torch.load(res.last, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["extra"]:
        assert torch.equal(a["extra"][k], b["extra"][k]), k
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    # a config field that matters cannot change on resume, and the error names it
    with pytest.raises(DejavuError, match="lr"):
        train(
            _cfg("byol", "epochs=4", "byol.hidden=32", "batch_size=50", "lr=0.1"),
            paths,
            index_a,
            part,
            resume=True,
            device="cpu",
        )


def _train_until(cfg, paths, index, out, stop_after):
    """Run the real loop and interrupt it (KeyboardInterrupt, as a kill would) after an epoch."""
    import dejavu.ssl.train as T

    orig = T.atomic_torch_save

    def save_then_maybe_stop(path, obj):
        orig(path, obj)
        if path.name == "last.pth" and obj["epoch"] == stop_after:
            raise KeyboardInterrupt

    T.atomic_torch_save = save_then_maybe_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, paths, index, out, device="cpu")
    finally:
        T.atomic_torch_save = orig


def test_same_seed_same_init_for_a_and_b(paths, partition_small, tmp_path):
    from dejavu.ssl.train import build_engine

    e1 = build_engine(_cfg("vicreg", "seed=3"), torch.device("cpu"))
    e2 = build_engine(_cfg("vicreg", "seed=3"), torch.device("cpu"))
    e3 = build_engine(_cfg("vicreg", "seed=4"), torch.device("cpu"))
    k = "backbone.features.0.weight"
    assert torch.equal(e1.model.state_dict()[k], e2.model.state_dict()[k])
    assert not torch.equal(e1.model.state_dict()[k], e3.model.state_dict()[k])


def test_pair_is_independent_by_default_coupled_on_request(paths, partition_small, tmp_path):
    """B's training seed is derived from the pair's seed (seed + 1000003), so its
    initial weights and batch order differ from A's; design=coupled gives both the same seed.
    The seeds are recorded and the attack's pair_design reads the design from them."""
    from dejavu.ssl.config import B_SEED_OFFSET, pair_design, train_seed
    from dejavu.ssl.data import epoch_permutation

    assert train_seed(5, "A") == 5 and train_seed(5, "B") == 5 + B_SEED_OFFSET == train_seed(5, "B", "independent")
    assert train_seed(5, "B", "coupled") == 5 and train_seed(5, None) == 5
    split = partition_small / "10_per_class"
    conv = "backbone.features.0.weight"
    got = {}
    for design in ("independent", "coupled"):
        # lr 1e-12: one epoch leaves the weights at their initial values (to float32 precision)
        cfg = _cfg("vicreg", "epochs=1", "batch_size=50", "lr=1e-12", "seed=3", f"design={design}")
        runs = {y: train(cfg, paths, split / f"train_{y}.npy", tmp_path / f"{design}_{y}", device="cpu") for y in "AB"}
        cfgs = {y: json.loads((tmp_path / f"{design}_{y}" / "config.json").read_text()) for y in "AB"}
        got[design] = {y: torch.load(runs[y].snapshots[-1], weights_only=True)["model"][conv] for y in "AB"}
        assert cfgs["A"]["train_seed"] == 3 and cfgs["A"]["design"] == design
        assert cfgs["B"]["train_seed"] == (3 + B_SEED_OFFSET if design == "independent" else 3)
        assert pair_design(cfgs["A"], cfgs["B"])["design"] == design
    assert not torch.allclose(got["independent"]["A"], got["independent"]["B"], atol=1e-3)
    assert torch.allclose(got["coupled"]["A"], got["coupled"]["B"], atol=1e-6)
    assert torch.allclose(got["independent"]["A"], got["coupled"]["A"], atol=1e-6)  # A is seeded as before
    n = len(np.load(split / "train_A.npy"))
    assert not torch.equal(epoch_permutation(n, 3, 0), epoch_permutation(n, 3 + B_SEED_OFFSET, 0))
    # a run cannot be resumed under the other design (it would change B's seed)
    with pytest.raises(DejavuError, match="design"):
        cfg = _cfg("vicreg", "epochs=2", "batch_size=50", "lr=1e-12", "seed=3", "design=coupled")
        train(cfg, paths, split / "train_B.npy", tmp_path / "independent_B", resume=True, device="cpu")
    # runs written before the design existed: equal stored seeds read as coupled
    assert pair_design({"seed": 0}, {"seed": 0})["design"] == "coupled"
    assert pair_design({}, {"seed": 0})["design"] == "unknown"


def test_knn_metrics_and_no_overwrite(paths, index_a, tmp_path):
    cfg = _cfg("vicreg", "epochs=2", "knn_every=1")
    res = train(cfg, paths, index_a, tmp_path / "r", device="cpu")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["knn_top1"] <= 1 and r["images_per_s"] > 0 and r["lr"] > 0 for r in rows)
    conf = json.loads((tmp_path / "r" / "config.json").read_text())
    assert conf["fingerprint"]["id"] and conf["index_file"].endswith("train_A.npy") and conf["method"] == "vicreg"
    with pytest.raises(DejavuError, match="--resume"):
        train(cfg, paths, index_a, tmp_path / "r", device="cpu")
    assert res.metrics["epoch"] == 2


def test_nan_loss_stops_and_keeps_last_good(paths, index_a, tmp_path):
    cfg = _cfg("simclr", "epochs=3", "optimizer=sgd", "absolute_lr=true", "lr=1e30", "batch_size=100")
    with pytest.raises(DejavuError, match=r"loss became (nan|inf).*Last good checkpoint kept.*epoch 1"):
        train(cfg, paths, index_a, tmp_path / "nan", device="cpu")
    assert torch.load(tmp_path / "nan" / "last.pth", weights_only=True)["epoch"] == 1


def test_index_from_other_dataset(paths, tmp_path):
    from dejavu.data.synth import SynthConfig, generate
    from dejavu.partition import partition

    other = tmp_path / "other"
    generate(other, SynthConfig(classes=3, per_class=8, size=32, annotated_fraction=0.5, seed=1), force=True)
    partition(DataPaths.resolve(data=other), [2], tmp_path / "p", force=True)
    with pytest.raises(DejavuError, match=r"made on dataset \w+ .* this dataset is \w+"):
        train(
            _cfg("vicreg", "epochs=1"),
            paths,
            tmp_path / "p" / "2_per_class" / "train_A.npy",
            tmp_path / "x",
            device="cpu",
        )


def test_empty_index(paths, tmp_path):
    from dejavu.io import atomic_save_npy

    atomic_save_npy(tmp_path / "empty.npy", np.zeros(0, np.int64))
    with pytest.raises(DejavuError, match="empty"):
        train(_cfg("vicreg", "epochs=1"), paths, tmp_path / "empty.npy", tmp_path / "x", device="cpu")


def test_config_validation(tmp_path):
    with pytest.raises(DejavuError, match="unknown key"):
        load_train_config(None, ["epoch=3"])
    with pytest.raises(DejavuError, match="optimizer"):
        load_train_config(None, ["optimizer=adam"])
    with pytest.raises(DejavuError, match="arch"):
        load_train_config(None, ["arch=vgg"])
    with pytest.raises(DejavuError, match="warmup_epochs"):
        load_train_config(None, ["epochs=2"])
    with pytest.raises(DejavuError, match="batch_size"):
        load_train_config(None, ["batch_size=1"])
    with pytest.raises(DejavuError, match="for method 'simclr'"):
        load_train_config("simclr", [], method="vicreg")
    for m in METHODS:
        paper = load_train_config(m)
        synth = load_train_config(f"{m}_synth")
        assert paper.method == synth.method == m
        assert paper.arch == "resnet101" and paper.optimizer == "lars" and paper.batch_size == 1024
        assert synth.arch == "smallcnn" and synth.image_size == 32 and synth.absolute_lr
    v = load_train_config("vicreg_synth")
    assert (v.projector, v.lr, v.weight_decay, v.warmup_epochs, v.batch_size, v.augment) == (
        "1024-1024",
        2e-3,
        1e-5,
        5,
        100,
        "mild",
    )
    assert isinstance(v, TrainConfig)


def test_cli_smoke(synth_small, partition_small, tmp_path, capsys):
    argv = [
        "train",
        "--method",
        "barlow",
        "--data",
        str(synth_small),
        "--index",
        str(partition_small / "5_per_class" / "train_B.npy"),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "epochs=2",
        "--set",
        "warmup_epochs=1",
        "--set",
        "projector=32-32",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert "trained barlow for 2 epochs" in capsys.readouterr().out
    assert (tmp_path / "run" / "model_ep2.pth").is_file()
    assert load_model(tmp_path / "run" / "model_ep2.pth").config["set"] == "B"
    assert main(argv) == 1  # exists, no --resume/--force
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--set", "epochs=3", "--resume"]) == 1
    assert "epochs" in capsys.readouterr().err


class RowHook:
    """An epoch hook of the monitor's kind: opened once on the run, adds a key to every row."""

    setting = "monitor"

    def __init__(self):
        self.opened, self.epochs = [], []

    def open(self, run):
        self.opened.append((run.out, run.cfg.epochs, run.ckpt is not None))

    def after_epoch(self, model, row):
        self.epochs.append(row["epoch"])
        row["monitor_params"] = sum(p.numel() for p in model.parameters())


def test_epoch_hooks_add_to_the_rows_and_a_hooked_setting_needs_its_hook(paths, index_a, tmp_path):
    from dejavu import UsageError

    cfg = _cfg("vicreg", "epochs=2", "batch_size=50", "monitor=true")
    with pytest.raises(UsageError, match=r"TrainConfig.monitor is on but train\(\) got no hook for it"):
        train(cfg, paths, index_a, tmp_path / "r", device="cpu")
    assert not (tmp_path / "r").exists()  # refused before any work
    hook = RowHook()
    res = train(cfg, paths, index_a, tmp_path / "r", device="cpu", epoch_hooks=[hook])
    assert hook.opened == [(res.out, 2, False)] and hook.epochs == [1, 2]
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["monitor_params"] for r in rows] == [r["monitor_params"] for r in res.history] and rows[0][
        "monitor_params"
    ] > 0
