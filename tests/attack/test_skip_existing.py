"""`attack --skip-existing` over run folders says what it skipped and why, and refuses to keep
an attack made with other settings (it used to skip it silently)."""

from __future__ import annotations

import sys
from pathlib import Path

from dejavu.cli import main
from dejavu.data.imagefolder import scan_imagefolder

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_checkpoint


def test_skip_existing_reports_and_checks_settings(synth_small, partition_small, tmp_path, capsys):
    index = scan_imagefolder(synth_small / "train")
    for y in "AB":
        for ep in (1, 2):
            make_checkpoint(tmp_path / f"run_{y}" / f"model_ep{ep}.pth", index, y, 10, seed=3, epoch=ep)
    out = tmp_path / "attack"
    argv = ["attack", "--model-a", str(tmp_path / "run_A"), "--model-b", str(tmp_path / "run_B")]
    argv += ["--partition", str(partition_small), "--data", str(synth_small), "--out", str(out)]
    argv += ["--control", "none", "--set", "k=10", "--set", "npc=10"]
    assert main([*argv, "--set", "n_boot=0", "--snapshot-epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*argv, "--set", "n_boot=0", "--skip-existing"]) == 0
    printed = capsys.readouterr().out
    assert "skipped ep1: already attacked with the same settings (--skip-existing)" in printed
    assert "1 snapshot pair(s) attacked into" in printed and ", 1 skipped" in printed
    assert (out / "ep2" / "results.json").is_file()
    assert main([*argv, "--set", "n_boot=5", "--skip-existing"]) == 1  # other settings: not kept silently
    err = capsys.readouterr().err.strip()
    assert "ep1/results.json: made with other settings, n_boot=0 (asked: 5)" in err and "--force" in err
    assert err.count("\n") == 0


def test_interrupted_names_what_was_kept_and_how_to_continue(tmp_path):
    from dejavu.cli import build_parser, interrupted_text

    def ns(*argv):
        args = build_parser().parse_args(list(argv))
        args.argv = list(argv)
        return args

    run = tmp_path / "r"
    args = ns("train", "--index", "i.npy", "--out", str(run), "--force")
    assert (
        interrupted_text(args)
        == f"nothing to resume yet ({run / 'last.pth'} not written); start again with: dejavu train --index i.npy --out {run}"
    )
    run.mkdir()
    (run / "last.pth").write_bytes(b"x")
    text = interrupted_text(args)
    assert text.startswith(f"kept {run / 'last.pth'} (the state after the last finished epoch")
    assert text.endswith(f"continue with: dejavu train --index i.npy --out {run} --resume")  # no --force
    runs = tmp_path / "runs"
    (runs / "A").mkdir(parents=True)
    (tmp_path / "att" / "ep5").mkdir(parents=True)
    (tmp_path / "att" / "ep5" / "results.json").write_text("{}")
    args = ns(
        "attack",
        "--model-a",
        str(runs / "A"),
        "--model-b",
        str(runs / "A"),
        "--partition",
        "p",
        "--out",
        str(tmp_path / "att"),
    )
    assert "kept the finished snapshot pairs ep5" in interrupted_text(args) and "--skip-existing" in interrupted_text(
        args
    )
    args = ns("analyze", str(tmp_path))
    assert interrupted_text(args) == f"no output was written; rerun: dejavu analyze {tmp_path}"


def test_ctrl_c_exits_130_with_the_message(tmp_path):
    """A real SIGINT while `dejavu data synth` writes images: exit 130, one line, no traceback."""
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "synth"
    argv = [sys.executable, "-m", "dejavu", "data", "synth", "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen([*argv, "--set", "classes=50", "--set", "per_class=400"], stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not any(out.rglob("*.JPEG")) and time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == (
        f"dejavu data synth: interrupted; {out} holds incomplete output; start again with: "
        f"dejavu data synth --out {out} --workers 1 --set classes=50 --set per_class=400 --force"
    )
