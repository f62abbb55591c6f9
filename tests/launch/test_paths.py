"""Paths typed relative are recorded absolute (issue 20, item 7): a manifest written from one
folder is read from another (plot_cmds/plot_all.sh once failed with "image folder data/train
not found")."""

from __future__ import annotations

import json


def test_partition_records_absolute_paths_usable_elsewhere(synth_small, tmp_path, monkeypatch):
    from dejavu.cli import main
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import Partition

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "data").symlink_to(synth_small)
    monkeypatch.chdir(tmp_path / "a")
    assert main(["partition", "--data", "data", "--out", "part", "--per-class", "5"]) == 0
    manifest = json.loads((tmp_path / "a" / "part" / "manifest.json").read_text())
    assert manifest["images"] == str(tmp_path / "a" / "data" / "train")  # the symlink kept, not resolved
    assert manifest["bboxes"] == str(tmp_path / "a" / "data" / "bboxes")
    monkeypatch.chdir(tmp_path)
    assert DataPaths.resolve(images=manifest["images"], bboxes=manifest["bboxes"]).images.is_dir()
    assert Partition.load("a/part").root == tmp_path / "a" / "part"
