"""Without ffcv: dejavu imports and parses, and the FFCV features say in one line how to
install it. ffcv is made unimportable (None in sys.modules), whether or not it is installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dejavu.cli import main


def test_importing_dejavu_never_imports_ffcv():
    code = (
        "import sys; import dejavu, dejavu.cli, dejavu.ffcv, dejavu.ffcv.betons, dejavu.ffcv.loader; "
        "dejavu.cli.build_parser(); print(sys.modules.get('ffcv') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['ffcv'] = None; " + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # installed or not, nothing imports it up front


@pytest.fixture
def no_ffcv(monkeypatch):
    for name in [m for m in sys.modules if m == "ffcv" or m.startswith("ffcv.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ffcv", None)


def _one_line_hint(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "needs the optional ffcv package" in lines[0]
    assert "libturbojpeg0-dev libopencv-dev" in lines[0] and 'pip install -e ".[ffcv]"' in lines[0]


def test_betons_without_ffcv_says_how_to_install(no_ffcv, synth_small, partition_small, tmp_path, capsys):
    rc = main(
        [
            "betons",
            "--data",
            str(synth_small),
            "--partition",
            str(partition_small),
            "--npc",
            "5",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert rc == 1
    _one_line_hint(capsys.readouterr().err)
    assert not (tmp_path / "b").exists()


def test_train_loader_ffcv_without_ffcv_says_how_to_install(no_ffcv, synth_small, partition_small, tmp_path, capsys):
    rc = main(
        [
            "train",
            "--data",
            str(synth_small),
            "--index",
            str(partition_small / "5_per_class/train_A.npy"),
            "--out",
            str(tmp_path / "run"),
            "--loader",
            "ffcv",
            "--train-beton",
            str(tmp_path / "x.beton"),
        ]
    )
    assert rc == 1
    _one_line_hint(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_attack_crops_betons_without_ffcv_says_how_to_install(no_ffcv, synth_small, partition_small, tmp_path, capsys):
    ck = [str(tmp_path / f"{y}.pth") for y in "AB"]  # refused before any checkpoint is read
    argv = ["attack", "--model-a", ck[0], "--model-b", ck[1], "--partition", str(partition_small), "--npc", "5"]
    rc = main([*argv, "--data", str(synth_small), "--out", str(tmp_path / "att"), "--crops-betons", str(tmp_path)])
    assert rc == 1
    _one_line_hint(capsys.readouterr().err)
    assert not (tmp_path / "att").exists()


def test_loader_and_beton_flags_go_together(synth_small, partition_small, tmp_path, capsys):
    rc = main(
        [
            "train",
            "--data",
            str(synth_small),
            "--index",
            str(partition_small / "5_per_class/train_A.npy"),
            "--out",
            str(tmp_path / "run"),
            "--loader",
            "ffcv",
        ]
    )
    assert rc == 2 and "--train-beton" in capsys.readouterr().err


def test_split_view_separates_geometry_from_the_rest():
    from torchvision.transforms import v2 as T

    from dejavu.ffcv.loader import split_view
    from dejavu.ssl.augment import build_view

    geo, rest = split_view(build_view("paper", 64, 1))
    assert geo == {"crop": ("random", 64, (0.08, 1.0), (3 / 4, 4 / 3)), "flip": 0.5}
    kinds = [type(t) for t in rest.transforms]
    assert T.RandomResizedCrop not in kinds and T.RandomHorizontalFlip not in kinds and T.ToImage not in kinds
    assert T.RandomGrayscale in kinds and T.RandomSolarize in kinds and T.Normalize in kinds
    geo, _ = split_view(build_view("none", 32, 0))
    assert geo == {"crop": ("center", 32, 224 / 256), "flip": 0.0}
