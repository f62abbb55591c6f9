"""The audit's model side across processes: ``torchrun --nproc_per_node 2 -m dejavu
audit`` on the CPU (gloo) writes the same bytes as one process: rank 0 trains the crop
classifier, every rank embeds its share of the public set and of the crops, the sharded KNN
merges exactly, rank 0 writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dejavu.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from test_audit import _args, ckpt  # noqa: F401  (the module-scoped fixture)
from test_dist import _same_files, _torchrun, partition_control  # noqa: F401  (a fixture)


@pytest.mark.ddp
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="cached-auto"),
        pytest.param(("--cache-dir", "", "--set", "knn=torch"), id="no-cache-torch-control", marks=pytest.mark.slow),
    ],
)
def test_torchrun_two_process_audit_writes_the_same_bytes(ckpt, synth_small, partition_small, tmp_path, extra, request):  # noqa: F811
    if extra:  # with the partition's held-out control: its crops, searches and files too
        partition_small = request.getfixturevalue("partition_control")
    # the same folder for both runs (results.json records the classifier's path): run, move, rerun
    run, one = tmp_path / "run", tmp_path / "one"
    args = _args(ckpt, synth_small, partition_small, run / "aud", "--set", "batch_size=16", *extra)
    assert main(args) == 0
    run.rename(one)
    p = _torchrun(2, args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("written to") == 1  # rank 0 reports, once
    _same_files(one, run)  # the audit folder, its classifier, and the embedding cache
    res = json.loads((run / "aud" / "results.json").read_text())
    assert res["counts"]["audit"]["attacked"] > 32  # both ranks embedded crops (batches of 16)
    assert res["classifier"]["trained"]
    if not extra:
        assert len(list((run / ".embed_cache").glob("*.npy"))) == 1
    else:
        assert res["control"]["counts"]["control"]["attacked"] > 0 and (run / "aud" / "control_labels.npy").exists()
