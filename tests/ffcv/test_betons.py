"""Betons written for the synthetic partition and read back index by index (needs ffcv)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# ffcv.libffcv, not ffcv: with no ffcv installed, "ffcv" finds this tests/ffcv folder (a namespace package)
pytest.importorskip(
    "ffcv.libffcv", reason="the ffcv extra is not installed (system packages + pip install -e '.[ffcv]')"
)

from dejavu import DejavuError
from dejavu.cli import main
from dejavu.data.dataset import load_rgb
from dejavu.data.imagefolder import DataPaths, scan_imagefolder
from dejavu.ffcv.betons import BOX_FIELDS, BetonFile, BetonOptions, check_beton, write_betons
from dejavu.partition import Partition

sys.path.insert(0, str(Path(__file__).parents[1] / "attack"))
from helpers import make_checkpoint


@pytest.fixture(scope="module")
def betons(synth_small, partition_small, tmp_path_factory):
    """npc 5: train A/B, val and bbox A/B betons through the CLI (JPEG quality 90)."""
    out = tmp_path_factory.mktemp("betons")
    assert (
        main(
            [
                "betons",
                "--data",
                str(synth_small),
                "--partition",
                str(partition_small),
                "--npc",
                "5",
                "--out",
                str(out),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    return out


def _px(a, b) -> np.ndarray:
    return np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))


def _within_jpeg_tolerance(got, want) -> bool:
    """As close to ``want`` as ``want`` re-encoded by PIL at quality 90 (the stored quality)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    want.save(buf, "JPEG", quality=90)
    ref = _px(Image.open(buf).convert("RGB"), want)
    d = _px(got, want)
    return bool(d.mean() <= ref.mean() + 0.5 and d.max() <= ref.max() + 16)


def test_round_trip_indices_labels_and_pixels(betons, synth_small, partition_small):
    index = scan_imagefolder(synth_small / "train")
    part = Partition.load(partition_small)
    names = sorted(p.name for p in betons.iterdir())
    assert names == sorted(
        f"{n}{ext}"
        for n in (
            "5_per_class_A.beton",
            "5_per_class_B.beton",
            "val.beton",
            "5_per_class_bbox_A.beton",
            "5_per_class_bbox_B.beton",
        )
        for ext in ("", ".json")
    )  # no temporary file left behind
    for name, idx in (
        ("5_per_class_A", part.load_set(5, "train_A")),
        ("5_per_class_B", part.load_set(5, "train_B")),
        ("val", part.val_set()),
    ):
        bf = BetonFile(betons / f"{name}.beton")
        assert np.array_equal(bf.column("index"), idx)  # index-file order, global ImageFolder indices
        assert np.array_equal(bf.column("label"), index.targets[idx])
        check_beton(bf, index, idx, name)
        for j in range(len(bf)):
            assert _within_jpeg_tolerance(bf.image(j), load_rgb(index.path(int(idx[j])))), (name, j)
        rec = json.loads((betons / f"{name}.beton.json").read_text())
        assert rec["num_images"] == len(idx) and rec["fingerprint"]["id"] == index.fingerprint.id
        assert rec["options"]["quality"] == 90 and rec["options"]["max_res"] == 512


def test_raw_betons_are_exact_and_max_res_shrinks(synth_small, partition_small, tmp_path):
    index = scan_imagefolder(synth_small / "train")
    paths = DataPaths.resolve(data=synth_small)
    idx = Partition.load(partition_small).load_set(5, "train_A")
    write_betons(
        paths,
        partition_small,
        [5],
        tmp_path / "raw",
        BetonOptions(write_mode="raw"),
        kinds=["train"],
    )
    write_betons(paths, partition_small, [5], tmp_path / "small", BetonOptions(max_res=16), kinds=["train"])
    raw, small = (
        BetonFile(tmp_path / "raw/5_per_class_A.beton"),
        BetonFile(tmp_path / "small/5_per_class_A.beton"),
    )
    for j in range(len(idx)):
        orig = load_rgb(index.path(int(idx[j])))
        assert np.array_equal(np.asarray(raw.image(j)), np.asarray(orig))
        assert max(small.image(j).size) == 16 and max(orig.size) == 32


def test_bbox_betons_equal_crops_computed_on_the_fly(betons, synth_small, partition_small, tmp_path):
    from dejavu.attack.crops import default_min_crop_px
    from dejavu.attack.run import AttackConfig, compute_crops

    index = scan_imagefolder(synth_small / "train")
    paths = DataPaths.resolve(data=synth_small)
    part = Partition.load(partition_small)
    write_betons(paths, partition_small, [5], tmp_path, BetonOptions(write_mode="raw"), kinds=["bbox"])
    for y in "AB":
        bbox = part.load_set(5, f"bbox_{y}")
        min_px = default_min_crop_px(paths.images)
        sc = compute_crops(index, paths.annotation_dir, bbox, AttackConfig(), min_px)
        crops = dict(zip(sc.indices.tolist(), map(tuple, sc.boxes.tolist())))
        for mode, folder in (("raw", tmp_path), ("jpg", betons)):
            bf = BetonFile(folder / f"5_per_class_bbox_{y}.beton")
            assert np.array_equal(bf.column("index"), bbox)
            assert np.array_equal(bf.column("label"), index.targets[bbox])
            valid = bf.column("valid")
            assert set(valid.tolist()) <= {1, -1} and int((valid > 0).sum()) == len(sc.indices)
            for j, g in enumerate(bbox.tolist()):
                box = tuple(int(bf.column(n)[j]) for n in BOX_FIELDS)
                full = load_rgb(index.path(g))
                want = full.crop(crops[g]) if g in crops else full
                assert (valid[j] > 0) == (g in crops) and (g not in crops or box == crops[g])
                got = bf.image(j)
                assert got.size == want.size
                ok = _px(got, want).max() == 0 if mode == "raw" else _within_jpeg_tolerance(got, want)
                assert ok, (mode, y, j)


def test_attack_reads_crop_betons(synth_small, partition_small, tmp_path):
    index = scan_imagefolder(synth_small / "train")
    paths = DataPaths.resolve(data=synth_small)
    a = make_checkpoint(tmp_path / "a.pth", index, "A", 10, seed=1)
    b = make_checkpoint(tmp_path / "b.pth", index, "B", 10, seed=2)
    write_betons(
        paths,
        partition_small,
        [10],
        tmp_path / "bet",
        BetonOptions(write_mode="raw"),
        kinds=["bbox"],
    )
    base = [
        "attack",
        "--model-a",
        str(a),
        "--model-b",
        str(b),
        "--partition",
        str(partition_small),
        "--npc",
        "10",
        "--data",
        str(synth_small),
        "--k",
        "10",
        "--bootstrap",
        "0",
        "--cache-dir",
        "",
    ]
    assert main([*base, "--out", str(tmp_path / "fly")]) == 0
    assert main([*base, "--out", str(tmp_path / "bet_att"), "--crops-betons", str(tmp_path / "bet")]) == 0
    for name in (
        "A_attk_A",
        "B_attk_A",
        "A_attk_B",
        "B_attk_B",
    ):  # exact pixels: identical neighbours
        for key in ("attk_idxs", "neighb_idxs"):
            f = f"{name}_{key}.npy"
            assert np.array_equal(np.load(tmp_path / "fly" / f), np.load(tmp_path / "bet_att" / f)), f
    # betons written with another minimum crop size are refused, naming the file
    from dejavu.attack.crops import default_min_crop_px
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.ffcv.betons import crop_datasets

    cfg = AttackConfig(
        npc=10,
        n_boot=0,
        min_crop_px=default_min_crop_px(paths.images) + 4,
        crops_betons=str(tmp_path / "bet"),
    )
    with pytest.raises(DejavuError, match="its crops differ"):
        attack(a, b, partition_small, paths, tmp_path / "x", cfg, cache_dir="", crop_datasets=crop_datasets(cfg))


def test_overwrite_refused_skip_and_force(betons, synth_small, partition_small, capsys):
    args = [
        "betons",
        "--data",
        str(synth_small),
        "--partition",
        str(partition_small),
        "--npc",
        "5",
        "--out",
        str(betons),
        "--sets",
        "val",
        "--workers",
        "1",
    ]
    before = (betons / "val.beton").stat().st_mtime_ns
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "val.beton: already exists; pass --force" in err
    assert main([*args, "--skip-existing"]) == 0 and (betons / "val.beton").stat().st_mtime_ns == before
    assert main([*args, "--force"]) == 0 and (betons / "val.beton").stat().st_mtime_ns != before
    assert not [p for p in betons.iterdir() if p.name.startswith(".")]


def test_wrong_beton_refused(betons, synth_small, partition_small):
    from dejavu.ffcv.loader import FFCVImages

    index = scan_imagefolder(synth_small / "train")
    idx_b = Partition.load(partition_small).load_set(5, "train_B")
    wrong = r"5_per_class_A\.beton: sample 0 has (label|index) .* written for other images"
    with pytest.raises(DejavuError, match=wrong):
        FFCVImages(betons / "5_per_class_A.beton", index, idx_b)
    with pytest.raises(DejavuError, match="holds 50 images but"):
        FFCVImages(betons / "5_per_class_A.beton", index, idx_b[:10])
    with pytest.raises(DejavuError, match=r"not a readable \.beton"):
        BetonFile(betons / "val.beton.json")


def test_unreadable_image_fails_cleanly(synth_small, partition_small, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_small, data)
    index = scan_imagefolder(data / "train")
    victim = index.path(int(Partition.load(partition_small).load_set(5, "train_A")[3]))
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DejavuError, match=f"{victim.name}: cannot read image.*1 image\\(s\\) failed"):
        write_betons(DataPaths.resolve(data=data), partition_small, [5], tmp_path / "out", kinds=["train"])
    assert not (tmp_path / "out" / "5_per_class_A.beton").exists()
    assert not list((tmp_path / "out").iterdir())
