"""The online monitor (dejavu.monitor): its numbers equal `dejavu audit`'s on the same model,
subsample and classifier; its state (subsample, classifier) is recorded and reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.monitor import Monitor, MonitorConfig, summarize

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint


def audit_numbers(ckpt, synth_small, partition_small, out, mon: Monitor) -> dict:
    """`dejavu audit` on a checkpoint with the monitor's subsample and classifier: its numbers
    in the monitor's terms."""
    args = ["audit", "--model", str(ckpt), "--partition", str(partition_small), "--npc", "10"]
    args += ["--data", str(synth_small), "--out", str(out), *mon.audit_args()]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    return summarize(res["metrics"], res["classifier"], res["counts"]["audit"]["attacked"], res["counts"]["public"])


def test_monitor_equals_audit(synth_small, partition_small, audit_yaml, tmp_path):
    from dejavu.ssl.checkpoint import load_model

    ckpt = make_checkpoint(tmp_path / "a.pth", scan_imagefolder(synth_small / "train"), "A", 10, seed=3)
    cfg = MonitorConfig(crops=40, public_per_class=15, seed=1, audit=str(audit_yaml))
    mon = Monitor(tmp_path / "mon", partition_small, synth_small, npc=10, audited="A", cfg=cfg, image_size=32)
    model = load_model(ckpt).model
    model.train()
    got = mon.score(model, epoch=1)
    assert model.training  # its mode is restored
    assert got["n_crops"] == 40 and got["n_public"] == 150 and got["epoch"] == 1
    assert 0 < got["classifier_heldout_acc"] <= 1 and got["score_ci95"][0] <= got["score"] <= got["score_ci95"][1]
    sub = np.load(tmp_path / "mon" / "audit_set.npy")
    assert set(sub) <= set(np.load(partition_small / "10_per_class" / "bbox_A.npy"))
    assert json.loads((tmp_path / "mon" / "ep1.json").read_text())["epoch"] == 1
    want = audit_numbers(ckpt, synth_small, partition_small, tmp_path / "audit", mon)
    assert {k: got[k] for k in want} == want
    # an embedding function (the module gets eval mode) scores as the model's own embed()
    again = mon.score(model, embed=lambda x: model.projector(model.backbone(x)))
    assert {k: again[k] for k in want} == want

    # reopened: the recorded subsample and the cached classifier are reused, not redrawn/retrained
    stamp = mon.classifier_path.stat().st_mtime_ns
    mon2 = Monitor(tmp_path / "mon", partition_small, synth_small, npc=10, audited="A", cfg=cfg, image_size=32)
    assert mon2.classifier_path.stat().st_mtime_ns == stamp
    assert {k: mon2.score(model)[k] for k in want} == want
    with pytest.raises(DejavuError, match=r"other settings \(crops"):
        Monitor(
            tmp_path / "mon", partition_small, synth_small, npc=10, cfg=MonitorConfig(crops=30, audit=str(audit_yaml))
        )
