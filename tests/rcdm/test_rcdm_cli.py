"""`dejavu rcdm train|reconstruct` settings through the shared config path: flags typed and
defaulted by the dataclass fields, --config NAME (packaged) < flags < --set, usage errors."""

import argparse

import pytest

from dejavu import UsageError
from dejavu.cli import build_parser, main
from dejavu.config import config_from_args
from dejavu.rcdm.cli import RCDM_FLAGS, RECON_FLAGS
from dejavu.rcdm.model import RCDMConfig
from dejavu.rcdm.reconstruct import ReconstructConfig


def _parse(*argv):
    return build_parser().parse_args(["rcdm", *argv])


TRAIN = ["train", "--ssl-model", "m.pth", "--partition", "p", "--data", "d", "--out", "o"]


def test_train_flags_come_from_rcdm_config():
    args = _parse(*TRAIN, "--config", "paper128", "--image-size", "64", "--steps", "7", "--set", "lr=0.001")
    cfg = config_from_args(RCDMConfig, args, flags=RCDM_FLAGS, kind="rcdm")
    assert (cfg.image_size, cfg.steps, cfg.lr) == (64, 7, 0.001)  # flags and --set over the packaged file
    assert cfg.block_out_channels != RCDMConfig().block_out_channels  # the rest from paper128
    args = _parse(*TRAIN, "--image-size", "48")  # choices from RCDMConfig's metadata, compared as ints
    with pytest.raises(UsageError, match=r"^--image-size: image_size=48: choose from 32, 64, 128, 256$"):
        config_from_args(RCDMConfig, args, flags=RCDM_FLAGS, kind="rcdm")


def test_train_and_reconstruct_usage_errors(capsys):
    assert main(["rcdm", *TRAIN, "--set", "step=3"]) == 2
    assert "unknown key(s) step (did you mean steps?); valid keys:" in capsys.readouterr().err
    assert (
        main(["rcdm", "reconstruct", "--attack", "a", "--rcdm-a", "x", "--rcdm-b", "y", "--out", "o", "--samples", "0"])
        == 2
    )
    assert "samples=0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--select 'best:3'"):
        config_from_args(ReconstructConfig, argparse.Namespace(config=None, set=["select=best:3"]), RECON_FLAGS)


def test_help_shows_defaults_the_same_way(capsys):
    for sub in ("train", "reconstruct"):
        with pytest.raises(SystemExit):
            main(["rcdm", sub, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for flag in ("--steps", "--batch-size", "--config") if sub == "train" else ("--samples", "--neighbours"):
            assert flag in out
        assert ("(default: 2000)" in out and "(default: tiny)" in out) if sub == "train" else "(default: 4)" in out
