"""Calibration of the déjà vu significance tests on the synthetic default (issue 11).

For each method (VICReg, SimCLR) trains N model pairs that differ only in the training
seed (``dejavu demo --quick --pairs N``: same data and partition, held-out control of 40
annotated images per class), then measures on the held-out control, where no memorization
is possible, how often each test calls a difference "significant":

* **today's test**: the example-level 95% bootstrap CI of the control's score (target −
  reference at 20%) excludes 0; over every pair, for the stored split and for R random
  re-splits of the control into halves (within each class);
* **the new test** (:func:`dejavu.analysis.significance.pair_level`): the control is cut
  at random into two disjoint controls (each again in two halves); the first plays the
  private sets, the second the control; the pair-level 95% interval of the mean excess over
  the N pairs excludes 0. Repeated over R random cuts. Also shown: the same interval without
  its example term (the spread over pairs alone).
* **power**: the new test on the real score vs the stored control (one verdict per method),
  and at the demo's effect with fewer pairs: the share of all C(N, 3) subsets of 3 pairs
  (and the one N-pair set) whose interval excludes 0, with an exact interval (the subsets
  overlap, so that interval is too narrow; the N-pair set is a single draw).

Usage: python bench/bench_significance.py [--pairs 5] [--out runs/bench_significance] [--cuts 100]
       [--methods vicreg,simclr] [--epochs 60] [--design independent|coupled] [--append bench/RESULTS.md]
``--design`` (issue 28): how each pair's two models are seeded (``train.design``; independent,
the default, or coupled = the same seed, the design of the table measured before issue 28).
Every false-positive rate is given with its exact (Clopper-Pearson) 95% Monte-Carlo interval.
Runs the demos first (skipped when their summary.json exists), then the analysis (seconds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dejavu.analysis.bootstrap import bootstrap_cis
from dejavu.analysis.metrics import ARRAYS, score_at
from dejavu.analysis.significance import (
    control_scores_from_folder,
    excess,
    pair_level,
    shared_example_variance,
)
from dejavu.analysis.tables import scores_from_arrays
from dejavu.io import load_npy, read_json

KEYS = ("attk_idxs", "labels", "neighb_labels")


def pooled_control(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Model X's stored arrays on every control image (both halves), rows aligned between models."""
    out = {}
    for x in "AB":
        parts = [{k: load_npy(folder / f"control_{x}_attk_{y}_{k}.npy") for k in KEYS} for y in "AB"]
        out[x] = {
            k: np.concatenate(
                [p[k].reshape(len(p[k]), -1) if k == "neighb_labels" else p[k].reshape(-1) for p in parts]
            )
            for k in KEYS
        }
    assert np.array_equal(out["A"]["attk_idxs"], out["B"]["attk_idxs"])
    return out


def main_scores(folder: Path, k: int, c: int):
    arr = {n: {key: load_npy(folder / f"{n}_{key}.npy") for key in KEYS} for n in ARRAYS}
    for a in arr.values():
        a["labels"] = a["labels"].reshape(-1)
    return {n: scores_from_arrays(a, k, c) for n, a in arr.items()}


def split_scores(pool, rows: dict[str, np.ndarray], k: int, c: int):
    """The four X_attk_Y scores when the pooled rows ``rows['A']``/``rows['B']`` are the halves."""
    return {
        f"{x}_attk_{y}": scores_from_arrays({key: pool[x][key][rows[y]] for key in KEYS}, k, c)
        for x in "AB"
        for y in "AB"
    }


def random_parts(labels: np.ndarray, n_parts: int, rng) -> list[np.ndarray]:
    """Rows cut at random into ``n_parts`` class-balanced parts (round robin within a class)."""
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    for cl in np.unique(labels):
        rows = rng.permutation(np.nonzero(labels == cl)[0])
        off = int(rng.integers(n_parts))
        for i, r in enumerate(rows):
            parts[(i + off) % n_parts].append(int(r))
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def rate_ci(hits: list[bool]) -> list[float]:
    """Exact (Clopper-Pearson) 95% interval of a Monte-Carlo rate (scipy)."""
    from scipy.stats import binomtest

    if not hits:
        return [float("nan")] * 2
    ci = binomtest(int(sum(hits)), len(hits)).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def subset_power(real: list, sizes: tuple[int, ...] = (3, 5), n_boot: int = 1000, seed: int = 0) -> dict:
    """Power of the new test at the demo's effect with fewer pairs: for each size ``m``, the
    share of all C(N, m) subsets of the N trained pairs whose pair-level 95% interval of the
    real excess (score vs stored control, top-1 at 20%) excludes 0, with its exact interval.

    The subsets share pairs, so they are not independent draws: the interval treats them as if
    they were and is too narrow; with m = N there is one subset, one draw.
    """
    ex = [excess(p, cp, n_boot=n_boot, seed=seed)["top1"]["20"]["excess"] for p, cp in real]
    out = {}
    for m in sizes:
        if m > len(real):
            continue
        hits = []
        for sub in itertools.combinations(range(len(real)), m):
            sv = shared_example_variance([real[i] for i in sub], n_boot=n_boot, seed=seed)[("top1", "20")]
            hits.append(bool(pair_level([ex[i] for i in sub], shared_var=sv)["distinguishable"]))
        out[str(m)] = {
            "subsets": len(hits),
            "detected": int(sum(hits)),
            "power": float(np.mean(hits)),
            "ci95": rate_ci(hits),
        }
    return out


def run_demos(method: str, out: Path, pairs: int, epochs: int, design: str = "independent") -> dict:
    from dejavu.demo import DemoConfig, run_demo

    d = out / design / method
    if (d / "summary.json").is_file():
        return read_json(d / "summary.json")
    t = time.time()
    cfg = DemoConfig.quick(
        out=str(d),
        method=method,
        pairs=pairs,
        epochs=epochs,
        snapshot_every=epochs,
        probe_epochs=0,
        report=False,
        train={"design": design},
    )
    res = run_demo(cfg, force=True)
    print(f"{method}: {pairs} pairs in {time.time() - t:.0f}s", flush=True)
    return res.summary


def analyse(method: str, out: Path, summary: dict, cuts: int, n_boot: int, seed: int = 0) -> dict:
    """``out``: the folder holding ``<method>/`` (the design's folder)."""
    cfg = summary["config"]
    k, c = cfg["k"], cfg["classes"]
    tag = f"{method}_{cfg['npc']}pc"
    folders = [
        out
        / method
        / "attack"
        / (tag if len(summary["seeds"]) == 1 else f"{tag}_seed{s}")
        / f"ep{summary['final']['epoch']}"
        for s in summary["seeds"]
    ]
    res = [read_json(f / "results.json") for f in folders]
    pools = [pooled_control(f) for f in folders]
    rng = np.random.default_rng(seed)
    # today's test on the stored split, and on random re-splits of the control
    # everything recomputed from the stored arrays with this version's metrics
    real = [(main_scores(f, k, c), control_scores_from_folder(f, k, c)) for f in folders]
    stored = [score_at(bootstrap_cis(cp, n_boot=1000, seed=seed + 1)["top1"]) for _, cp in real]
    today_stored = [lo > 0 or hi < 0 for lo, hi in stored]
    today_resplit, new_fp, new_fp_bound, new_fp_pairs_only = [], [], [], []
    labels = pools[0]["A"]["labels"]
    for _ in range(cuts):
        halves = random_parts(labels, 2, rng)
        quarters = random_parts(labels, 4, rng)
        exs, items = [], []
        for pool in pools:
            cp = split_scores(pool, {"A": halves[0], "B": halves[1]}, k, c)
            lo, hi = score_at(bootstrap_cis(cp, n_boot=n_boot, seed=int(rng.integers(1 << 30)))["top1"])
            today_resplit.append(lo > 0 or hi < 0)
            p1 = split_scores(pool, {"A": quarters[0], "B": quarters[1]}, k, c)
            p2 = split_scores(pool, {"A": quarters[2], "B": quarters[3]}, k, c)
            exs.append(excess(p1, p2, n_boot=n_boot, seed=int(rng.integers(1 << 30)))["top1"]["20"])
            items.append((p1, p2))
        sv = shared_example_variance(items, n_boot=n_boot, seed=int(rng.integers(1 << 30)))[("top1", "20")]
        pl = pair_level([x["excess"] for x in exs], shared_var=sv)
        new_fp.append(bool(pl["distinguishable"]))
        new_fp_bound.append(bool(pair_level([x["excess"] for x in exs], [x["se"] for x in exs])["distinguishable"]))
        new_fp_pairs_only.append(bool(pair_level([x["excess"] for x in exs])["distinguishable"]))
    ex = [excess(p, cp, n_boot=1000, seed=seed)["top1"]["20"] for p, cp in real]
    sv = shared_example_variance(real, n_boot=1000, seed=seed)[("top1", "20")]
    power = pair_level([x["excess"] for x in ex], shared_var=sv)
    bound = pair_level([x["excess"] for x in ex], [x["se"] for x in ex])
    alone = pair_level([x["excess"] for x in ex])
    return {
        "method": method,
        "pairs": len(res),
        "cuts": cuts,
        "n_boot": n_boot,
        "scores": [x["score"] for x in ex],
        "controls": [x["control"] for x in ex],
        "excess_example_ci_excludes_0": [x["excludes_zero"] for x in ex],
        "today_fp_stored": float(np.mean(today_stored)),
        "today_fp_resplit": float(np.mean(today_resplit)),
        "new_fp": float(np.mean(new_fp)),
        "new_fp_ci95": rate_ci(new_fp),
        "today_fp_resplit_ci95": rate_ci(today_resplit),
        "new_fp_bound": float(np.mean(new_fp_bound)),
        "new_fp_pairs_only": float(np.mean(new_fp_pairs_only)),
        "real": {
            "mean": power["mean"],
            "ci95": power["ci95"],
            "distinguishable": power["distinguishable"],
            "shared_var": sv,
            "sd_over_pairs": power["sd_over_pairs"],
        },
        "real_bound": {"ci95": bound["ci95"], "distinguishable": bound["distinguishable"]},
        "real_pairs_only": {"ci95": alone["ci95"], "distinguishable": alone["distinguishable"]},
        "power": subset_power(real, seed=seed),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| method | pairs | today's FPR: stored split | today's FPR: re-splits | **new test FPR** "
        "| FPR, bound variant | FPR, pairs only | real excess @20%: mean [95% over pairs] | **detected** "
        "| detected: bound / pairs only |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]

    def yes(x):
        return "yes" if x else "no"

    for r in rows:
        lo, hi = r["real"]["ci95"]
        lines.append(
            f"| {r['method']} | {r['pairs']} | {100 * r['today_fp_stored']:.0f}% "
            f"| {100 * r['today_fp_resplit']:.1f}% | **{100 * r['new_fp']:.0f}%** "
            f"[{100 * r['new_fp_ci95'][0]:.0f}, {100 * r['new_fp_ci95'][1]:.0f}] "
            f"| {100 * r['new_fp_bound']:.0f}% | {100 * r['new_fp_pairs_only']:.0f}% "
            f"| {100 * r['real']['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] "
            f"| **{yes(r['real']['distinguishable'])}** | {yes(r['real_bound']['distinguishable'])} / "
            f"{yes(r['real_pairs_only']['distinguishable'])} |"
        )
    return "\n".join(lines)


def power_table(rows: list[dict]) -> str:
    """Per design and method: the new test's FPR and its power with 3 and 5 pairs, each with its
    exact 95% Monte-Carlo interval."""
    lines = [
        "| design | method | new test FPR [95% MC] | power, 3 pairs [95%] | power, 5 pairs [95%] |",
        "|---|---|---|---|---|",
    ]

    def cell(d: dict | None) -> str:
        if d is None:
            return "-"
        lo, hi = d["ci95"]
        return f"{d['detected']}/{d['subsets']} = {100 * d['power']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"

    for r in rows:
        lo, hi = r["new_fp_ci95"]
        fp = f"{round(r['new_fp'] * r['cuts'])}/{r['cuts']} = {100 * r['new_fp']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"
        pw = r["power"]
        lines.append(f"| {r['design']} | {r['method']} | {fp} | {cell(pw.get('3'))} | {cell(pw.get('5'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--methods", default="vicreg,simclr")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--cuts", type=int, default=100)
    ap.add_argument("--bootstrap", type=int, default=300)
    ap.add_argument("--out", default="runs/bench_significance")
    ap.add_argument("--design", default="independent", choices=("independent", "coupled"))
    ap.add_argument("--append", default=None, help="append the table to this markdown file")
    a = ap.parse_args(argv)
    out = Path(a.out)
    t0 = time.time()
    rows = []
    for m in a.methods.split(","):
        s = run_demos(m, out, a.pairs, a.epochs, a.design)
        rows.append({**analyse(m, out / a.design, s, a.cuts, a.bootstrap), "design": a.design})
        print(json.dumps(rows[-1]), flush=True)
    (out / a.design / "bench_significance.json").write_text(json.dumps(rows, indent=1))
    txt = table(rows) + "\n\n" + power_table(rows)
    print(txt)
    if a.append:
        with open(a.append, "a") as f:
            f.write(
                f"\n## bench_significance.py ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
                f"{platform.processor() or platform.machine()}, {time.time() - t0:.0f} s)\n\n"
                f"`dejavu demo --quick` recipe, {a.epochs} epochs, {a.pairs} seed pairs per method, "
                f"design {a.design}, "
                f"control 40/class; FPR = share of 95% intervals excluding 0 on the held-out control "
                f"(top-1, 20%).\n\n{txt}\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
