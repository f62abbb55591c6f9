"""Untrusted files: checkpoints of another shape, a pickle that would run code, a truncated
checkpoint, a hand-made partition whose sets overlap."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from robustness_cli import assert_one_line_error, attack_args, make_checkpoint, run_cli

from dejavu import DejavuError
from dejavu.data.imagefolder import scan_imagefolder
from dejavu.ssl.checkpoint import load_model


@pytest.mark.parametrize("override", [{"arch": "smallcnn_wide"}, {"projector": "32-8"}])
def test_checkpoint_of_another_architecture_or_projector(corpus, override):
    """The message names the file and a differing key or shape (wording owned by ssl/checkpoint)."""
    p = corpus / "ckpt" / "A.pth"
    with pytest.raises(DejavuError) as e:
        load_model(p, **override)
    msg = str(e.value)
    assert msg.startswith(f"{p}:") and "\n" not in msg
    assert ("backbone." in msg or "projector." in msg) or "torch.Size" in msg, msg


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_pickle_payload_never_runs(tmp_path, fmt):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    obj = {"model": {"w": torch.zeros(1)}, "config": _Payload(marker)}
    if fmt == "torch_zip":
        torch.save(obj, p)
    else:
        p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DejavuError, match=rf"^{p}: refused to load"):
        load_model(p)
    assert not marker.exists()


def test_pickle_payload_via_cli(corpus, tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pth"
    torch.save({"model": {}, "x": _Payload(marker)}, p)
    proc = run_cli(*attack_args(corpus, tmp_path / "att", a=p))
    assert_one_line_error(proc, str(p), "refused to load")
    assert not marker.exists() and not (tmp_path / "att").exists()


def test_truncated_checkpoint(corpus, tmp_path):
    p = tmp_path / "half.pth"
    data = (corpus / "ckpt" / "A.pth").read_bytes()
    for cut in (len(data) // 2, 10, 0):
        p.write_bytes(data[:cut])
        with pytest.raises(DejavuError, match=rf"^{p}: (cannot read checkpoint|refused to load)") as e:
            load_model(p)
        assert "\n" not in str(e.value)


def test_overlapping_partition_refused_by_the_attack(corpus, tmp_path):
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import InvariantError

    paths = DataPaths.resolve(data=corpus / "data")
    cfg = AttackConfig(k=8, k_attk=8, npc=4, n_boot=0, device="cpu")
    cases = {"bbox_B": ("bbox_A", "bbox_B.npy"), "train_A": ("public", "train_A.npy")}
    for i, (victim, (donor, named)) in enumerate(cases.items()):
        part = tmp_path / f"p{i}"
        shutil.copytree(corpus / "part", part)
        d = part / "4_per_class"
        src = np.load(d / f"{donor}.npy")
        arr = np.load(d / f"{victim}.npy")
        np.save(d / f"{victim}.npy", np.sort(np.concatenate([arr, src[:1]])))
        with pytest.raises(InvariantError, match=rf"{named} .*overlap|overlap.*{named}|{named}"):
            attack(corpus / "ckpt" / "A.pth", corpus / "ckpt" / "B.pth", part, paths, tmp_path / f"a{i}", cfg)
        assert not (tmp_path / f"a{i}").exists()
    # through the CLI: one line, exit 2
    proc = run_cli(*attack_args(corpus, tmp_path / "cli", part=tmp_path / "p0"))
    assert_one_line_error(proc, str(tmp_path / "p0" / "4_per_class" / "bbox_A.npy"), "overlap")


def test_checkpoint_made_on_another_dataset(corpus, tmp_path):
    from dejavu.data.synth import SynthConfig, generate

    generate(tmp_path / "o", SynthConfig(classes=3, per_class=8, size=32, annotated_fraction=0.5, seed=1), force=True)
    other = scan_imagefolder(tmp_path / "o" / "train")
    a = make_checkpoint(tmp_path / "A.pth", other, "A", 4, seed=1)
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths

    with pytest.raises(DejavuError, match=rf"checkpoint {a} was made on dataset"):
        attack(
            a,
            corpus / "ckpt" / "B.pth",
            corpus / "part",
            DataPaths.resolve(data=corpus / "data"),
            tmp_path / "att",
            AttackConfig(npc=4, k=8, k_attk=8, n_boot=0, device="cpu"),
        )
