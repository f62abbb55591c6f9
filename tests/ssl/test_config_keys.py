"""TrainConfig's one config path: method-owned keys (flat or nested under the method's
name, validated by the method), --method choices from the registry, unknown keys reported
as the user's mistake with the valid ones, old flat configs still loading and resuming."""

import argparse

import pytest

from dejavu import UsageError
from dejavu.cli import build_parser, main
from dejavu.ssl.config import TrainConfig, load_train_config, resume_mismatch
from dejavu.ssl.registry import METHODS, get_method


def test_every_method_owns_existing_flat_fields():
    fields = set(TrainConfig.__dataclass_fields__)
    owned = {k for m in METHODS for k in get_method(m).config_keys}
    assert owned <= fields
    # every method hyper-parameter of TrainConfig has an owner
    assert {f for f in fields if f.split("_")[0] in ("vicreg", "simclr", "barlow", "byol", "dino", "ema")} <= owned


def test_nested_method_keys_map_onto_the_flat_fields(tmp_path):
    c = load_train_config(None, ["vicreg.sim=30", "vicreg.cov=2"], method="vicreg")
    assert (c.vicreg_sim, c.vicreg_cov, c.vicreg_std) == (30.0, 2.0, 25.0)
    b = load_train_config(None, ["byol.ema_start=0.99", "byol.hidden=64"], method="byol")
    assert (b.ema_start, b.byol_hidden) == (0.99, 64)
    f = tmp_path / "d.yaml"
    f.write_text("method: dino\ndino:\n  teacher_temp: 0.05\n  out_dim: 128\n")
    d = load_train_config(f)
    assert (d.dino_teacher_temp, d.dino_out_dim) == (0.05, 128)
    # the nested and the flat spelling give the same config (and so the same resume check)
    flat = load_train_config(None, ["vicreg_sim=30", "vicreg_cov=2"], method="vicreg")
    assert flat == c and resume_mismatch(flat.to_dict(), c) == []


def test_unknown_nested_key_names_the_methods_keys(tmp_path):
    with pytest.raises(
        UsageError,
        match=r"--set: unknown key vicreg.temperature; method vicreg takes "
        r"vicreg.sim, vicreg.std, vicreg.cov",
    ):
        load_train_config(None, ["vicreg.temperature=0.1"], method="vicreg")
    f = tmp_path / "bad.yaml"
    f.write_text("method: simclr\nsimclr:\n  tau: 0.1\n")
    with pytest.raises(UsageError, match=r"bad.yaml: unknown key simclr.tau; method simclr takes simclr.temperature"):
        load_train_config(f)


def test_methods_validate_their_own_keys():
    with pytest.raises(UsageError, match=r"ema_start=0\.999, ema_end=0\.9"):
        load_train_config(None, ["byol.ema_start=0.999", "byol.ema_end=0.9"], method="byol")
    with pytest.raises(UsageError, match="dino needs a projector"):
        load_train_config(None, ["projector=none"], method="dino")
    with pytest.raises(UsageError, match="dino_warmup_teacher_temp_epochs=-1: must be >= 0"):
        load_train_config(None, ["dino.warmup_teacher_temp_epochs=-1"], method="dino")
    # a key owned by another method is not that method's business: vicreg ignores a bad ema
    assert load_train_config(None, ["ema_start=0.999", "ema_end=0.9"], method="vicreg").ema_start == 0.999


def _train_parser():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_cli_method_choices_come_from_the_registry():
    method = next(a for a in _train_parser()._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(METHODS)


def test_train_cli_unknown_key_is_a_usage_error(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path), "--index", str(tmp_path / "i.npy"), "--out", str(tmp_path / "o")]
    assert main(argv + ["--set", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "--set: unknown key(s) epoch (did you mean epochs?); valid keys:" in err and "epochs" in err
    assert main(argv + ["--set", "vicreg.foo=1"]) == 2
    assert "method vicreg takes vicreg.sim" in capsys.readouterr().err
    assert main(argv + ["--config", "simclr", "--method", "vicreg"]) == 2
    assert "config is for method 'simclr'" in capsys.readouterr().err
