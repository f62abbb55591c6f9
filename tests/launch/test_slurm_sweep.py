"""A whole sweep with one command on the real scheduler (issue 20, item 3): sweep_cmds/full_sweep.sh
submits train -> attack -> probe -> plot/report chained by afterok dependencies, it completes end
to end, and a rerun submits nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dejavu

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[2]
JOB = "--gpus-per-node 0 --cpus-per-task 1 --time 10"


def _env(synth, part, tmp: Path) -> dict[str, str]:
    cfg = tmp / "tiny.yaml"
    cfg.write_text(
        "method: vicreg\narch: smallcnn\nprojector: 16-16\nimage_size: 32\nbatch_size: 10\nlr: 2.0e-3\n"
        "absolute_lr: true\noptimizer: adamw\nwarmup_epochs: 0\naugment: mild\nknn_every: 0\n"
        "num_workers: 0\nprobe_recipe: bn-cosine\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE", "PAIRS", "SEEDS", "EPOCHS", "NAME", "AFTER")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=str(Path(dejavu.__file__).parents[1]),
        IMAGENET_DIR=str(synth),
        BBOX_DIR=str(synth / "bboxes"),
        RUNS=str(tmp / "runs"),
        NAME="synth",
        PARTITION=str(part),
        CONFIG=str(cfg),
        NPC="10",
        EPOCHS="2",
        SNAPSHOT_EVERY="2",
        KNN="torch",
        CONTROL="none",
        TRAIN_FLAGS=f"--device cpu {JOB}",
        ATTACK_FLAGS=f"--device cpu --k 20 --k-attk 10 --bootstrap 50 {JOB}",
        PROBE_FLAGS=f"--device cpu --epochs 2 {JOB}",
    )
    return env


def test_full_sweep_with_dependencies_then_rerun_submits_nothing(slurm, synth_small, partition_small, tmp_path):
    env = _env(synth_small, partition_small, tmp_path)
    cmd = ["bash", str(REPO / "sweep_cmds" / "full_sweep.sh"), "--launcher", "slurm"]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    jobs = re.findall(r"submitted SLURM job (\d+)", p.stdout)
    assert len(jobs) == 5, p.stdout  # train A and B, one attack, one probe, plot/report
    assert "afterok" in slurm.job(jobs[2])["Dependency"]  # the attack waits for the training
    run = tmp_path / "runs" / "synth"
    assert slurm.wait(jobs[-1], timeout=240) == "COMPLETED", (tmp_path / "runs").glob("slurm-plot-*.out")
    assert all(slurm.state(j) == "COMPLETED" for j in jobs)
    for f in ("attack/vicreg_10pc/ep2/results.json", "probe/vicreg_10pc_2ep/results.json", "report.html"):
        assert (run / f).is_file(), f
    assert (tmp_path / "runs" / "plots_all" / "figures.json").is_file()

    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert "submitted" not in again.stdout, again.stdout
