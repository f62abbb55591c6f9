"""The CLI forgives typos (its own usage, "did you mean", the --set form), never takes a
prefix for a flag, prints resolved settings, and starts without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_cli import COMMANDS

from dejavu.cli import main


def test_help_and_version_import_no_torch():
    code = (
        "import sys\n"
        "from dejavu.cli import main\n"
        f"for cmd in {[[], ['--version']] + [[*c, '--help'] for c in COMMANDS] + [['betons', '--help']]!r}:\n"
        "    try:\n"
        "        main(cmd)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    heavy = [m for m in ('torch', 'torchvision', 'matplotlib', 'diffusers') if m in sys.modules]\n"
        "    assert not heavy, (cmd, heavy)\n"
        "print('OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-2000:]


def _err(capsys, argv: list[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    return capsys.readouterr().err


def test_unknown_flag_gets_the_subcommands_usage_and_the_set_form(capsys, tmp_path):
    err = _err(capsys, ["train", "--index", "i.npy", "--out", str(tmp_path), "--epochs", "5"])
    assert err.startswith("usage: dejavu train ")
    assert "dejavu train: error: unrecognized arguments: --epochs 5" in err
    assert "use --set epochs=5" in err


def test_no_prefix_matching_and_did_you_mean(capsys, tmp_path):
    err = _err(capsys, ["partition", "--data", str(tmp_path), "--out", str(tmp_path / "p"), "--per-clas", "10"])
    assert err.startswith("usage: dejavu partition ") and "did you mean --per-class?" in err
    err = _err(capsys, ["audit", "--model", "m", "--partition", "p", "--out", "o", "--set-k", "3"])
    assert "usage: dejavu audit " in err and "unrecognized arguments: --set-k 3" in err
    err = _err(capsys, ["trian"])
    assert "did you mean 'train'?" in err
    err = _err(
        capsys, ["attack", "--model-a", "a", "--model-b", "b", "--partition", "p", "--out", "o", "--epochs", "5"]
    )
    assert "did you mean --snapshot-epochs?" in err
    err = _err(capsys, ["rcdm", "train", "--ssl-model", "m", "--partition", "p", "--out", "o", "--step", "3"])
    assert err.startswith("usage: dejavu rcdm train ") and "did you mean --steps?" in err


def test_set_key_did_you_mean_and_missing_config_is_exit_1(tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "dejavu", *argv], capture_output=True, text=True)

    base = ["train", "--index", str(tmp_path / "i.npy"), "--out", str(tmp_path / "r")]
    proc = run(*base, "--set", "epoch=5")
    assert proc.returncode == 2 and "unknown key(s) epoch (did you mean epochs?); valid keys:" in proc.stderr
    proc = run(*base, "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"dejavu train: error: {tmp_path / 'missing.yaml'}: config file not found"
    proc = run(*base, "--config", "vicrge")
    assert proc.returncode == 1 and "did you mean vicreg?" in proc.stderr and "\n" not in proc.stderr.strip()


def test_print_config_round_trips_without_required_flags(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "simclr", "--set", "epochs=7", "--set", "warmup_epochs=1", "--print-config"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("# TrainConfig\n") and "\nepochs: 7\n" in text and "\nmethod: simclr\n" in text
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(SystemExit):
        main(["train", "--config", str(f), "--print-config"])
    assert capsys.readouterr().out == text  # what it prints is what --config reads back
    for stage in (["partition"], ["attack"], ["audit"], ["analyze"], ["probe"], ["demo"], ["data", "synth"]):
        with pytest.raises(SystemExit) as e:
            main([*stage, "--print-config"])
        assert e.value.code == 0 and capsys.readouterr().out.startswith("# "), stage
    assert main(["report", "runs/x", "--print-config"]) == 0  # a stage without a config: its arguments
    assert "run_dir: runs/x" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", [*COMMANDS, ["betons"]], ids=" ".join)
def test_every_subcommand_answers_with_its_own_usage(cmd, capsys):
    err = _err(capsys, [*cmd, "--bogus-flag"])
    assert err.startswith(f"usage: dejavu {' '.join(cmd)} "), err[:200]
    assert f"dejavu {' '.join(cmd)}: error: " in err


def test_unknown_flags_are_named_even_when_a_required_flag_is_missing(capsys):
    """argparse stops at the missing required flag; the unknown ones get their hint all the same."""
    err = _err(capsys, ["train", "--epochs", "5"])
    assert "required: --index, --out" in err and "unrecognized --epochs (" in err and "--set epochs=5" in err
    err = _err(capsys, ["partition", "--per-clas", "10"])
    assert "unrecognized --per-clas (did you mean --per-class?)" in err


# (stage argv, field, its flag, a bad value, the choices): each stage's config, its flag's value
# checked by the same code as a --set or --config value (dejavu.config._check_choice).
BAD_CHOICES = [
    (["probe", "--model", "m.pth", "--partition", "p", "--npc", "10", "--data", "d"], "features", "projector"),
    (["probe", "--model", "m.pth", "--partition", "p", "--npc", "10", "--data", "d"], "decode", "draft"),
    (["audit", "--model", "m.pth", "--partition", "p", "--npc", "10", "--data", "d"], "confidence", "max_prob"),
    (["rcdm", "train", "--ssl-model", "m.pth", "--partition", "p"], "image_size", 64),
    (["partition", "--data", "d"], "order", "sorted"),
    (["train", "--index", "i.npy", "--data", "d"], "method", "simclr"),
    (
        ["attack", "--model-a", "a.pth", "--model-b", "b.pth", "--partition", "p", "--npc", "10", "--data", "d"],
        "crop",
        "corner",
    ),
    (
        ["attack", "--model-a", "a.pth", "--model-b", "b.pth", "--partition", "p", "--npc", "10", "--data", "d"],
        "periphery_search",
        "largest-empty",
    ),
]


@pytest.mark.parametrize("argv,key,good", BAD_CHOICES, ids=[f"{a[0]}-{k}" for a, k, _ in BAD_CHOICES])
def test_a_bad_choice_is_one_line_alike_from_a_flag_set_and_config(argv, key, good, tmp_path, capsys):
    bad = 48 if isinstance(good, int) else "nope"
    argv = [*argv, "--out", str(tmp_path / "o")]
    flag = "--" + key.replace("_", "-")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"{key}: {bad}\n")
    errs = {}
    for where, extra in (
        (flag, [flag, str(bad)]),
        ("--set", ["--set", f"{key}={bad}"]),
        (str(cfg), ["--config", str(cfg)]),
    ):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"dejavu {' '.join(argv[: 2 if argv[0] == 'rcdm' else 1])}: error: ")
        errs[where] = err.partition(": error: ")[2]
    message = errs["--set"].removeprefix("--set: ")
    assert message.startswith(f"{key}={bad!r}: choose from ") and str(good) in message
    assert errs == {w: f"{w}: {message}" for w in errs}  # the same words, after where the value came from
