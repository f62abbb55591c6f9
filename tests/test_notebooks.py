"""Execute both notebooks headlessly (nbclient) on a small real run built here:
synth -> partition -> two tiny SSL models -> attack -> two tiny RCDMs (slow), and on a run
with no RCDM, as the Quickstart's `dejavu demo` leaves it (the reconstructions are skipped
with a note, everything else runs). Fails if a cell fails or an expected figure is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent / "rcdm"))

NOTEBOOKS = {
    "mem_vs_corr.ipynb": ["mem_vs_corr_classes.png", "mem_vs_corr_memorized.png", "mem_vs_corr_correlated.png"],
    "in_class_variation.ipynb": ["in_class_confident.png", "in_class_reconstructions.png"],
}


@pytest.fixture(scope="module")
def small_run(synth_small, partition_small, tmp_path_factory):
    from rcdm_helpers import build_run

    return build_run(tmp_path_factory.mktemp("nb_run"), synth_small, partition_small, rcdm_steps=10)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs(name, small_run, tmp_path, monkeypatch):
    _execute(name, small_run["run"], tmp_path, monkeypatch)
    for fig in NOTEBOOKS[name]:
        assert (tmp_path / "figs" / fig).is_file() and (tmp_path / "figs" / fig).stat().st_size > 1000, fig


@pytest.fixture(scope="module")
def run_without_rcdm(synth_small, partition_small, tmp_path_factory):
    """What `dejavu demo` leaves without --rcdm: RUN/attack/<name>/ep<E>/, no RUN/rcdm."""
    sys.path.insert(0, str(Path(__file__).parent / "attack"))
    from helpers import make_checkpoint

    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths, scan_imagefolder

    run = tmp_path_factory.mktemp("nb_demo_like")
    index = scan_imagefolder(synth_small / "train")
    a = make_checkpoint(run / "models" / "a.pth", index, "A", 10, seed=1)
    b = make_checkpoint(run / "models" / "b.pth", index, "B", 10, seed=2)
    cfg = AttackConfig(npc=10, k=20, k_attk=20, n_boot=0, device="cpu", workers=0)
    attack(a, b, partition_small, DataPaths.resolve(data=synth_small), run / "attack" / "vicreg_10pc" / "ep1", cfg)
    return run


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_without_rcdms(name, run_without_rcdm, tmp_path, monkeypatch):
    nb = _execute(name, run_without_rcdm, tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "the reconstructions are skipped" in text and "dejavu demo --rcdm" in text
    assert "reconstructions skipped: no RCDMs" in text
    first = NOTEBOOKS[name][0]  # the figure that needs no RCDM
    assert (tmp_path / "figs" / first).is_file() and (tmp_path / "figs" / first).stat().st_size > 1000
    assert "n9000" not in text.split("class:", 1)[1].splitlines()[0]  # class names, not wnids


def _execute(name, run, tmp_path, monkeypatch):
    """Run one notebook on ``run``; assert no cell failed and something was displayed."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    figs = tmp_path / "figs"
    monkeypatch.setenv("DEJAVU_RUN", str(run))
    monkeypatch.setenv("DEJAVU_FIG_DIR", str(figs))
    monkeypatch.setenv("DEJAVU_NO_PROGRESS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DEJAVU_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))
    return nb
