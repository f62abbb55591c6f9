"""Overhead of the online déjà vu monitor (``dejavu train --monitor``, issue 26) as a ratio
to training time.

On the demo's synthetic data (10 classes x 320 images at 32 px, npc 10, 100 control images
per class held out) it measures

* ``setup``: the monitor built once before training (subsample drawn, the crop classifier
  trained with the ``synth`` audit config), in seconds and as a share of the whole run;
* ``epoch``: one training epoch of the demo's model (VICReg smallcnn, the ``vicreg_synth``
  config), median over the run;
* ``score``: one monitor score at the default subsample, median;

and reports ``score / (every x epoch)``, the overhead at the default period (a tenth of the
default 300-epoch run: 30) and subsample (500 crops, 50 public images per class), and at the
periods given with ``--every``. A second row does the same at 4x the training images
(npc 40), where an epoch costs 4x as much and the score about the same.

Usage: python bench/bench_monitor.py [--epochs 20] [--every 10 30] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _machine import cpu_name  # bench/_machine.py (run as python bench/<name>.py)


def _data(root: Path, per_class: int):
    from dejavu.data.imagefolder import DataPaths
    from dejavu.data.synth import SynthConfig, generate

    cfg = SynthConfig(classes=10, per_class=per_class, size=32, annotated_fraction=120 / per_class, seed=0)
    generate(root / "data", cfg, force=True)
    return DataPaths.resolve(data=root / "data")


def measure(root: Path, paths, npc: int, epochs: int) -> dict:
    from dejavu.monitor import Monitor
    from dejavu.monitor.train_hook import epoch_hooks
    from dejavu.partition import partition
    from dejavu.ssl.config import TrainConfig, load_train_config
    from dejavu.ssl.train import train

    part = root / f"partition_{npc}"
    partition(paths, [npc], part, force=True, control=120 - 2 * npc)  # 120 annotated per class
    t0 = time.perf_counter()
    mon = Monitor(root / f"setup_{npc}", part, paths, npc, "A", image_size=32)  # the setup, timed alone
    setup = time.perf_counter() - t0
    sets = [f"epochs={epochs}", "snapshot_every=1000", "monitor=true", "monitor_every=1"]
    cfg = load_train_config(None, [*sets, f"monitor_reference={mon.classifier_path}"])
    run = root / f"run_{npc}"
    res = train(cfg, paths, part / f"{npc}_per_class" / "train_A.npy", run, device="cpu", epoch_hooks=epoch_hooks(cfg))
    rows = res.history
    st = json.loads((run / "monitor" / "monitor.json").read_text())
    return {
        "npc": npc,
        "train_images": len(np.load(part / f"{npc}_per_class" / "train_A.npy")),
        "crops": st["counts"]["crops"],
        "public": st["counts"]["public"],
        "setup": setup,
        "epoch": statistics.median(r["seconds"] for r in rows),
        "score": statistics.median(r["monitor_seconds"] for r in rows),
        "score_last": rows[-1]["monitor_score"],
        "default_every": TrainConfig().monitor_every or max(1, TrainConfig().epochs // 10),
        "default_epochs": TrainConfig().epochs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs trained (each one scored)")
    ap.add_argument("--every", type=int, nargs="*", default=[], help="other periods to report")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    import torch

    from dejavu.utils import set_torch_threads

    set_torch_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = _data(root, 320)
        rows = [measure(root, paths, npc, args.epochs) for npc in (10, 40)]
    lines = [
        f"## bench_monitor.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, {args.epochs} epochs each scored",
        "",
        "| npc | train images | crops | public | setup s (share of a default run) | epoch s | score s | "
        + " | ".join(f"overhead every {p}" for p in [rows[0]["default_every"], *args.every])
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * (1 + len(args.every)),
    ]
    for r in rows:
        run_s = r["default_epochs"] * r["epoch"]
        ratios = [r["score"] / (p * r["epoch"]) for p in [r["default_every"], *args.every]]
        lines.append(
            f"| {r['npc']} | {r['train_images']} | {r['crops']} | {r['public']} | {r['setup']:.1f} "
            f"({r['setup'] / run_s:.1%} of {r['default_epochs']} epochs) | {r['epoch']:.3f} | {r['score']:.3f} | "
            + " | ".join(f"{x:.1%}" for x in ratios)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        with open(Path(__file__).with_name("RESULTS.md"), "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
