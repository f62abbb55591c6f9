"""`dejavu audit` on the synthetic fixtures with tiny smallcnn checkpoints: the files, the
re-scoring of stored arrays, the refusal of overlapping sets, a classifier trained
elsewhere, and the classifier's exact resume."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.analysis.metrics import Comparison, scores_from_neighbours
from dejavu.analysis.summary import compute_all
from dejavu.audit.classifier import classifier_scores
from dejavu.audit.config import AuditConfig
from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint

FAST = ["--set", "k=20", "--set", "clf_epochs=3", "--set", "n_boot=50", "--set", "clf_batch_size=16"]


@pytest.fixture(scope="module")
def ckpt(synth_small, tmp_path_factory):
    d = tmp_path_factory.mktemp("audit_ckpt")
    return make_checkpoint(d / "a.pth", scan_imagefolder(synth_small / "train"), "A", 10, seed=3)


def _args(ckpt, synth_small, partition_small, out, *extra):
    return [
        "audit",
        "--model",
        str(ckpt),
        "--partition",
        str(partition_small),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--out",
        str(out),
        *FAST,
        *extra,
    ]


def _rescore(out: Path, res: dict) -> dict:
    lab, idx = np.load(out / "labels.npy").reshape(-1), np.load(out / "attk_idxs.npy")
    t = scores_from_neighbours(
        np.load(out / "model_neighb_labels.npy"), lab, idx, res["config"]["k_attk"], res["num_classes"]
    )
    r = classifier_scores(np.load(out / "classifier_logits.npy"), lab, idx, res["config"]["confidence"])
    return json.loads(json.dumps(compute_all([Comparison("A", t, r)], res["num_classes"], n_boot=50, seed=0)))


def test_audit_writes_files_and_rescores(ckpt, synth_small, partition_small, tmp_path, capsys):
    out = tmp_path / "audits" / "a"
    assert main(_args(ckpt, synth_small, partition_small, out)) == 0
    printed = capsys.readouterr().out
    assert "one-model deja vu score" in printed and "held-out accuracy" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "dejavu-audit/1" and res["sets"] == {"audit": "bbox_A", "classifier_train": "bbox_B"}
    assert res["config"]["decode"] == "exact" and res["config"]["forward_precision"] == "fp32"  # as the original
    assert res["primary_endpoint"]["top"] == "top1" and res["primary_endpoint"]["p"] == "20"
    idx = scan_imagefolder(synth_small / "train")
    attacked = np.load(out / "attk_idxs.npy")
    bbox_a = np.load(partition_small / "10_per_class" / "bbox_A.npy")
    bbox_b = np.load(partition_small / "10_per_class" / "bbox_B.npy")
    assert set(attacked) <= set(bbox_a) and len(attacked) == res["counts"]["audit"]["attacked"] > 80
    pub = np.load(out / "public_idxs.npy")
    nidx = np.load(out / "model_neighb_idxs.npy")
    assert nidx.shape == (len(attacked), 20)
    assert set(nidx.ravel()) <= set(pub)  # dataset indices of public images
    assert np.array_equal(np.load(out / "model_neighb_labels.npy"), idx.targets[nidx])
    assert np.array_equal(np.load(out / "labels.npy"), idx.targets[attacked][:, None])
    assert np.load(out / "classifier_logits.npy").shape == (len(attacked), 10)
    # the classifier learned from bbox_B only, held part of it out, and reports that accuracy
    clf = res["classifier"]
    assert clf["trained"] and clf["n_train"] + clf["n_heldout"] == res["counts"]["classifier_train"]["attacked"]
    assert clf["n_heldout"] >= 10 and 0 <= clf["heldout_acc"] <= 1
    ck = torch.load(out / "classifier" / "classifier.pth", weights_only=True)
    assert ck["config"]["set"] == "bbox_B" and set(np.asarray(bbox_b)) & set(attacked) == set()
    assert len((out / "classifier" / "metrics.jsonl").read_text().splitlines()) == 3
    # stored arrays re-score to the stored metrics; the classifier's accuracy is its reference accuracy
    assert _rescore(out, res)["top1"] == res["metrics"]["top1"]
    m = res["metrics"]["top1"]
    assert m["dejavu_score"] == pytest.approx(m["target"]["20"] - m["reference"]["20"])
    assert m["ci95"]["dejavu_score"][0] <= m["dejavu_score"] <= m["ci95"]["dejavu_score"][1]
    rows = list(csv.DictReader((out / "examples.csv").open()))
    assert len(rows) == len(attacked) and {r["set"] for r in rows} == {"A"}
    mem = np.mean([float(r["correct_target"]) * (1 - float(r["correct_reference"])) for r in rows])
    assert res["metrics"]["quadrants"]["memorized"] == pytest.approx(mem)
    assert sum(res["metrics"]["quadrants"].values()) == pytest.approx(1.0)
    # no silent overwrite
    assert main(_args(ckpt, synth_small, partition_small, out)) == 1
    assert "--force" in capsys.readouterr().err


def test_overlapping_sets_are_refused(ckpt, synth_small, partition_small, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(_args(ckpt, synth_small, partition_small, out, "--train-set", "train_A")) == 2
    err = capsys.readouterr().err
    assert "overlap" in err and "bbox_A" in err and "train_A" in err
    assert not (out / "results.json").exists()


def test_reference_model_reused_gives_same_scores(ckpt, synth_small, partition_small, tmp_path):
    first = tmp_path / "first"
    assert main(_args(ckpt, synth_small, partition_small, first)) == 0
    again = tmp_path / "again"
    assert (
        main(
            _args(
                ckpt,
                synth_small,
                partition_small,
                again,
                "--reference-model",
                str(first / "classifier" / "classifier.pth"),
            )
        )
        == 0
    )
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert not r2["classifier"]["trained"] and not (again / "classifier").exists()
    assert r2["metrics"]["top1"] == r1["metrics"]["top1"]
    assert r2["embed_cache"]["hit"]  # the public embeddings came from the shared cache
    # a checkpoint without a classifier head is no reference
    assert main(_args(ckpt, synth_small, partition_small, tmp_path / "x", "--reference-model", str(ckpt))) == 1
    # nor one trained on the audited images
    assert (
        main(
            _args(
                ckpt,
                synth_small,
                partition_small,
                tmp_path / "y",
                "--audit-set",
                "bbox_B",
                "--reference-model",
                str(first / "classifier" / "classifier.pth"),
            )
        )
        == 2
    )


def test_classifier_resume_equals_uninterrupted(ckpt, synth_small, partition_small, tmp_path, monkeypatch):
    import dejavu.audit.classifier as C

    full = tmp_path / "full"
    assert main(_args(ckpt, synth_small, partition_small, full)) == 0
    real = C.atomic_write_text
    calls = {"n": 0}

    def dies_in_epoch_3(path, text):  # metrics.jsonl is written before last.pth each epoch
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(path, text)

    part = tmp_path / "part"
    monkeypatch.setattr(C, "atomic_write_text", dies_in_epoch_3)
    assert main(_args(ckpt, synth_small, partition_small, part)) == 130  # interrupted
    monkeypatch.setattr(C, "atomic_write_text", real)
    assert torch.load(part / "classifier" / "last.pth", weights_only=True)["epoch"] == 2
    assert main(_args(ckpt, synth_small, partition_small, part)) == 1  # neither --resume nor --force
    assert main(_args(ckpt, synth_small, partition_small, part, "--resume")) == 0
    a = torch.load(full / "classifier" / "classifier.pth", weights_only=True)["model"]
    b = torch.load(part / "classifier" / "classifier.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (full, part))
    assert r1["metrics"]["top1"] == r2["metrics"]["top1"]


def test_config_file_and_set(tmp_path):
    from dejavu.audit.config import load_audit_config

    cfg = load_audit_config("imagenet", ["clf_epochs=7", "npc=100"])
    assert cfg.clf_arch == "resnet50" and cfg.clf_epochs == 7 and cfg.npc == 100 and cfg.image_size == 224
    assert cfg.precision == "fp32" and cfg.decode == "exact"  # the paper-reproduction setting
    assert AuditConfig().clf_arch == "smallcnn"
    f = tmp_path / "a.yaml"
    f.write_text("confidence: max_prob\nk: 5\n")
    assert load_audit_config(str(f)).confidence == "max_prob"
    from dejavu import DejavuError

    with pytest.raises(DejavuError, match="unknown key"):
        load_audit_config(None, ["clf_epoch=3"])
    with pytest.raises(DejavuError, match="confidence"):
        load_audit_config(None, ["confidence=max_logit"])


def test_cli_settings_follow_the_one_config_path(tmp_path, capsys):
    """``dejavu audit`` builds AuditConfig as every stage: defaults < --config < flags < --set;
    --npc is required (flag, file or --set), and a bad key is blamed on --set (exit 2)."""
    from dejavu.audit.config import AUDIT_FLAGS
    from dejavu.cli import build_parser
    from dejavu.config import config_from_args

    def cfg(*argv):
        args = build_parser().parse_args(["audit", "--model", "m.pth", "--partition", "p", "--out", "o", *argv])
        return config_from_args(AuditConfig, args, flags=AUDIT_FLAGS, kind="audit")

    c = cfg("--config", "imagenet", "--npc", "100", "--clf-epochs", "9", "--set", "clf_epochs=11")
    assert (c.clf_arch, c.npc, c.clf_epochs) == ("resnet50", 100, 11)  # --set last, the flag over the file
    assert cfg("--config", "imagenet").npc == 300  # the file may give npc
    assert cfg("--set", "npc=10", "--confidence", "max_prob").confidence == "max_prob"
    from dejavu import UsageError

    with pytest.raises(UsageError, match="--npc is required"):
        cfg()
    with pytest.raises(UsageError, match=r"^--confidence: confidence='max_logit': choose from"):
        cfg("--npc", "10", "--confidence", "max_logit")  # a value outside the field's choices
    assert (
        main(
            [
                "audit",
                "--model",
                "m.pth",
                "--partition",
                "p",
                "--out",
                str(tmp_path),
                "--npc",
                "10",
                "--set",
                "clf_epoch=3",
            ]
        )
        == 2
    )
    assert "--set: unknown key(s) clf_epoch" in capsys.readouterr().err


def test_launcher_slurm_submits_the_local_command(ckpt, synth_small, partition_small, tmp_path, monkeypatch, capsys):
    import dejavu.launch as L

    seen = {}

    class Job:
        job_id = "42"

    def fake_submit(argv, args, *, name, log_dir=None, resume_flag=None, **kw):
        seen.update(argv=argv, name=name, resume_flag=resume_flag, log_dir=log_dir)
        return Job()

    monkeypatch.setattr(L, "submit", fake_submit)
    out = tmp_path / "slurm_audit"
    argv = _args(ckpt, synth_small, partition_small, out, "--launcher", "slurm", "--gpus-per-node", "1")
    assert main(argv) == 0
    assert "submitted SLURM job 42" in capsys.readouterr().out
    assert seen["argv"] == argv[:-4] and seen["resume_flag"] == "--resume" and seen["name"] == "audit"
    assert not (out / "results.json").exists()
    seen.clear()  # a bad setting fails here, before anything is submitted
    assert main([*argv, "--set", "clf_optimizer=rmsprop"]) == 2 and not seen
