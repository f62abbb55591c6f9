"""TrainConfig's one config path: each method's settings in its own section (a dataclass of
the method module, validated by it), the method lists taken from the registry, allowed
values checked once from the field metadata, unknown keys reported with the valid ones, and
old flat configs (files, --set, checkpoints' stored configs) still loading and resuming."""

import argparse
import dataclasses

import pytest

from dejavu import UsageError
from dejavu.cli import build_parser, main
from dejavu.config import packaged_config
from dejavu.ssl.config import FLAT_METHOD_KEYS, TrainConfig, load_train_config, resume_mismatch
from dejavu.ssl.registry import METHODS, get_method


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_has_its_section_and_short_packaged_configs(method):
    cfg = load_train_config(None, method=method)
    section = getattr(cfg, method)
    assert dataclasses.is_dataclass(section) and type(section) is get_method(method).Settings
    assert cfg.method_settings is section and cfg.to_dict()[method] == dataclasses.asdict(section)
    # the paper setting: a short file over the shared base; <method>_synth: the defaults (+ its file)
    paper = load_train_config(method)
    assert (paper.method, paper.arch, paper.optimizer, paper.batch_size) == (method, "resnet101", "lars", 1024)
    assert len(packaged_config("ssl", f"{method}.yaml").read_text().splitlines()) <= 8
    synth = load_train_config(f"{method}_synth")
    assert (synth.method, synth.arch, synth.image_size, synth.absolute_lr) == (method, "smallcnn", 32, True)
    assert synth == cfg  # the default config of --method is <method>_synth


def test_every_packaged_key_differs_from_the_default():
    """A packaged YAML lists only what differs from what it starts from (the defaults or its _base_)."""
    from dejavu.config import read_yaml, safe_yaml

    defaults = TrainConfig().to_dict()
    for f in sorted(packaged_config("ssl").rglob("*.yaml")):
        own = safe_yaml(f.read_text(), str(f))
        base = read_yaml(f.parent / own["_base_"]) if "_base_" in own else {}
        for k, v in own.items():
            if k in ("_base_", "method"):  # method: what the file is for, said even when the default
                continue
            start = base.get(k, defaults.get(k))
            if isinstance(v, dict):
                assert all(start[s] != x for s, x in v.items()), (f, k, v)
            else:
                assert v != start, f"{f}: {k}: {v!r} is what it starts from"


def test_flat_keys_of_old_configs_map_into_the_sections():
    for flat, dotted in FLAT_METHOD_KEYS.items():
        for d in dotted:
            m, key = d.split(".")
            assert key in {f.name for f in dataclasses.fields(get_method(m).Settings)}, (flat, d)
    c = load_train_config(None, ["vicreg.sim=30", "vicreg.cov=2"], method="vicreg")
    assert (c.vicreg.sim, c.vicreg.cov, c.vicreg.std) == (30.0, 2.0, 25.0)
    flat = load_train_config(None, ["vicreg_sim=30", "vicreg_cov=2"], method="vicreg")
    assert flat == c and resume_mismatch(flat.to_dict(), c) == []
    b = load_train_config(None, ["byol.ema_start=0.99", "byol.hidden=64"], method="byol")
    assert (b.byol.ema_start, b.byol.hidden) == (0.99, 64)
    old = load_train_config(None, ["ema_start=0.99", "byol_hidden=64"], method="byol")
    assert old.byol == b.byol and old.dino.ema_start == 0.99  # ema_start was BYOL's and DINO's


def test_an_old_style_yaml_file_loads(tmp_path):
    """A full config file of the flat format (as the packaged dino.yaml was) gives the same config."""
    f = tmp_path / "old_dino.yaml"
    f.write_text(
        "method: dino\narch: resnet101\nprojector: '2048-2048-256'\nimage_size: 224\nepochs: 1000\n"
        "batch_size: 1024\nlr: 0.2\nabsolute_lr: false\noptimizer: lars\nweight_decay: 1.0e-6\nmomentum: 0.9\n"
        "lars_eta: 0.001\nwarmup_epochs: 10\nfinal_lr_ratio: 0.001\naugment: paper\nmin_res: 160\nmax_res: 192\n"
        "start_ramp: 70\nend_ramp: 85\nseed: 0\ndesign: independent\nsnapshot_every: 50\nknn_every: 50\n"
        "knn_k: 20\nnum_workers: 10\ndata_mode: loader\namp: bf16\nchannels_last: true\nprobe_recipe: original\n"
        "ema_start: 0.996\nema_end: 1.0\ndino_out_dim: 65536\ndino_teacher_temp: 0.07\n"
        "dino_warmup_teacher_temp: 0.04\ndino_warmup_teacher_temp_epochs: 50\ndino_student_temp: 0.1\n"
        "dino_center_momentum: 0.9\n"
    )
    old, new = load_train_config(f), load_train_config("dino")
    assert {k: v for k, v in old.to_dict().items() if k != "byol"} == {
        k: v for k, v in new.to_dict().items() if k != "byol"
    }
    assert old.byol.ema_start == 0.996  # the flat ema keys fill BYOL's section too


def _old_style_stored_config() -> dict:
    """A checkpoint's stored config as written before the method sections (flat keys)."""
    d = {k: v for k, v in TrainConfig().to_dict().items() if k not in METHODS}
    d.update(method="dino", projector="64-32", npc=10, set="A", train_seed=0)
    d.update(vicreg_sim=25.0, vicreg_std=25.0, vicreg_cov=1.0, simclr_temperature=0.15, barlow_lambda=0.0051)
    d.update(ema_start=0.99, ema_end=1.0, byol_hidden=4096, dino_out_dim=64, dino_teacher_temp=0.05)
    d.update(dino_warmup_teacher_temp=0.04, dino_warmup_teacher_temp_epochs=50, dino_student_temp=0.1)
    d.update(dino_center_momentum=0.9)
    return d


DINO_SETS = ["projector=64-32", "dino.out_dim=64", "dino.teacher_temp=0.05", "dino.ema_start=0.99"]


def test_an_old_style_stored_config_loads_and_resumes():
    old = _old_style_stored_config()
    known = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in TrainConfig.normalize_keys(old, "ckpt").items() if k in known})
    assert (cfg.dino.out_dim, cfg.dino.teacher_temp, cfg.dino.ema_start, cfg.byol.hidden) == (64, 0.05, 0.99, 4096)
    same = load_train_config(None, DINO_SETS, method="dino")
    assert resume_mismatch(old, same) == []  # exact resume of a run written before the sections
    other = load_train_config(None, ["projector=64-32", "dino.out_dim=64", "dino.ema_start=0.99"], method="dino")
    assert resume_mismatch(old, other) == ["dino.teacher_temp (saved 0.05, now 0.07)"]
    # another method's section does not change this run's weights: not compared
    assert resume_mismatch(old, load_train_config(None, [*DINO_SETS, "vicreg.sim=1"], method="dino")) == []
    # a stored config (dict) round-trips into the same TrainConfig, sections included
    assert TrainConfig(**same.to_dict()) == same


def test_unknown_section_key_names_the_methods_keys(tmp_path):
    with pytest.raises(
        UsageError,
        match=r"--set: unknown key vicreg.temperature; method vicreg takes vicreg.sim, vicreg.std, vicreg.cov",
    ):
        load_train_config(None, ["vicreg.temperature=0.1"], method="vicreg")
    f = tmp_path / "bad.yaml"
    f.write_text("method: simclr\nsimclr:\n  tau: 0.1\n")
    with pytest.raises(UsageError, match=r"bad.yaml: unknown key simclr.tau; method simclr takes simclr.temperature"):
        load_train_config(f)
    with pytest.raises(UsageError, match=r"unknown key supervised.x; method supervised takes no keys of its own"):
        load_train_config(None, ["supervised.x=1"], method="supervised")


def test_methods_validate_their_own_settings():
    with pytest.raises(UsageError, match=r"byol.ema_start=0\.999, byol.ema_end=0\.9"):
        load_train_config(None, ["byol.ema_start=0.999", "byol.ema_end=0.9"], method="byol")
    with pytest.raises(UsageError, match="dino needs a projector"):
        load_train_config(None, ["projector=none"], method="dino")
    with pytest.raises(UsageError, match=r"dino.warmup_teacher_temp_epochs=-1: must be >= 0"):
        load_train_config(None, ["dino.warmup_teacher_temp_epochs=-1"], method="dino")
    with pytest.raises(UsageError, match=r"expected float, got 'abc'"):
        load_train_config(None, ["vicreg.sim=abc"], method="vicreg")
    with pytest.raises(UsageError, match=r"config vicreg=3: expected the method's settings, e.g. vicreg.KEY=VALUE"):
        load_train_config(None, ["vicreg=3"], method="vicreg")


@pytest.mark.parametrize("field", ["optimizer", "amp", "augment", "data_mode", "augment_backend", "design"])
def test_allowed_values_checked_once_for_files_and_set(field, tmp_path):
    choices = TrainConfig.__dataclass_fields__[field].metadata["choices"]
    with pytest.raises(UsageError, match=rf"^--set: {field}='nope': choose from {', '.join(choices)}$"):
        load_train_config(None, [f"{field}=nope"])
    f = tmp_path / "c.yaml"
    f.write_text(f"{field}: nope\n")
    with pytest.raises(UsageError, match=rf"c.yaml: {field}='nope': choose from"):
        load_train_config(f)
    assert getattr(load_train_config(None, [f"{field}={choices[-1]}"]), field) == choices[-1]


def _train_parser():
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_cli_method_choices_come_from_the_registry():
    method = next(a for a in _train_parser()._actions if a.dest == "method")
    assert tuple(METHODS) == TrainConfig.__dataclass_fields__["method"].metadata["choices"]
    assert method.metavar == "{" + ",".join(METHODS) + "}"  # shown in --help, checked with the file's values
    assert all(m in _train_parser().description for m in METHODS)


def test_train_cli_unknown_key_is_a_usage_error(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path), "--index", str(tmp_path / "i.npy"), "--out", str(tmp_path / "o")]
    assert main(argv + ["--set", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "--set: unknown key(s) epoch (did you mean epochs?); valid keys:" in err and "epochs" in err
    assert main(argv + ["--set", "vicreg.foo=1"]) == 2
    assert "method vicreg takes vicreg.sim" in capsys.readouterr().err
    assert main(argv + ["--config", "simclr", "--method", "vicreg"]) == 2
    assert "config is for method 'simclr'" in capsys.readouterr().err
    assert main(argv + ["--config", "dino_synth", "--method", "vicreg"]) == 2
    assert "config is for method 'dino'" in capsys.readouterr().err
    assert main(argv + ["--config", "vicreg_synt"]) == 1
    err = capsys.readouterr().err
    assert "did you mean vicreg_synth?" in err and all(f"{m}_synth" in err for m in METHODS)


def test_print_config_shows_the_sections_and_reads_back(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path), "--index", "i.npy", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main(argv + ["--method", "dino", "--set", "dino.teacher_temp=0.05", "--print-config"])
    f = tmp_path / "printed.yaml"
    f.write_text(capsys.readouterr().out)
    cfg = load_train_config(f)
    assert cfg == load_train_config(None, ["dino.teacher_temp=0.05"], method="dino")
    assert "dino:\n  out_dim: 1024\n  teacher_temp: 0.05\n" in f.read_text()


def test_a_sweep_over_a_method_setting_splits_the_reports_series():
    """`dejavu report` tells sweep points apart by the trained method's section keys (vicreg.sim)."""
    from types import SimpleNamespace

    from dejavu.report.collect import varying_hyperparams

    runs = [load_train_config(None, [f"vicreg.sim={s}"], method="vicreg").to_dict() for s in (10, 25, 50)]
    assert varying_hyperparams([SimpleNamespace(model_config=c) for c in runs]) == ["vicreg.sim"]
