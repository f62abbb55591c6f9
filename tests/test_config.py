from dataclasses import dataclass

import pytest

from dejavu import DejavuError
from dejavu.config import load_config


@dataclass
class Cfg:
    epochs: int = 10
    lr: float = 0.1
    arch: str = "smallcnn"
    amp: bool = False
    npcs: list[int] | None = None


def test_file_and_sets(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 5\narch: resnet18\n")
    c = load_config(Cfg, p, ["lr=0.3", "amp=true", "npcs=1,2"])
    assert (c.epochs, c.lr, c.arch, c.amp, c.npcs) == (5, 0.3, "resnet18", True, [1, 2])


def test_errors(tmp_path):
    with pytest.raises(DejavuError, match="unknown key.*valid keys"):
        load_config(Cfg, None, ["epoch=3"])
    with pytest.raises(DejavuError, match="expected int"):
        load_config(Cfg, None, ["epochs=abc"])
    with pytest.raises(DejavuError, match="not found"):
        load_config(Cfg, tmp_path / "none.yaml")
