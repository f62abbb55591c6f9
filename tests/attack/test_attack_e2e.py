"""End-to-end attack on the synthetic fixtures with tiny smallcnn checkpoints, via the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.analysis.metrics import PAIRS, compute_all, scores_from_neighbours
from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpts(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    idx = scan_imagefolder(synth_small / "train")
    for e in (1, 2):
        (d / "runA").mkdir(exist_ok=True)
        (d / "runB").mkdir(exist_ok=True)
        make_checkpoint(d / "runA" / f"model_ep{e}.pth", idx, "A", 10, seed=10 + e, epoch=e)
        make_checkpoint(d / "runB" / f"model_ep{e}.pth", idx, "B", 10, seed=20 + e, epoch=e)
    return d


def _args(ckpts, synth_small, partition_small, out, a="runA/model_ep1.pth", b="runB/model_ep1.pth", extra=()):
    return ["attack", "--model-a", str(ckpts / a), "--model-b", str(ckpts / b), "--partition", str(partition_small),
            "--npc", "10", "--data", str(synth_small), "--out", str(out), "--k", "20", "--k-attk", "10",
            "--bootstrap", "50", *extra]


def test_attack_writes_contract_files_and_rescores(ckpts, synth_small, partition_small, tmp_path, capsys):
    out = tmp_path / "att" / "one"
    assert main(_args(ckpts, synth_small, partition_small, out)) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "dejavu-attack/1" and res["npc"] == 10 and res["epoch"] == 1
    assert res["config"]["k"] == 20 and res["config"]["k_attk"] == 10 and res["config"]["min_crop_px"] == 8
    assert res["models"]["A"]["sha256"] != res["models"]["B"]["sha256"]
    pub = np.load(out / "public_idxs.npy")
    idx = scan_imagefolder(synth_small / "train")
    assert np.array_equal(np.load(out / "public_labels.npy"), idx.targets[pub])
    assert res["counts"]["public"] == len(pub)
    for y in "AB":
        c = res["counts"][y]
        assert c["attacked"] + c["unattackable"] == c["bbox"] == 100 and c["attacked"] > 80
        crops = np.load(out / f"crops_{y}.npy")
        assert (crops[:, 2] - crops[:, 0] > 8).all() and (crops[:, 3] - crops[:, 1] > 8).all()
    pairs = {}
    for name in PAIRS:
        ni = np.load(out / f"{name}_neighb_idxs.npy")
        nl = np.load(out / f"{name}_neighb_labels.npy")
        ai = np.load(out / f"{name}_attk_idxs.npy")
        lab = np.load(out / f"{name}_labels.npy")
        assert ni.shape == (len(ai), 20) and ni.max() < len(pub)
        assert np.array_equal(nl, idx.targets[pub[ni]]) and np.array_equal(lab, idx.targets[ai])
        assert np.load(out / f"top_1_conf_sweep_{name}.npy").shape == (100,)
        pairs[name] = scores_from_neighbours(nl, lab, ai, 10, 10)
    # re-scoring the stored neighbours gives exactly the stored metrics
    again = json.loads(json.dumps(compute_all(pairs, 10, n_boot=50, seed=0)))
    assert again["top1"] == res["metrics"]["top1"] and again["quadrants"] == res["metrics"]["quadrants"]
    rows = list(csv.DictReader((out / "examples.csv").open()))
    assert len(rows) == res["counts"]["A"]["attacked"] + res["counts"]["B"]["attacked"]
    assert set(rows[0]) == {"set", "index", "label", "pred_target", "pred_reference", "conf_target",
                            "conf_reference", "correct_target", "correct_reference", "quadrant"}
    mem = sum(r["quadrant"] == "memorized" for r in rows if r["set"] == "A") / res["counts"]["A"]["attacked"]
    mem_b = sum(r["quadrant"] == "memorized" for r in rows if r["set"] == "B") / res["counts"]["B"]["attacked"]
    assert res["metrics"]["quadrants"]["memorized"] == pytest.approx(0.5 * (mem + mem_b))
    # no silent overwrite; --force reuses the public-embedding cache
    assert main(_args(ckpts, synth_small, partition_small, out)) == 1
    assert "--force" in capsys.readouterr().err
    assert main(_args(ckpts, synth_small, partition_small, out, extra=["--force"])) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert res2["embed_cache"]["hit"] == {"A": True, "B": True}
    assert res2["metrics"]["top1"] == res["metrics"]["top1"]
    # analyze re-scores without a model; other k_attk differs from the stored one
    assert main(["analyze", str(out), "--bootstrap", "50"]) == 0
    an = json.loads((out / "analysis_k10.json").read_text())
    assert an["metrics"]["top1"] == res["metrics"]["top1"]
    assert main(["analyze", str(out), "--k-attk", "20", "--bootstrap", "0"]) == 0
    assert (out / "analysis_k20.json").is_file()
    # faiss backend gives the same neighbour labels
    out_f = tmp_path / "att" / "faiss"
    assert main(_args(ckpts, synth_small, partition_small, out_f, extra=["--knn", "faiss"])) == 0
    for name in PAIRS:
        assert np.array_equal(np.load(out_f / f"{name}_neighb_labels.npy")[:, :5],
                              np.load(out / f"{name}_neighb_labels.npy")[:, :5])


def test_run_folders_and_swapped_models(ckpts, synth_small, partition_small, tmp_path):
    out = tmp_path / "runs"
    args = _args(ckpts, synth_small, partition_small, out, a="runA", b="runB", extra=["--crop", "corner"])
    assert main(args) == 0
    for e in (1, 2):
        res = json.loads((out / f"ep{e}" / "results.json").read_text())
        assert res["epoch"] == e and res["counts"]["A"]["attacked"] == 100
    assert main(args + ["--skip-existing"]) == 0
    # model A passed as B is refused (set mismatch recorded in the checkpoint)
    bad = _args(ckpts, synth_small, partition_small, tmp_path / "sw", a="runB/model_ep1.pth", b="runA/model_ep1.pth")
    assert main(bad) == 1


def test_malicious_checkpoint_refused(ckpts, synth_small, partition_small, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, evil)
    assert main(_args(ckpts, synth_small, partition_small, tmp_path / "x", a=str(evil))) == 1
    err = capsys.readouterr()
    assert "refused" in err.err and "pwned" not in err.out


def test_original_format_checkpoint(ckpts, synth_small, partition_small, tmp_path):
    from dejavu.ssl.model import ModelSpec, SSLModel

    torch.manual_seed(0)
    m = SSLModel(ModelSpec("smallcnn", "64-32"))
    sd = {"module.net." + k[len("backbone."):]: v for k, v in m.state_dict().items() if k.startswith("backbone.")}
    sd.update({"module." + k: v for k, v in m.state_dict().items() if k.startswith("projector.")})
    orig = tmp_path / "orig.pth"
    torch.save({"model": sd, "epoch": 5}, orig)
    out = tmp_path / "o"
    assert main(_args(ckpts, synth_small, partition_small, out, a=str(orig), b=str(orig),
                      extra=["--arch", "smallcnn", "--projector", "64-32", "--image-size", "32"])) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["models"]["A"]["source"] == "original" and res["epoch"] == 5
    # the same model on both sides: target and reference are identical, score exactly 0
    assert res["metrics"]["top1"]["dejavu_score"] == 0.0
