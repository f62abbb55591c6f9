import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from dejavu import DejavuError, UsageError
from dejavu.audit.config import AuditConfig
from dejavu.config import add_config_args, check_choices, config_from_args, load_config, resolve_config
from dejavu.partition import PartitionConfig
from dejavu.probe import ProbeConfig
from dejavu.rcdm.config import RCDMConfig
from dejavu.ssl.config import TrainConfig


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
    with pytest.raises(DejavuError, match=r"unknown key.*valid keys"):
        load_config(Cfg, None, ["epoch=3"])
    with pytest.raises(DejavuError, match="expected int"):
        load_config(Cfg, None, ["epochs=abc"])
    with pytest.raises(DejavuError, match="not found"):
        load_config(Cfg, tmp_path / "none.yaml")


@dataclass
class StageCfg:
    k: int = field(default=100, metadata={"help": "neighbours per crop"})
    knn: str = field(default="torch", metadata={"help": "backend", "choices": ("torch", "faiss")})
    amp: bool = False
    extra: dict = field(default_factory=dict)


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_args(p, StageCfg, flags=("k", "knn", "amp"))
    return p, p.parse_args(argv)


def test_flags_come_from_the_dataclass_with_its_defaults():
    p, _ = _parse([])
    text = p.format_help()
    assert "neighbours per crop (default: 100)" in text and "{torch,faiss}" in text


def test_precedence_defaults_file_flags_sets(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("k: 50\nknn: faiss\n")
    _, args = _parse(["--config", str(f), "--k", "20", "--set", "k=7", "--set", "extra.a.b=1"])
    c = config_from_args(StageCfg, args, flags=("k", "knn", "amp"))
    assert (c.k, c.knn, c.amp, c.extra) == (7, "faiss", False, {"a": {"b": 1}})
    _, args = _parse(["--config", str(f), "--k", "20"])
    assert config_from_args(StageCfg, args, flags=("k", "knn", "amp")).k == 20  # flag beats file
    _, args = _parse([])
    assert config_from_args(StageCfg, args, flags=("k", "knn", "amp")) == StageCfg()  # absent flags: defaults


def test_bad_keys_and_values_are_usage_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("k: 5\n")
    _, args = _parse(["--config", str(f), "--set", "kk=3"])
    with pytest.raises(
        UsageError, match=r"^--set: unknown key\(s\) kk \(did you mean k\?\); valid keys: amp, extra, k, knn$"
    ):
        config_from_args(StageCfg, args, flags=("k",))
    f.write_text("kk: 5\n")
    with pytest.raises(UsageError, match=r"s.yaml: unknown key\(s\) kk"):
        config_from_args(StageCfg, args, flags=("k",))
    _, args = _parse(["--set", "k=abc"])
    with pytest.raises(UsageError, match=r"StageCfg\.k: expected int"):
        config_from_args(StageCfg, args)


def test_packaged_config_names_resolve_or_list_choices():
    assert resolve_config("vicreg", "ssl").name == "vicreg.yaml"
    with pytest.raises(DejavuError, match=r"packaged ssl config.*dino_synth.*vicreg") as e:
        resolve_config("nope", "ssl")
    assert not isinstance(e.value, UsageError)  # a missing config file: exit 1, as the README says


@dataclass
class Pick:
    knn: str = field(default="torch", metadata={"choices": ("torch", "faiss")})
    recipe: str | None = field(default=None, metadata={"choices": ("a", "b")})


def test_choices_checked_once_from_the_metadata_for_files_sets_and_flags(tmp_path):
    with pytest.raises(UsageError, match=r"^--set: knn='faise': choose from torch, faiss$"):
        load_config(Pick, None, ["knn=faise"])
    f = tmp_path / "p.yaml"
    f.write_text("knn: faise\n")
    with pytest.raises(UsageError, match=r"p.yaml: knn='faise': choose from torch, faiss$"):
        load_config(Pick, f)
    _, args = _parse(["--knn", "faiss"])
    assert config_from_args(StageCfg, args, flags=("knn",)).knn == "faiss"
    _, args = _parse(["--knn", "faise"])  # a flag: the same check, naming the flag
    with pytest.raises(UsageError, match=r"^--knn: knn='faise': choose from torch, faiss$"):
        config_from_args(StageCfg, args, flags=("knn",))
    f.write_text("knn: faiss\n")
    _, args = _parse(["--config", str(f), "--set", "knn=faise"])  # each value named by where it came from
    with pytest.raises(UsageError, match=r"^--set: knn='faise': choose from torch, faiss$"):
        config_from_args(StageCfg, args, flags=("knn",))
    assert load_config(Pick, None, ["recipe=null"]).recipe is None  # an optional field may stay unset
    assert load_config(Pick, None, ["recipe=b", "knn=faiss"]) == Pick("faiss", "b")
    with pytest.raises(UsageError, match=r"^knn='faise': choose from torch, faiss$"):
        check_choices(Pick("faise"))  # a library caller's dataclass, checked by validate()
    check_choices(Pick("faiss", None))


def test_a_yaml_file_may_start_from_a_base(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "common.yaml").write_text("epochs: 5\narch: resnet18\nlr: 0.5\n")
    f = tmp_path / "c.yaml"
    f.write_text("_base_: base/common.yaml\nlr: 0.3\n")
    c = load_config(Cfg, f, ["amp=true"])
    assert (c.epochs, c.arch, c.lr, c.amp) == (5, "resnet18", 0.3, True)
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(DejavuError, match=r"loop.yaml: _base_ must name another config file"):
        load_config(Cfg, tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("_base_: nope.yaml\n")
    with pytest.raises(DejavuError, match=r"nope.yaml: config file not found"):
        load_config(Cfg, tmp_path / "missing.yaml")


CHOICE_FIELDS = [
    (cls, f.name)
    for cls in (ProbeConfig, AuditConfig, RCDMConfig, PartitionConfig, TrainConfig)
    for f in dataclasses.fields(cls)
    if f.metadata.get("choices")
]


@pytest.mark.parametrize("cls,name", CHOICE_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in CHOICE_FIELDS])
def test_validate_checks_the_metadata_choices_for_library_callers(cls, name):
    """A dataclass built directly (the library API) gets the same one-line error as the CLI."""
    bad = 48 if isinstance(cls.__dataclass_fields__[name].metadata["choices"][0], int) else "nope"
    with pytest.raises(UsageError, match=rf"^{name}={bad!r}: choose from [^\n]+$"):
        cls(**{name: bad}).validate()
    cls().validate()
