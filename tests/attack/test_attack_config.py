"""AttackConfig: the periphery search's name (``periphery_search: paper | largest-empty``; the old
``crop_algo: periphery | largest-empty`` still read from flags, files, ``--set`` and stored
results) and the allowed values checked by the one check of :mod:`dejavu.config`."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from dejavu import UsageError
from dejavu.attack.config import AttackConfig
from dejavu.attack.crops import crop_for_config, largest_empty_crop, periphery_crop
from dejavu.audit.config import load_audit_config
from dejavu.cli import main

ARGV = ["attack", "--model-a", "a.pth", "--model-b", "b.pth", "--partition", "p", "--npc", "10", "--data", "d"]


def _printed(capsys, tmp_path, *extra: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main([*ARGV, "--out", str(tmp_path / "o"), *extra, "--print-config"])
    assert e.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "extra,want",
    [
        ([], "paper"),
        (["--periphery-search", "largest-empty"], "largest-empty"),
        (["--crop-algo", "periphery"], "paper"),  # the old flag and value
        (["--crop-algo", "largest-empty"], "largest-empty"),
        (["--set", "crop_algo=largest-empty"], "largest-empty"),
        (["--set", "crop_algo=periphery"], "paper"),
        (["--config", "OLD"], "largest-empty"),
    ],
)
def test_the_old_spelling_is_read_everywhere(extra, want, capsys, tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("crop_algo: largest-empty\nk: 20\n")
    cfg = _printed(capsys, tmp_path, *[str(old) if x == "OLD" else x for x in extra])
    assert cfg["periphery_search"] == want and "crop_algo" not in cfg


def test_the_audit_reads_the_old_spelling_too(tmp_path):
    old = tmp_path / "audit.yaml"
    old.write_text("crop_algo: largest-empty\n")
    assert load_audit_config(str(old)).attack_config().periphery_search == "largest-empty"
    with pytest.raises(UsageError, match="crop_algo is the old name of periphery_search: give one of them"):
        load_audit_config(None, ["crop_algo=periphery", "periphery_search=paper"])


def test_a_stored_old_config_crops_as_the_new_one():
    boxes = np.array([[30.0, 0, 34, 10]])  # the paper scans single x-intervals: 30 px; 54 px below the box
    paper, best = periphery_crop(boxes, 64, 64, 0), largest_empty_crop(boxes, 64, 64, 0)
    assert paper.rect != best.rect
    for stored, want in (
        ({"crop": "periphery", "crop_algo": "periphery", "min_crop_px": 0}, paper),  # results.json before
        ({"crop": "periphery", "crop_algo": "largest-empty", "min_crop_px": 0}, best),
        ({"crop": "periphery", "periphery_search": "largest-empty", "min_crop_px": 0}, best),
        (AttackConfig(periphery_search="largest-empty", min_crop_px=0), best),
    ):
        assert crop_for_config(stored, 64, 64, boxes).rect == want.rect, stored


@pytest.mark.parametrize(
    "key,bad", [("crop", "center"), ("periphery_search", "periphery-ish"), ("embed", "pixels"), ("knn", "annoy")]
)
def test_a_bad_choice_is_the_same_words_from_set_config_and_the_library(key, bad, capsys, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(f"{key}: {bad}\n")
    errs = {}
    for where, extra in (("--set", ["--set", f"{key}={bad}"]), (str(conf), ["--config", str(conf)])):
        assert main([*ARGV, "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("dejavu attack: error: ")
        errs[where] = err.partition(": error: ")[2].partition(": ")[2]
    with pytest.raises(UsageError) as e:
        AttackConfig(**{key: bad}).validate()  # a library caller's config, built without from_dict
    errs["library"] = str(e.value)  # no source to name
    assert len(set(errs.values())) == 1, errs
    assert errs["library"].startswith(f"{key}={bad!r}: choose from ")
