"""Partition at ImageNet scale on a tree of empty files.

Creates ROOT/train/<wnid>/<wnid>_<n>.JPEG (1000 classes, 732-1300 files each,
1.28M in all) and ROOT/bboxes/Annotation/<wnid>/<wnid>_<n>.xml for ~42% of them
(544k), then times ``dejavu partition`` (scan + annotation listing + split +
invariants + writes) and reports peak memory.

    python bench/bench_partition_scale.py /tmp/imnet_shape [--classes 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np


def make_tree(root: Path, classes: int, seed: int = 0) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    n_img = n_xml = 0
    for c in range(classes):
        w = f"n{1440764 + c * 997:08d}"
        count = 1300 if rng.random() < 0.9 else int(rng.integers(732, 1300))
        ids = np.sort(rng.choice(200000, size=count, replace=False))
        d = root / "train" / w
        d.mkdir(parents=True, exist_ok=True)
        a = root / "bboxes" / "Annotation" / w
        a.mkdir(parents=True, exist_ok=True)
        ann = rng.random(count) < 0.425
        for i, flag in zip(ids, ann):
            open(d / f"{w}_{i}.JPEG", "wb").close()
            if flag:
                open(a / f"{w}_{i}.xml", "wb").close()
        n_img += count
        n_xml += int(ann.sum())
    return n_img, n_xml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--classes", type=int, default=1000)
    args = ap.parse_args()
    root = Path(args.root)
    if not (root / "train").exists():
        t = time.time()
        n_img, n_xml = make_tree(root, args.classes)
        print(f"made {n_img} images, {n_xml} annotations in {time.time() - t:.0f}s")
    from dejavu.data.imagefolder import DataPaths
    from dejavu.partition import format_summary, partition

    t = time.time()
    res = partition(DataPaths.resolve(data=root), [100, 200, 300, 400, 500], root / "partition", force=True)
    dt = time.time() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(format_summary(res))
    print(f"partition: {dt:.1f}s, peak RSS {rss:.0f} MiB, pid {os.getpid()}")


if __name__ == "__main__":
    main()
