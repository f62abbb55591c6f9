"""The real SLURM scheduler of `.ci/slurm.sh` for the tests marked ``slurm``.

``.ci/run`` starts it and exports ``SLURM_CONF``; by hand: ``eval "$(.ci/slurm.sh start)"``.
Without a scheduler those tests skip, saying why (``DEJAVU_SLURM_SKIP`` carries the reason
``.ci/run`` got from ``.ci/slurm.sh start``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_CONF = Path(os.environ.get("DEJAVU_SLURM_DIR", "/tmp/dejavu-slurm")) / "slurm.conf"


def _why_no_slurm() -> str | None:
    if os.environ.get("DEJAVU_SLURM_SKIP"):
        return os.environ["DEJAVU_SLURM_SKIP"]
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not found); start one with .ci/slurm.sh start"
    conf = os.environ.get("SLURM_CONF") or (str(DEFAULT_CONF) if DEFAULT_CONF.is_file() else None)
    env = {**os.environ, **({"SLURM_CONF": conf} if conf else {})}
    try:
        p = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "the SLURM scheduler does not answer (sinfo timed out after 30 s)"
    states = p.stdout.split()
    if p.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"the SLURM scheduler does not answer or has no usable node: {(p.stderr or p.stdout).strip()[:200]}"
    if conf:
        os.environ["SLURM_CONF"] = conf
    return None


@dataclass
class Slurm:
    """Helpers on the running scheduler (jobs are looked up with scontrol: no accounting)."""

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict ({} once the job is forgotten)."""
        p = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", p.stdout)) if p.returncode == 0 else {}

    def state(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "GONE")

    def wait(self, job_id: str, until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout: float = 120) -> str:
        """Poll until the job reaches one of ``until``; returns that state."""
        end = time.time() + timeout
        while time.time() < end:
            s = self.state(job_id)
            if s in until:
                return s
            time.sleep(0.5)
        raise AssertionError(f"job {job_id}: still {self.job(job_id)} after {timeout} s")

    def gpus(self) -> int:
        """GPUs the scheduler's node advertises (``.ci/slurm.sh`` with ``DEJAVU_SLURM_GPUS``)."""
        p = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, check=False)
        m = re.search(r"gpu:(\d+)", p.stdout)
        return int(m.group(1)) if m else 0

    def requeue(self, job_id: str) -> None:
        subprocess.run(["scontrol", "requeue", str(job_id)], check=True)


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    why = _why_no_slurm()
    if why:
        pytest.skip(why)
    return Slurm()
