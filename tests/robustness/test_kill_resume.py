"""SIGKILL in the middle of writing a result (training checkpoint, attack output), then a
rerun: nothing half-written is ever taken for complete, and the final results equal an
uninterrupted run's. The kill is real (child.py SIGKILLs itself after truncating the
temporary file it was about to rename), at a deterministic point."""

from __future__ import annotations

import json
import signal

import numpy as np
import torch
from robustness_cli import assert_one_line_error, attack_args, attack_inprocess, child_env, run_cli

from dejavu.data.imagefolder import DataPaths
from dejavu.ssl.config import load_train_config
from dejavu.ssl.train import train

SETS = ["epochs=3", "projector=16-16", "knn_every=0", "warmup_epochs=0", "snapshot_every=1", "batch_size=8"]


def test_sigkill_mid_training_then_resume(corpus, tmp_path):
    index_file = corpus / "part" / "4_per_class" / "train_A.npy"
    paths = DataPaths.resolve(data=corpus / "data")
    cfg = load_train_config(None, SETS, method="vicreg")
    full = train(cfg, paths, index_file, tmp_path / "full", device="cpu")

    run = tmp_path / "killed"
    args = [
        "train",
        "--method",
        "vicreg",
        "--data",
        corpus / "data",
        "--index",
        index_file,
        "--out",
        run,
        "--device",
        "cpu",
    ] + [x for s in SETS for x in ("--set", s)]
    proc = run_cli(*args, env=child_env(DEJAVU_TEST_KILL_AT="last.pth:2"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # the half-written epoch-2 state lies under a temporary name only; last.pth is epoch 1, whole
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    assert list(run.glob(".last.pth.*.tmp"))
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    res = train(cfg, paths, index_file, run, resume=True, device="cpu")  # a fresh process in real life
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    a = torch.load(full.last, weights_only=True)
    b = torch.load(res.last, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for e in (1, 2, 3):
        sa = torch.load(tmp_path / "full" / f"model_ep{e}.pth", weights_only=True)["model"]
        sb = torch.load(run / f"model_ep{e}.pth", weights_only=True)["model"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa), e


def test_sigkill_mid_attack_then_rerun(corpus, tmp_path):
    ref = attack_inprocess(corpus, tmp_path / "ref" / "att")
    out = tmp_path / "k" / "att"
    proc = run_cli(*attack_args(corpus, out), env=child_env(DEJAVU_TEST_KILL_AT="B_attk_A_neighb_idxs.npy:1"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "results.json").exists() and not (out / "B_attk_A_neighb_idxs.npy").exists()
    assert list(out.glob(".B_attk_A_neighb_idxs.npy.*.tmp"))  # the half-written file, not under its name
    # rerun (no --force needed: the folder holds an interrupted attack, no results.json)
    again = attack_inprocess(corpus, out)
    assert all(again.results["embed_cache"]["hit"].values())  # the cache written before the kill is whole
    assert again.results["metrics"] == ref.results["metrics"]
    for f in sorted((tmp_path / "ref" / "att").glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(out / f.name)), f.name
    assert (out / "examples.csv").read_text() == (tmp_path / "ref" / "att" / "examples.csv").read_text()


def test_nan_loss_stops_keeps_last_good_checkpoint(corpus, tmp_path):
    run = tmp_path / "nan"
    sets = [
        "epochs=3",
        "projector=16-16",
        "knn_every=0",
        "warmup_epochs=0",
        "optimizer=sgd",
        "absolute_lr=true",
        "lr=1e30",
        "batch_size=16",
    ]  # one step per epoch: epoch 1 finite, then NaN
    proc = run_cli(
        "train",
        "--method",
        "simclr",
        "--data",
        corpus / "data",
        "--index",
        corpus / "part" / "4_per_class" / "train_A.npy",
        "--out",
        run,
        "--device",
        "cpu",
        *[x for s in sets for x in ("--set", s)],
    )
    assert_one_line_error(proc, str(run), "loss became", "Last good checkpoint kept", "epoch 1")
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    assert not list(run.glob("*.tmp"))
