"""The README's "Python API" block runs as written (in a temporary folder) and does what it
says: a partition, two models, an attack with a held-out control, results read back, and an
audit of a model held in memory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_python_api_block_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _block()], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"deja vu score [+-]\d+\.\d points, 95% CI over examples \(", out)
    assert "excess over the held-out control: {" in out
    assert "one-model deja vu score (top-1, 20%)" in out and "held-out control (partition)" in out
    assert (tmp_path / "runs" / "api" / "audit" / "A" / "audited_model.pth").is_file()
    assert (tmp_path / "runs" / "api" / "audit" / "A" / "results.json").is_file()
