"""Launchers of issue 28: the training design (independent by default), a partition per seed
pair, and the paper's attack arithmetic (fp32, exact decoding)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_launchers import REPO, _commands, _env  # the shared fake layout and dry-run parser


def _sets(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


def test_training_design_and_partition_per_pair(tmp_path):
    env = _env(tmp_path)
    env.update(PAIRS="2", SEED="3", NPC="100", EPOCHS="50")
    sweep = REPO / "train_cmds" / "train_seed_sweep.sh"
    cmds = _commands(sweep, env)
    assert all("design=independent" in _sets(c) for c in cmds)  # the default: B seeded apart from A
    part = env["PARTITION"]
    assert [c[c.index("--index") + 1] for c in cmds] == [
        f"{part}/100_per_class/train_{y}.npy" for _ in (3, 4) for y in "AB"
    ]
    env.update(DESIGN="coupled", PARTITION_PER_PAIR="1")
    cmds = _commands(sweep, env)
    assert all("design=coupled" in _sets(c) for c in cmds)
    assert [c[c.index("--index") + 1] for c in cmds] == [
        f"{part}/seed{s}/100_per_class/train_{y}.npy" for s in (3, 4) for y in "AB"
    ]
    env.update(SEEDS="3 4", NPCS="100")
    att = _commands(REPO / "attk_cmds" / "attack_runs.sh", env)
    assert [c[c.index("--partition") + 1] for c in att] == [f"{part}/seed3", f"{part}/seed4"]
    assert all(c[c.index("--precision") + 1] == "fp32" and c[c.index("--decode") + 1] == "exact" for c in att)
