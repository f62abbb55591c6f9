"""Every launcher script (train_cmds/, attk_cmds/, lin_probe_cmds/, plot_cmds/) run with
--dry-run: it exits 0, prints only `dejavu ...` commands (one per line, shell-quoted),
and every command parses with the real CLI parser. Scripts are discovered, so launchers
added later are checked too. Files whose name starts with "_" are sourced libraries.

The environment points at a fake layout under tmp (a run with snapshots, attack and
probe results) so scripts that enumerate files on disk have something to enumerate.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from dejavu.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DIRS = ("train_cmds", "attk_cmds", "lin_probe_cmds", "plot_cmds", "sweep_cmds")
SCRIPTS = sorted(p for d in DIRS for p in (REPO / d).glob("*.sh") if not p.name.startswith("_"))


def _env(tmp: Path) -> dict[str, str]:
    runs = tmp / "runs"
    for name in ("imagenet", "synth"):
        run = runs / name
        for method in ("vicreg", "simclr"):
            for npc in (100, 300):
                for s in ("A", "B"):
                    d = run / "train" / f"{method}_{npc}pc_{s}"
                    d.mkdir(parents=True, exist_ok=True)
                    for e in (50, 100):
                        (d / f"model_ep{e}.pth").write_bytes(b"")
        (run / "partition").mkdir(parents=True, exist_ok=True)
        (run / "partition" / "manifest.json").write_text("{}")
        for sub in ("attack/vicreg_300pc_100ep", "probe/vicreg_300pc_100ep"):
            (run / sub).mkdir(parents=True, exist_ok=True)
            (run / sub / "results.json").write_text("{}")
    (tmp / "imagenet" / "train").mkdir(parents=True, exist_ok=True)
    (tmp / "bbox" / "Annotation").mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NAME", "METHOD", "NPC", "NPCS", "EPOCH", "EPOCHS", "FORCE", "PARAMS")
    }
    env.update(
        IMAGENET_DIR=str(tmp / "imagenet"),
        BBOX_DIR=str(tmp / "bbox"),
        RUNS=str(runs),
        PARTITION=str(runs / "imagenet" / "partition"),
        SLURM_PARTITION="testpart",
    )
    return env


def _commands(script: Path, env: dict[str, str], *args: str) -> list[list[str]]:
    proc = subprocess.run(
        ["bash", str(script), "--dry-run", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"{script.name} --dry-run {' '.join(args)} failed:\n{proc.stderr}"
    cmds = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        argv = shlex.split(line)
        assert argv[0] == "dejavu", f"{script.name}: dry-run printed a non-command line: {line!r}"
        cmds.append(argv)
    return cmds


def test_there_are_launchers():
    names = {p.relative_to(REPO).as_posix() for p in SCRIPTS}
    assert {"lin_probe_cmds/probe_epoch_sweep.sh", "plot_cmds/plot_all.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_dry_run_commands_parse(script, tmp_path):
    env = _env(tmp_path)
    before = sorted((tmp_path / "runs").rglob("results.json"))
    parser = build_parser()
    variants = [()]
    if "--launcher" in script.read_text():
        variants.append(("--launcher", "slurm"))
    for args in variants:
        cmds = _commands(script, env, *args)
        assert cmds, f"{script.name} --dry-run {' '.join(args)} printed no command"
        for argv in cmds:
            try:
                ns = parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{script.name}: the CLI rejects: {shlex.join(argv)}")
            assert getattr(ns, "func", None), shlex.join(argv)
            if args and hasattr(ns, "launcher"):
                assert ns.launcher == "slurm", f"{script.name}: --launcher slurm not passed through: {shlex.join(argv)}"
    # a dry run runs nothing: no results appeared in the fake layout
    assert sorted((tmp_path / "runs").rglob("results.json")) == before
    assert not list((tmp_path / "runs").rglob("report.html"))


def test_probe_sweep_uses_snapshots_on_disk_and_skips_done(tmp_path):
    env = _env(tmp_path)
    script = REPO / "lin_probe_cmds" / "probe_epoch_sweep.sh"
    env.update(NAME="synth", METHOD="simclr", NPC="100")
    cmds = _commands(script, env)
    models = [a[a.index("--model") + 1] for a in cmds]
    assert [Path(m).name for m in models] == ["model_ep50.pth", "model_ep100.pth"]
    assert all("simclr_100pc_A" in m for m in models)
    done = Path(cmds[0][cmds[0].index("--out") + 1])
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    assert len(_commands(script, env)) == 1
    env["FORCE"] = "1"
    assert "--force" in _commands(script, env)[0]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_launchers_are_shellcheck_clean():
    proc = subprocess.run(
        ["shellcheck", "-x", *map(str, SCRIPTS)], check=False, capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout
