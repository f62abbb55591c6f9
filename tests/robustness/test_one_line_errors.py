"""Bad input that gave a traceback, a hang or a blow-up (issue 25, cases 7-9): each is one
line naming the file or setting and the problem, or a warning where the run is valid but
its numbers say little."""

from __future__ import annotations

import time

import pytest

from dejavu import UsageError


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nk: *a{levels - 1}\n"


def test_yaml_alias_bomb_refused_quickly(tmp_path):
    """~400 bytes expanding tenfold per level: refused before anything is expanded."""
    from dejavu.attack.run import AttackConfig
    from dejavu.config import load_config

    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    assert len(p.read_bytes()) < 600
    t0 = time.perf_counter()
    with pytest.raises(UsageError) as e:
        load_config(AttackConfig, p)
    assert str(e.value) == f"{p}: YAML aliases (*name) are not allowed in a config"
    with pytest.raises(UsageError, match=r"^--set k: YAML aliases"):
        load_config(AttackConfig, None, ["k=[&a [1, 1], *a, *a]"])
    assert time.perf_counter() - t0 < 1.0
