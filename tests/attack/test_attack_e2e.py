"""End-to-end attack on the synthetic fixtures with tiny smallcnn checkpoints, via the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.analysis.metrics import ARRAYS, scores_from_neighbours
from dejavu.analysis.summary import compute_all
from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint


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
    return [
        "attack",
        "--model-a",
        str(ckpts / a),
        "--model-b",
        str(ckpts / b),
        "--partition",
        str(partition_small),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(out),
        "--k",
        "20",
        "--k-attk",
        "10",
        "--bootstrap",
        "50",
        *extra,
    ]


def test_attack_writes_contract_files_and_rescores(ckpts, synth_small, partition_small, tmp_path, capsys):
    out = tmp_path / "att" / "one"
    assert main(_args(ckpts, synth_small, partition_small, out)) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "dejavu-attack/2" and res["npc"] == 10 and res["epoch"] == 1
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
    for name in ARRAYS:
        ni = np.load(out / f"{name}_neighb_idxs.npy")
        nl = np.load(out / f"{name}_neighb_labels.npy")
        ai = np.load(out / f"{name}_attk_idxs.npy")
        lab = np.load(out / f"{name}_labels.npy")
        # the original's contents: neighbours as dataset indices, labels of shape (n, 1)
        assert ni.shape == (len(ai), 20) and set(ni.ravel()) <= set(pub)
        assert np.array_equal(nl, idx.targets[ni]) and lab.shape == (len(ai), 1)
        assert np.array_equal(lab[:, 0], idx.targets[ai])
        assert np.load(out / f"top_1_conf_sweep_{name}.npy").shape == (100,)
        pairs[name] = scores_from_neighbours(nl, lab, ai, 10, 10)
    # re-scoring the stored neighbours gives exactly the stored metrics
    again = json.loads(json.dumps(compute_all(pairs, 10, n_boot=50, seed=0)))
    assert again["top1"] == res["metrics"]["top1"] and again["quadrants"] == res["metrics"]["quadrants"]
    rows = list(csv.DictReader((out / "examples.csv").open()))
    assert len(rows) == res["counts"]["A"]["attacked"] + res["counts"]["B"]["attacked"]
    assert set(rows[0]) == {
        "set",
        "index",
        "label",
        "pred_target",
        "pred_reference",
        "conf_target",
        "conf_reference",
        "correct_target",
        "correct_reference",
        "quadrant",
    }
    # quadrant shares are expectations over tie orders: mean of p_target * (1 - p_reference)
    mem, mem_b = (
        sum(float(r["correct_target"]) * (1 - float(r["correct_reference"])) for r in rows if r["set"] == y)
        / res["counts"][y]["attacked"]
        for y in "AB"
    )
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
    for name in ARRAYS:
        assert np.array_equal(
            np.load(out_f / f"{name}_neighb_labels.npy")[:, :5], np.load(out / f"{name}_neighb_labels.npy")[:, :5]
        )


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
    sd = {"module.net." + k[len("backbone.") :]: v for k, v in m.state_dict().items() if k.startswith("backbone.")}
    sd.update({"module." + k: v for k, v in m.state_dict().items() if k.startswith("projector.")})
    orig = tmp_path / "orig.pth"
    torch.save({"model": sd, "epoch": 5}, orig)
    out = tmp_path / "o"
    assert (
        main(
            _args(
                ckpts,
                synth_small,
                partition_small,
                out,
                a=str(orig),
                b=str(orig),
                extra=["--arch", "smallcnn", "--projector", "64-32", "--image-size", "64"],
            )
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    # min_crop_px is the dataset's (its synth.json), whatever resolution the model runs at
    assert res["config"]["image_size"] == 64 and res["config"]["min_crop_px"] == 8
    assert res["models"]["A"]["source"] == "original" and res["epoch"] == 5
    # the same model on both sides: target and reference are identical, score exactly 0
    assert res["metrics"]["top1"]["dejavu_score"] == 0.0


# --- the original's analysis code (dejavu_utils/plot_utils.py get_attack_data and
# dejavu_utils/utils.py get_confidence_and_topk), re-created here independently of dejavu ---


def _orig_get_confidence_and_topk(neighb_labels, k_neighbs=100, topk=(1, 5)):
    class_cts = np.apply_along_axis(np.bincount, axis=1, arr=neighb_labels[:, :k_neighbs], minlength=1000)
    pk = class_cts / class_cts.sum(axis=1, keepdims=True)  # scipy.stats.entropy(class_cts, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        attk_uncert = -np.where(pk > 0, pk * np.log(pk), 0.0).sum(axis=1)
    preds = {}
    for k in topk:
        _, topk_preds = torch.topk(torch.Tensor(class_cts), k, dim=1)
        preds[f"top_{k}"] = np.array(topk_preds).astype(int)
    return -attk_uncert, preds


def _orig_get_attack_data(folder, k_neighb, pct_confidences, topks):
    traces, rows = {}, {}
    for attk_set in ("A", "B"):
        A_idxs = np.load(folder / f"A_attk_{attk_set}_attk_idxs.npy")
        B_idxs = np.load(folder / f"B_attk_{attk_set}_attk_idxs.npy")
        B_order = [np.where(B_idxs == i)[0][0] for i in A_idxs]
        A_labels = np.load(folder / f"A_attk_{attk_set}_labels.npy")
        B_labels = np.load(folder / f"B_attk_{attk_set}_labels.npy")[B_order]
        A_neighb_labels = np.load(folder / f"A_attk_{attk_set}_neighb_labels.npy")
        B_neighb_labels = np.load(folder / f"B_attk_{attk_set}_neighb_labels.npy")[B_order]
        A_conf, A_preds = _orig_get_confidence_and_topk(A_neighb_labels, k_neighb, topk=topks)
        A_conf_order = np.argsort(A_conf)[::-1]
        B_conf, B_preds = _orig_get_confidence_and_topk(B_neighb_labels, k_neighb, topk=topks)
        B_conf_order = np.argsort(B_conf)[::-1]
        n = len(A_conf_order)
        for p in pct_confidences:
            num = int(n * p / 100)
            for tk in topks:
                for X, conf, order, preds, labels in (
                    ("A", A_conf, A_conf_order, A_preds, A_labels),
                    ("B", B_conf, B_conf_order, B_preds, B_labels),
                ):
                    sel = order[:num]
                    acc = (preds[f"top_{tk}"][sel] == labels[sel]).sum(axis=1).mean()
                    # is the original's selection well defined (no tie across the cut)?
                    cs = conf[order]
                    unambiguous = num == n or cs[num - 1] != cs[num]
                    traces[f"{X}_attk_{attk_set}_top{tk}_{p}conf"] = (acc, unambiguous, sel)
        for tk in topks:
            rows[(attk_set, tk)] = (
                (A_preds[f"top_{tk}"] == A_labels).sum(axis=1) == 1,
                (B_preds[f"top_{tk}"] == B_labels).sum(axis=1) == 1,
                A_idxs,
            )
    return traces, rows


def test_original_analysis_code_reads_our_files(ckpts, synth_small, partition_small, tmp_path):
    from torchvision.datasets import ImageFolder

    from dejavu.analysis.tables import scores_from_folder

    out = tmp_path / "att"
    assert (
        main(_args(ckpts, synth_small, partition_small, out)[:-6] + ["--k", "20", "--k-attk", "20", "--bootstrap", "0"])
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    # neighbours and attacked images as the original's ImageFolder indexes them
    samples = ImageFolder(str(synth_small / "train")).samples
    for name in ARRAYS:
        ni, nl = np.load(out / f"{name}_neighb_idxs.npy"), np.load(out / f"{name}_neighb_labels.npy")
        assert np.array_equal(np.vectorize(lambda i: samples[i][1])(ni), nl)
        ai, lab = np.load(out / f"{name}_attk_idxs.npy"), np.load(out / f"{name}_labels.npy")
        assert np.array_equal(np.array([samples[i][1] for i in ai])[:, None], lab)
    traces, rows = _orig_get_attack_data(out, 20, (5, 20, 100), (1, 5))
    ours, _ = scores_from_folder(out)
    compared = 0
    for key, (acc, unambiguous, sel) in traces.items():
        name, rest = key[:8], key[9:]
        tk, p = int(rest[3]), rest.split("_")[1][:-4]
        mine = res["metrics"][f"top{tk}"]["pairs"][name][p]
        if not unambiguous:  # the original picks an arbitrary part of the tied group
            continue
        corr = ours[name].correct(tk)[sel]
        n_tied_rows = int(((corr > 0) & (corr < 1)).sum())  # ties across the k-th place
        assert abs(mine - acc) <= n_tied_rows / len(sel) + 1e-12, key
        compared += n_tied_rows == 0
        if n_tied_rows == 0:
            assert mine == pytest.approx(acc, abs=1e-12), key
    assert compared >= 2
    # per row: wherever our expectation is 0 or 1 (no tie across the k-th place), the
    # original's arbitrary tie order gives the same correctness; top-1 rows never differ much
    for (y, tk), (a_ok, b_ok, a_idx) in rows.items():
        t, r = (f"A_attk_{y}", f"B_attk_{y}")
        assert np.array_equal(ours[t].index, a_idx)
        for mine, orig in ((ours[t].correct(tk), a_ok), (ours[r].correct(tk), b_ok)):
            whole = (mine == 0) | (mine == 1)
            assert whole.mean() > 0.5 and np.array_equal(mine[whole], orig[whole].astype(float))
            assert np.abs(mine - orig).max() < 1


def test_folders_of_the_previous_format_are_still_read(ckpts, synth_small, partition_small, tmp_path):
    """dejavu-attack/1 folders (neighbour positions into public_idxs.npy, labels (n,)) are
    read as before; an unknown format is refused with a clear message."""
    import shutil

    from dejavu import DejavuError
    from dejavu.analysis.tables import read_neighbour_idxs, scores_from_folder

    new = tmp_path / "new"
    assert main(_args(ckpts, synth_small, partition_small, new)[:-2] + ["--bootstrap", "0"]) == 0
    old = tmp_path / "old"
    shutil.copytree(new, old)
    pub = np.load(old / "public_idxs.npy")
    pos_of = {int(g): i for i, g in enumerate(pub)}
    for name in ARRAYS:
        ni = np.load(new / f"{name}_neighb_idxs.npy")
        np.save(old / f"{name}_neighb_idxs.npy", np.vectorize(pos_of.get)(ni).astype(np.int64))
        np.save(old / f"{name}_labels.npy", np.load(new / f"{name}_labels.npy")[:, 0])
    res = json.loads((old / "results.json").read_text())
    res["format"] = "dejavu-attack/1"
    (old / "results.json").write_text(json.dumps(res))
    a, _ = scores_from_folder(new)
    b, _ = scores_from_folder(old)
    for name in ARRAYS:
        assert np.array_equal(
            read_neighbour_idxs(old, name, "dejavu-attack/1"), np.load(new / f"{name}_neighb_idxs.npy")
        )
        assert np.array_equal(a[name].correct5, b[name].correct5) and np.array_equal(a[name].conf, b[name].conf)
    assert main(["analyze", str(old), "--bootstrap", "0"]) == 0
    res["format"] = "dejavu-attack/9"
    (old / "results.json").write_text(json.dumps(res))
    with pytest.raises(DejavuError, match="dejavu-attack/9"):
        scores_from_folder(old)


def test_crop_error_beside_the_public_embedding(ckpts, synth_small, partition_small, tmp_path, capsys):
    """The crops are computed in a thread beside the public embedding: their error still
    ends the attack with its one-line message, before any file is written."""
    out = tmp_path / "small"
    extra = ("--min-crop-px", "1000", "--batch-size", "8")
    assert main(_args(ckpts, synth_small, partition_small, out, extra=extra)) == 1
    assert "no attackable image" in capsys.readouterr().err
    assert not (out / "results.json").exists() and not list(out.glob("*.npy"))
