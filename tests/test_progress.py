"""Progress output: bars on a terminal, whole lines in logs, nothing when disabled."""

import os
import subprocess
import sys

LOOP = (
    "from dejavu.utils import progress\n"
    "bar = progress(range(5), desc='epochs')\n"
    "for i in bar:\n"
    "    bar.set_postfix(loss=f'{1.0 / (i + 1):.3f}')\n"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("DEJAVU_NO_PROGRESS", "TQDM_DISABLE")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, check=True)


def test_non_tty_prints_lines_not_redrawn_bars():
    err = _run(LOOP, DEJAVU_PROGRESS_INTERVAL="0").stderr
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("epochs: started 0/5")
    assert lines[-1].startswith("epochs: done 5/5") and "loss=0.200" in lines[-1]
    assert len(lines) == 7  # start, one per item (interval 0), done


def test_non_tty_iterates_numpy_arrays():
    # index arrays are the common iterable of our loops: no truth-value test on them
    code = "import numpy as np\nfrom dejavu.utils import progress\nprint(sum(int(i) for i in progress(np.arange(4), desc='x')))"
    out = _run(code)
    assert out.stdout.strip() == "6" and "x: done 4/4" in out.stderr


def test_non_tty_default_interval_gives_start_and_end_only():
    lines = _run(LOOP).stderr.splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["started", "done"]


def test_disabled_by_tqdm_disable_and_dejavu_no_progress():
    assert _run(LOOP, TQDM_DISABLE="1").stderr == ""
    assert _run(LOOP, DEJAVU_NO_PROGRESS="1").stderr == ""


def test_cli_stage_log_is_line_based(tmp_path):
    code = (
        "import sys; from dejavu.cli import main; "
        f"sys.exit(main(['data', 'synth', '--out', {str(tmp_path / 's')!r}, '--classes', '2', "
        "'--per-class', '3', '--workers', '1']))"
    )
    err = _run(code).stderr
    assert "\r" not in err and "synth: done 2/2" in err
