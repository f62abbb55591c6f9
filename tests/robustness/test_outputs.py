"""Results on disk: no overwrite without --force, atomic replacement with it, clear errors on
an unwritable folder or a full disk (earlier results intact, no partial file under a final
name), a damaged embedding cache never used, one writer per output folder, umask-given modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from robustness_cli import SRC, assert_one_line_error, attack_inprocess, child_env, run_cli

from dejavu import DejavuError
from dejavu.io import LOCK_NAME, atomic_write_json, folder_lock


def _tmp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_without_force_refuses_with_force_replaces(corpus, tmp_path):
    out = tmp_path / "p"
    args = ["partition", "--data", corpus / "data", "--per-class", "4", "--out", out]
    assert run_cli(*args).returncode == 0
    before = _snapshot(out)
    ino = (out / "manifest.json").stat().st_ino
    assert_one_line_error(run_cli(*args), str(out), "--force")
    assert _snapshot(out) == before
    (out / "manifest.json").write_text((out / "manifest.json").read_text().replace('"format"', '"format_old"'))
    assert run_cli(*args, "--force").returncode == 0
    assert json.loads((out / "manifest.json").read_text())["format"] == "dejavu-partition/1"
    assert (out / "manifest.json").stat().st_ino != ino  # replaced by a rename, not rewritten in place
    assert not _tmp_files(out) and not (out / LOCK_NAME).exists()


def test_output_under_a_file(corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run_cli("partition", "--data", corpus / "data", "--per-class", "4", "--out", tmp_path / "afile" / "p")
    assert_one_line_error(proc, str(tmp_path / "afile" / "p"), "cannot write")


def test_unwritable_output_folder():
    """As root, permission bits do not bind: the writer drops to 'nobody' (setuid)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    with tempfile.TemporaryDirectory(dir="/tmp") as t:
        _unwritable(Path(t))


def _unwritable(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    atomic_write_json(d / "old.json", {"v": 1})
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o555)
    # imports first (as root: the interpreter lives under /root), then drop to nobody and write
    code = (
        f"import os, sys; sys.path.insert(0, {str(SRC)!r}); from dejavu.cli import main; "
        f"from dejavu.io import atomic_write_json; from dejavu import DejavuError\n"
        f"os.setgid(65534); os.setuid(65534)\n"
        f"try:\n    atomic_write_json({str(d / 'old.json')!r}, {{'v': 2}})\n"
        f"except DejavuError as e:\n    print(e, file=sys.stderr); sys.exit(1)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, env=child_env()
    )
    assert_one_line_error(proc, str(d / "old.json"), "permission denied")
    assert json.loads((d / "old.json").read_text()) == {"v": 1} and not _tmp_files(d)


def test_full_disk_mid_write_keeps_earlier_results(corpus, tmp_path):
    out = tmp_path / "p"
    args = ["partition", "--data", corpus / "data", "--per-class", "4", "--out", out]
    assert run_cli(*args).returncode == 0
    before = _snapshot(out)
    big = max(len(v) for k, v in before.items() if k.suffix == ".npy")
    assert len(before[Path("manifest.json")]) > big + 1
    # every index file fits under the limit, manifest.json (written last) does not
    proc = run_cli(*args, "--force", env=child_env(DEJAVU_TEST_FSIZE=str(big + 1)))
    assert_one_line_error(proc, str(out / "manifest.json"), "file too large")
    assert _snapshot(out) == before
    assert not _tmp_files(out)


def test_full_disk_during_training_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--data",
        corpus / "data",
        "--index",
        corpus / "part" / "4_per_class" / "train_A.npy",
        "--out",
        out,
        "--set",
        "epochs=1",
        "--set",
        "projector=16-16",
        "--set",
        "knn_every=0",
        "--set",
        "warmup_epochs=0",
        "--device",
        "cpu",
        env=child_env(DEJAVU_TEST_FSIZE="20000"),
    )
    line = assert_one_line_error(proc, "cannot write", "file too large")
    assert ".pth" in line
    assert not list(out.glob("*.pth")) and not _tmp_files(out)


def test_umask_gives_the_file_modes(corpus, tmp_path):
    """A small pipeline under umask 022: every file 0644, every folder 0755 (not 0600)."""
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import partition
    from dejavu.report.collect import collect
    from dejavu.report.plots import make_figures

    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        partition(DataPaths.resolve(data=corpus / "data"), [4], run / "part")
        shutil.copytree(corpus / "part", run / "part2")  # not ours: ignore below
        shutil.rmtree(run / "part2")
        attack_inprocess(corpus, run / "attack" / "one", part=run / "part", cache_dir=run / "cache")
        make_figures(collect([run / "attack"]), run / "figures", formats=("png",))
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.suffix == ".png" for p in files) and any(p.parent.name == "cache" for p in files)
    bad = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o644}
    assert not bad
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in run.rglob("*") if p.is_dir())
    os.umask(0o077)
    try:
        atomic_write_json(run / "private.json", {})
    finally:
        os.umask(old)
    assert (run / "private.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_damaged_embedding_cache_is_recomputed(corpus, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    ref = attack_inprocess(corpus, tmp_path / "a0", cache_dir=cache)
    npys = sorted(cache.glob("*.npy"))
    assert len(npys) == 2 and not any(ref.results["embed_cache"]["hit"].values())
    if damage == "truncated":
        data = npys[0].read_bytes()
        npys[0].write_bytes(data[: len(data) // 2])
    else:  # B's embeddings under A's name (same shape): only the content digest tells
        shutil.copy(npys[1], npys[0])
    capsys.readouterr()
    again = attack_inprocess(corpus, tmp_path / "a1", cache_dir=cache)
    err = capsys.readouterr().err
    assert f"{npys[0]}: embedding cache entry not used" in err
    assert sum(again.results["embed_cache"]["hit"].values()) == 1
    assert again.results["metrics"] == ref.results["metrics"]
    for name in ("A_attk_A", "B_attk_A", "A_attk_B", "B_attk_B"):
        f = f"{name}_neighb_idxs.npy"
        assert np.array_equal(np.load(tmp_path / "a0" / f), np.load(tmp_path / "a1" / f))
    third = attack_inprocess(corpus, tmp_path / "a2", cache_dir=cache)  # repaired entry now used
    assert all(third.results["embed_cache"]["hit"].values())


HOLD = (
    "import sys; sys.path.insert(0, {src!r}); from dejavu.io import folder_lock\n"
    "with folder_lock({folder!r}, 'train'):\n    print('held', flush=True); sys.stdin.read()"
)


def test_second_writer_refused_naming_the_holder(corpus, tmp_path):
    out = tmp_path / "p"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD.format(src=str(SRC), folder=str(out))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(SLURM_JOB_ID="4242"),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("partition", "--data", corpus / "data", "--per-class", "4", "--out", out, "--force")
        assert_one_line_error(
            proc, str(out), "in use by another dejavu process", f"pid {holder.pid}", "SLURM job 4242", "dejavu train"
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
        # in this process too (a second open file description conflicts)
        with pytest.raises(DejavuError, match=f"pid {holder.pid}"), folder_lock(out, "plot"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock file stays behind
        holder.wait()
    assert (out / LOCK_NAME).exists()
    proc = run_cli("partition", "--data", corpus / "data", "--per-class", "4", "--out", out)
    assert proc.returncode == 0, proc.stderr  # a dead holder's lock is taken over
    assert (out / "manifest.json").is_file() and not (out / LOCK_NAME).exists()


def test_lock_is_reentrant_and_cleans_up(tmp_path):
    d = tmp_path / "x"
    with folder_lock(d, "a"), folder_lock(d, "b"):
        assert json.loads((d / LOCK_NAME).read_text())["stage"] == "a"
    assert not d.exists()  # created for a stage that wrote nothing: removed again
