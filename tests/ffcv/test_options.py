"""BetonOptions without ffcv: allowed values from the field metadata (the one check), the
periphery search's new name with the old flag read, and the beton record in its format's spelling."""

from __future__ import annotations

import pytest

from dejavu import UsageError
from dejavu.cli import build_parser
from dejavu.ffcv.betons import BetonOptions

ARGV = ["betons", "--data", "d", "--partition", "p", "--npc", "5", "--out", "o"]


def test_bad_choices_are_the_one_checks_words():
    with pytest.raises(UsageError, match=r"^write_mode='png': choose from jpg, raw$"):
        BetonOptions(write_mode="png").validate()
    with pytest.raises(UsageError, match=r"^periphery_search='periphery': choose from paper, largest"):
        BetonOptions(periphery_search="periphery").validate()


@pytest.mark.parametrize(
    "extra,want",
    [
        ([], "paper"),
        (["--crop-algo", "periphery"], "paper"),
        (["--periphery-search", "largest-empty"], "largest-empty"),
    ],
)
def test_the_old_flag_and_value_are_read(extra, want):
    assert build_parser().parse_args([*ARGV, *extra]).periphery_search == want


def test_the_record_keeps_the_format_spelling():
    rec = BetonOptions(periphery_search="paper").record()  # dejavu-beton/1 as written before the rename
    assert list(rec.items()) == [
        ("max_res", 512),
        ("quality", 90),
        ("write_mode", "jpg"),
        ("workers", 1),
        ("crop_algo", "periphery"),
        ("min_crop_px", None),
    ]
    assert BetonOptions(periphery_search="largest-empty").record()["crop_algo"] == "largest-empty"
