"""Launchers of issue 11: attk_cmds/attack_runs.sh passes the held-out control by default
when one exists, and train_cmds/train_seed_sweep.sh trains pairs differing only in the seed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_launchers import REPO, _commands, _env  # the shared fake layout and dry-run parser


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_attack_runs_passes_the_control(tmp_path):
    env = _env(tmp_path)
    script = REPO / "attk_cmds" / "attack_runs.sh"
    part = Path(env["PARTITION"])
    # no control anywhere: said on stderr, --control none
    assert all(_flag(c, "--control") == "none" for c in _commands(script, env))
    # the validation folder exists: it is the control, its boxes in the same folder by default
    val = Path(env["IMAGENET_DIR"]) / "val"
    val.mkdir()
    cmds = _commands(script, env)
    assert all(_flag(c, "--control") == str(val) and _flag(c, "--control-bboxes") == str(val) for c in cmds)
    # the partition has a control: preferred
    (part / "control_A.npy").write_bytes(b"")
    assert all(_flag(c, "--control") == "partition" for c in _commands(script, env))
    env["CONTROL"] = "none"
    assert all(_flag(c, "--control") == "none" for c in _commands(script, env))


def test_seed_sweep_and_seed_attacks(tmp_path):
    env = _env(tmp_path)
    env.update(PAIRS="3", SEED="7", NPC="100", EPOCHS="50")
    cmds = _commands(REPO / "train_cmds" / "train_seed_sweep.sh", env)
    outs = [_flag(c, "--out") for c in cmds]
    assert [Path(o).name for o in outs] == [f"vicreg_100pc_seed{s}_{y}" for s in (7, 8, 9) for y in "AB"]
    assert [c[c.index(f"seed={s}") - 1] == "--set" for c, s in zip(cmds, (7, 7, 8, 8, 9, 9))] == [True] * 6
    env.update(SEEDS="7 8", NPCS="100")
    att = _commands(REPO / "attk_cmds" / "attack_runs.sh", env)
    assert [Path(_flag(c, "--out")).name for c in att] == ["vicreg_100pc_seed7", "vicreg_100pc_seed8"]
    assert Path(_flag(att[0], "--model-a")).name == "vicreg_100pc_seed7_A"
