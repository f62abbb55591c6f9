"""Every subcommand has a --help that exits cleanly, and user errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dejavu.cli import build_parser, main

COMMANDS = [
    ["data", "synth"],
    ["data", "info"],
    ["partition"],
    ["train"],
    ["attack"],
    ["audit"],
    ["analyze"],
    ["probe"],
    ["plot"],
    ["report"],
    ["rcdm", "train"],
    ["rcdm", "reconstruct"],
    ["demo"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 200  # explains, not just a usage line


def test_all_stages_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {
        "data",
        "partition",
        "train",
        "attack",
        "audit",
        "analyze",
        "probe",
        "plot",
        "report",
        "rcdm",
        "demo",
        "betons",
    }


def test_user_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dejavu", "data", "info", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert proc.returncode == 1  # a runtime/data error
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_error_exit_2_names_the_set_key_not_the_packaged_file(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dejavu",
            "train",
            "--config",
            "vicreg_synth",
            "--index",
            str(tmp_path / "i.npy"),
            "--out",
            str(tmp_path / "r"),
            "--set",
            "epochz=3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "--set: unknown key(s) epochz" in err and "valid keys:" in err and "epochs" in err
    assert ".yaml" not in err
