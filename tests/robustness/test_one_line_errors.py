"""Bad input that gave a traceback, a hang or a blow-up (issue 25, cases 7-9): each is one
line naming the file or setting and the problem, or a warning where the run is valid but
its numbers say little."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from robustness_cli import SRC, assert_one_line_error, attack_args, child_env, run_cli
from robustness_cli import main_inprocess as _main

from dejavu import UsageError
from dejavu.io import LOCK_NAME


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nk: *a{levels - 1}\n"


def test_yaml_alias_bomb_refused_quickly(tmp_path):
    """~400 bytes expanding tenfold per level: refused before anything is expanded."""
    from dejavu.attack.run import AttackConfig
    from dejavu.config import load_config

    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    assert len(p.read_bytes()) < 600
    t0 = time.perf_counter()
    with pytest.raises(UsageError) as e:
        load_config(AttackConfig, p)
    assert str(e.value) == f"{p}: YAML aliases (*name) are not allowed in a config"
    with pytest.raises(UsageError, match=r"^--set k: YAML aliases"):
        load_config(AttackConfig, None, ["k=[&a [1, 1], *a, *a]"])
    assert time.perf_counter() - t0 < 1.0


# ------------------------------------------------------------------ 7. one line, not a traceback


@pytest.mark.parametrize(
    "flags,rc,needle",
    [
        (["--batch-size", "0"], 2, "--batch-size must be >= 1, got 0"),
        (["--image-size", "-1"], 2, "--image-size must be >= 8, got -1"),
        (["--image-size", "100000"], 2, "--image-size must be <= 4096, got 100000"),
        (["--corner-frac", "nan"], 2, "--corner-frac must be in (0, 1], got nan"),
        (["--bootstrap", "-5"], 2, "--bootstrap must be >= 0, got -5"),
        (["--k", "100"], 1, "--k 100 exceeds the 32 images of the public set"),
    ],
)
def test_bad_attack_settings_before_any_work(corpus, tmp_path, capsys, flags, rc, needle):
    """The default --k 100 with a 32-image public set failed after all the work."""
    proc = _main(capsys, *attack_args(corpus, tmp_path / "att"), *flags)
    assert_one_line_error(proc, needle, rc=rc)
    assert not (tmp_path / "att").exists()


def test_decompression_bomb_in_the_attacked_set(corpus, data_copy, tmp_path, capsys, monkeypatch):
    """PIL's DecompressionBombError is not an OSError: it gave a traceback."""
    from PIL import Image

    from dejavu.data.imagefolder import scan_imagefolder

    bbox_a = np.load(corpus / "part" / "4_per_class" / "bbox_A.npy")
    p = scan_imagefolder(data_copy / "train").path(int(bbox_a[0]))
    Image.new("RGB", (300, 300), (9, 9, 9)).save(p, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 300 x 300 is over twice the limit: refused
    proc = _main(capsys, *attack_args(corpus, tmp_path / "att", data=data_copy))
    assert_one_line_error(proc, str(p), "cannot")
    assert not (tmp_path / "att" / "results.json").exists()


def test_partition_leaving_no_public_image(corpus, tmp_path, capsys):
    proc = _main(capsys, "partition", "--data", corpus / "data", "--per-class", "4,100", "--out", tmp_path / "p")
    assert_one_line_error(proc, "--per-class 100 leaves no public image")
    assert not (tmp_path / "p").exists()


def test_attack_with_an_empty_public_set(corpus, tmp_path, capsys):
    """A partition made before the check above (or by hand) whose public set is empty."""
    import shutil

    part = tmp_path / "p"
    shutil.copytree(corpus / "part", part)
    np.save(part / "4_per_class" / "public.npy", np.zeros(0, np.int64))
    proc = _main(capsys, *attack_args(corpus, tmp_path / "att", part=part))
    assert_one_line_error(proc, str(part / "4_per_class" / "public.npy"), "empty index")
    assert not (tmp_path / "att").exists()


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("image_size", "abc", "config image_size must be a whole number in 8..4096"),
        ("image_size", -3, "config image_size must be a whole number in 8..4096"),
        ("image_size", 10**9, "config image_size must be a whole number in 8..4096"),
        ("npc", "x", "config npc must be a whole number in 1..10000000"),
        ("arch", 5, "config arch must be a string"),
        ("set", 3, "config set must be a string"),
        ("fingerprint", {"id": 1}, "malformed dataset fingerprint"),
        ("epoch", "e", "epoch must be a whole number"),
    ],
)
def test_checkpoint_values_of_the_wrong_type(corpus, tmp_path, key, value, needle):
    import torch

    from dejavu import DejavuError
    from dejavu.ssl.checkpoint import load_model

    ck = torch.load(corpus / "ckpt" / "A.pth", weights_only=True)
    (ck if key in ("fingerprint", "epoch") else ck["config"])[key] = value
    p = tmp_path / "A.pth"
    torch.save(ck, p)
    with pytest.raises(DejavuError) as e:
        load_model(p)
    assert str(e.value).startswith(f"{p}: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_out_that_is_a_file(corpus, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    proc = _main(capsys, *attack_args(corpus, tmp_path / "afile"))
    assert_one_line_error(proc, f"{tmp_path / 'afile'}: is a file, not a folder")


def test_long_names(corpus, tmp_path, capsys):
    """A 256-byte folder name: one line; a legal 240-byte file name: written (its temporary
    name is cut to fit)."""
    from dejavu.io import atomic_write_json

    out = tmp_path / ("x" * 256)
    assert_one_line_error(_main(capsys, *attack_args(corpus, out)), str(out), "name of 256 bytes")
    f = tmp_path / ("y" * 240)
    atomic_write_json(f, {"ok": 1})
    assert json.loads(f.read_text()) == {"ok": 1} and sorted(p.name for p in tmp_path.iterdir()) == [f.name]


def test_full_disk_at_the_lock_leaves_nothing(corpus, tmp_path):
    """Not even the lock file fits (RLIMIT_FSIZE 0: every write fails as on a full disk)."""
    out = tmp_path / "att"
    proc = run_cli(*attack_args(corpus, out), env=child_env(DEJAVU_TEST_FSIZE="0"))
    assert_one_line_error(proc, str(out / LOCK_NAME), "cannot write")
    assert not out.exists()


def test_cache_disk_full_mid_write(corpus, tmp_path):
    """The embedding cache does not fit: one line naming it, no temporary file, no lock."""
    out, cache = tmp_path / "att", tmp_path / ".embed_cache"
    proc = run_cli(*attack_args(corpus, out), env=child_env(DEJAVU_TEST_FSIZE="1000"))
    line = assert_one_line_error(proc, str(cache), "cannot write", "file too large")
    assert ".npy" in line
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_NAME]
    assert not (out / "results.json").exists()


def test_synth_force_onto_a_read_only_folder(tmp_path):
    """As root, permission bits do not bind: the writer drops to 'nobody' (setuid)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    with tempfile.TemporaryDirectory(dir="/tmp") as t:
        d = Path(t) / "ro"
        d.mkdir()
        (d / "old.txt").write_text("x")
        os.chmod(t, 0o755)
        os.chmod(d, 0o555)
        code = (
            f"import os, sys, locale; sys.path.insert(0, {str(SRC)!r}); from dejavu.cli import main, build_parser\n"
            "import dejavu.data.synth, PIL.Image, PIL.JpegImagePlugin, tqdm.auto, unicodedata; build_parser()  # imports as root (under /root)\n"
            f"os.setgid(65534); os.setuid(65534)\n"
            f"sys.exit(main(['data', 'synth', '--out', {str(d)!r}, '--force', '--classes', '2', '--per-class', '2', '--workers', '1']))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, env=child_env()
        )
        assert_one_line_error(proc, str(d), "permission denied")


# ------------------------------------------------------------------ 9. weak cases


def test_one_class_dataset_gives_no_score(tmp_path):
    """One class: 100% vs 100%, CI [0, 0], no warning. Now refused."""
    import shutil

    from robustness_cli import make_checkpoint

    from dejavu import DejavuError
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths, scan_imagefolder
    from dejavu.data.synth import SynthConfig, generate
    from dejavu.partition import partition

    generate(tmp_path / "d", SynthConfig(classes=2, per_class=24, size=32, annotated_fraction=1.0, seed=3), force=True)
    for sub in ("train", "bboxes/Annotation"):  # keep one class
        shutil.rmtree(max((tmp_path / "d" / sub).iterdir()))
    paths = DataPaths.resolve(data=tmp_path / "d")
    partition(paths, [4], tmp_path / "p")
    index = scan_imagefolder(tmp_path / "d" / "train")
    ck = {
        y: make_checkpoint(
            tmp_path / f"{y}.pth", index, y, 4, s, train=np.load(tmp_path / "p/4_per_class" / f"train_{y}.npy")
        )
        for y, s in (("A", 1), ("B", 2))
    }
    with pytest.raises(DejavuError, match=r"public set holds images of one class only"):
        attack(
            ck["A"], ck["B"], tmp_path / "p", paths, tmp_path / "att", AttackConfig(npc=4, k=4, n_boot=0, device="cpu")
        )
    assert not (tmp_path / "att").exists()


def test_duplicate_indices_in_an_index_file(corpus, tmp_path):
    from dejavu import DejavuError
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.partition import load_index_file

    f = tmp_path / "train_A.npy"
    np.save(f, np.array([3, 7, 9, 7]))
    with pytest.raises(DejavuError, match=rf"^{f}: index 7 appears more than once"):
        load_index_file(f, scan_imagefolder(corpus / "data" / "train"))


def test_model_b_of_another_method_refused(corpus, tmp_path):
    import torch

    from dejavu import DejavuError

    ck = torch.load(corpus / "ckpt" / "B.pth", weights_only=True)
    ck["config"]["method"] = "simclr"
    b = tmp_path / "B.pth"
    torch.save(ck, b)
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths

    with pytest.raises(DejavuError, match=rf"^{b}: method simclr but model A .* has method vicreg"):
        attack(
            corpus / "ckpt" / "A.pth",
            b,
            corpus / "part",
            DataPaths.resolve(data=corpus / "data"),
            tmp_path / "att",
            AttackConfig(npc=4, k=8, n_boot=0, device="cpu"),
        )


def test_bare_state_dict_warned_and_at_the_other_models_resolution(corpus, tmp_path, capsys):
    """A copy of our checkpoint without its record (as a safetensors export would be):
    warned that nothing about its training can be checked; evaluated at B's 32 px, not 224."""
    import torch

    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths

    a = tmp_path / "A_bare.pth"
    torch.save(torch.load(corpus / "ckpt" / "A.pth", weights_only=True)["model"], a)
    capsys.readouterr()
    res = attack(
        a,
        corpus / "ckpt" / "B.pth",
        corpus / "part",
        DataPaths.resolve(data=corpus / "data"),
        tmp_path / "att",
        AttackConfig(npc=4, k=8, n_boot=0, device="cpu"),
    )
    err = capsys.readouterr().err
    assert f"warning: {a}: records no set, npc, index_sha256, image_size, fingerprint" in err
    assert res.results["config"]["image_size"] == 32


def test_report_names_an_unfinished_attack(corpus, tmp_path, capsys):
    from robustness_cli import attack_inprocess

    from dejavu.report.collect import collect

    run = tmp_path / "run"
    attack_inprocess(corpus, run / "attack" / "done", cache_dir="")
    attack_inprocess(corpus, run / "attack" / "half", cache_dir="")
    (run / "attack" / "half" / "results.json").unlink()
    res = collect([run / "attack"])
    assert [r.path.parent.name for r in res.attacks] == ["done"]
    assert [(p.name, "unfinished" in why) for p, why in res.skipped] == [("half", True)]
    proc = _main(capsys, "report", run)
    assert f"skipped {run / 'attack' / 'half'}: an unfinished attack" in proc.stderr


def test_bootstrap_off_prints_no_nan_ci(corpus, tmp_path, capsys):
    proc = _main(capsys, *attack_args(corpus, tmp_path / "att"), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert "(no CI: --bootstrap 0)" in proc.stdout and "nan" not in proc.stdout.lower()


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("per_class", ["4"], "per_class must be a list of whole numbers >= 1"),
        ("per_class", [0], "per_class must be a list of whole numbers >= 1"),
        ("attack_public", "../../etc/x.npy", "attack_public must be <npc>_per_class/public.npy"),
        ("attack_public", 5, "attack_public must be"),
        ("fingerprint", {"id": "x"}, "malformed dataset fingerprint"),
    ],
)
def test_hand_edited_partition_manifest(corpus, tmp_path, key, value, needle):
    import shutil

    from dejavu import DejavuError
    from dejavu.partition import Partition

    part = tmp_path / "p"
    shutil.copytree(corpus / "part", part)
    m = json.loads((part / "manifest.json").read_text())
    m[key] = value
    (part / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DejavuError) as e:
        Partition.load(part).attack_public()
    assert str(e.value).startswith(f"{part / 'manifest.json'}: ") and needle in str(e.value)
