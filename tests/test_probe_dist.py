"""The probe's feature passes across processes: ``torchrun --nproc_per_node 2 -m
dejavu probe`` on the CPU (gloo) writes the results of one process: the ranks share the
validation and training feature passes (whole batches each), rank 0 trains the head."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dejavu.cli import main

sys.path.insert(0, str(Path(__file__).parent / "attack"))
from test_dist import _torchrun
from test_probe import trained_ckpt  # noqa: F401  (the module-scoped fixture)


def _results(path: Path) -> dict:
    d = json.loads(path.read_text())
    assert d.pop("seconds") >= 0  # the one field that differs: wall time
    return d


@pytest.mark.ddp
@pytest.mark.parametrize("augment", [False, True], ids=["features-once", "augmented"])
def test_torchrun_two_process_probe_equals_one_process(
    synth_small,
    partition_small,
    trained_ckpt,  # noqa: F811
    tmp_path,
    augment,
):
    args = ["probe", "--model", str(trained_ckpt), "--partition", str(partition_small), "--npc", "10"]
    args += ["--data", str(synth_small), "--device", "cpu", "--epochs", "3", "--batch-size", "16"]
    args += ["--augment" if augment else "--no-augment"]
    # the same folder for both runs: run, move, rerun
    assert main([*args, "--out", str(tmp_path / "p")]) == 0
    (tmp_path / "p").rename(tmp_path / "one")
    p = _torchrun(2, [*args, "--out", str(tmp_path / "p")])
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("linear probe") == 1  # rank 0 reports, once
    one, two = _results(tmp_path / "one" / "results.json"), _results(tmp_path / "p" / "results.json")
    assert one == two and two["counts"]["val"] > 32  # both ranks extracted features (batches of 16)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
