"""Generators of realistic result folders that follow docs/CONTRACTS.md exactly
(attack: dejavu-attack/1 + examples.csv + neighbour arrays; probe: dejavu-probe/1)."""

from __future__ import annotations

import pytest
from report_data import write_attack_result, write_probe_result


@pytest.fixture
def sweep_dir(tmp_path):
    """A small sweep: epochs x (npc 300), npc sweep at epoch 200, an lr sweep, variants, probes."""
    root = tmp_path / "results"
    for ep in (50, 100, 150, 200):
        write_attack_result(root / "attack" / f"vicreg_300pc_{ep}ep", epoch=ep)
        write_probe_result(root / "probe" / f"vicreg_300pc_{ep}ep", epoch=ep)
    for npc in (100, 500):
        write_attack_result(root / "attack" / f"vicreg_{npc}pc_200ep", npc=npc, epoch=200)
        write_probe_result(root / "probe" / f"vicreg_{npc}pc_200ep", npc=npc, epoch=200)
    for lr in (0.1, 0.4):
        write_attack_result(root / "attack" / f"vicreg_300pc_200ep_lr{lr}", epoch=200, model_cfg={"lr": lr})
    write_attack_result(root / "attack" / "vicreg_300pc_200ep_corner", epoch=200, crop="corner", variant_shift=0.05)
    write_attack_result(
        root / "attack" / "vicreg_300pc_200ep_backbone", epoch=200, embed="backbone", variant_shift=0.02
    )
    (root / "attack" / "broken").mkdir(parents=True)
    (root / "attack" / "broken" / "results.json").write_text("{not json")
    (root / "other").mkdir()
    (root / "other" / "results.json").write_text('{"format": "dejavu-rcdm/1"}')
    return root
