"""Execute both notebooks headlessly (nbclient) on a small real run built here:
synth -> partition -> two tiny SSL models -> attack -> two tiny RCDMs. Fails if a cell
fails or an expected figure is missing."""

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
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    figs = tmp_path / "figs"
    monkeypatch.setenv("DEJAVU_RUN", str(small_run["run"]))
    monkeypatch.setenv("DEJAVU_FIG_DIR", str(figs))
    monkeypatch.setenv("DEJAVU_NO_PROGRESS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DEJAVU_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    for fig in NOTEBOOKS[name]:
        assert (figs / fig).is_file() and (figs / fig).stat().st_size > 1000, fig
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))
