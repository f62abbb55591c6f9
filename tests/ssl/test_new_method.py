"""A new method is one module and one registry line: registered before dejavu.ssl.config is
imported (as a line in registry.py would be), it gets its config section (file, --set,
--print-config, validation), the CLI's --method choice, the ``<name>_synth`` default and a
training step, with no other file touched."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TOY = """
from dataclasses import dataclass, field

import torch.nn.functional as F

from dejavu import DejavuError
from dejavu.ssl.methods.base import Method, joint_forward


@dataclass
class ToySettings:
    scale: float = field(default=1.0, metadata={"help": "loss scale"})

    def validate(self) -> None:
        if not self.scale > 0:
            raise DejavuError(f"config toy.scale={self.scale}: must be > 0")


class Toy(Method):
    name = "toy"
    Settings = ToySettings

    def forward(self, model, views, labels, info):
        z1, z2 = joint_forward(lambda x: model(x)[1], views)
        return self.cfg.method_settings.scale * F.mse_loss(z1, z2), {}
"""

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = """
import sys
sys.path.insert(0, {tmp!r})
from dejavu.ssl import registry
registry.METHODS["toy"] = "toy_method:Toy"  # the one registry line

import torch
from dejavu import UsageError
from dejavu.cli import build_parser, main
from dejavu.ssl.config import load_train_config
from dejavu.ssl.methods.base import StepInfo
from dejavu.ssl.train import build_engine

cfg = load_train_config(None, ["toy.scale=2", "projector=16-16", "warmup_epochs=0"], method="toy")
assert cfg.toy.scale == 2.0 and cfg.to_dict()["toy"] == {{"scale": 2.0}}
assert load_train_config("toy_synth").method == "toy"
try:
    load_train_config(None, ["toy.scale=0"], method="toy")
    raise SystemExit("toy.scale=0 accepted")
except UsageError as e:
    assert "toy.scale=0.0: must be > 0" in str(e), e
eng = build_engine(cfg, torch.device("cpu"))
x = torch.randn(4, 3, 16, 16)
loss, _ = eng.trainable([x, x.flip(3)], torch.zeros(4, dtype=torch.long), StepInfo(0, 1, 0))
assert torch.isfinite(loss)
assert "toy" in build_parser().format_help()
try:
    main(["train", "--method", "toy", "--data", "d", "--index", "i.npy", "--out", "o", "--print-config"])
except SystemExit:
    pass
"""


def test_a_new_method_needs_one_module_and_one_registry_line(tmp_path):
    (tmp_path / "toy_method.py").write_text(TOY)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(tmp=str(tmp_path)))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "method: toy" in proc.stdout and "toy:\n  scale: 1.0" in proc.stdout
