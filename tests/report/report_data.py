"""Generators of realistic result folders that follow docs/CONTRACTS.md exactly
(attack: dejavu-attack/1 + examples.csv + neighbour arrays; probe: dejavu-probe/1)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dejavu.io import atomic_save_npy, atomic_write_json

PS = ("5", "20", "100")


def fake_accs(epoch: int, npc: int, lr: float = 0.2, variant_shift: float = 0.0):
    """Known, distinct accuracies: memorization grows with epochs and shrinks with npc."""
    gap = min(0.4, epoch / 2500) * (300 / npc) * (lr / 0.2) - variant_shift
    ref = {"5": 0.50, "20": 0.35, "100": 0.20}
    tgt = {p: round(ref[p] + gap * (1.5 if p == "5" else 1.0 if p == "20" else 0.5), 6) for p in PS}
    return tgt, ref


def write_attack_result(
    out: Path,
    method="vicreg",
    npc=300,
    epoch=100,
    crop="periphery",
    embed="projector",
    model_cfg=None,
    fingerprint=None,
    variant_shift=0.0,
    counts=None,
) -> dict:
    cfg = {
        "method": method,
        "arch": "smallcnn",
        "projector": "64-32",
        "image_size": 32,
        "num_classes": 0,
        "npc": npc,
        "set": "A",
        "seed": 0,
        "lr": 0.2,
        **(model_cfg or {}),
    }
    tgt, ref = fake_accs(epoch, npc, cfg["lr"], variant_shift)
    p = [round(x, 4) for x in np.linspace(0.1, 1.0, 100)]
    top1 = {
        "target": tgt,
        "reference": ref,
        "dejavu_score": round(tgt["20"] - ref["20"], 6),
        "dejavu_score_100": round(tgt["100"] - ref["100"], 6),
        "ci95": {
            "dejavu_score": [tgt["20"] - ref["20"] - 0.03, tgt["20"] - ref["20"] + 0.03],
            "dejavu_score_100": [tgt["100"] - ref["100"] - 0.02, tgt["100"] - ref["100"] + 0.02],
        },
        "sweep": {
            "p": p,
            "target": [tgt["20"] + 0.1 * (1 - x) for x in p],
            "reference": [ref["20"] + 0.05 * (1 - x) for x in p],
        },
        "pairs": {"A_attk_A": tgt, "B_attk_B": tgt, "B_attk_A": ref, "A_attk_B": ref},
    }
    top5 = {
        **top1,
        "target": {k: min(1.0, v + 0.3) for k, v in tgt.items()},
        "reference": {k: min(1.0, v + 0.3) for k, v in ref.items()},
    }
    mem = round(tgt["100"] - ref["100"] + 0.05, 6)
    quadrants = {"memorized": mem, "correlated": 0.15, "forgotten": 0.05, "unassociated": round(0.8 - mem, 6)}
    res = {
        "format": "dejavu-attack/1",
        "config": {
            "crop": crop,
            "corner_frac": 0.3,
            "embed": embed,
            "k": 100,
            "k_attk": 100,
            "min_crop_px": 8,
            "image_size": 32,
            "knn": "torch",
            "npc": npc,
        },
        "method": method,
        "npc": npc,
        "epoch": epoch,
        "models": {
            s: {
                "path": f"runs/x/train/{method}_{npc}pc_{s}/model_ep{epoch}.pth",
                "sha256": "0" * 64,
                "epoch": epoch,
                "config": {**cfg, "set": s},
            }
            for s in ("A", "B")
        },
        "fingerprint": fingerprint or {"id": "fake"},
        "counts": counts
        or {
            "A": {"bbox": 3000, "attacked": 2900, "unattackable": 100, "annotation_errors": 0},
            "B": {"bbox": 3000, "attacked": 2900, "unattackable": 100, "annotation_errors": 0},
            "public": 600000,
        },
        "metrics": {
            "top1": top1,
            "top5": top5,
            "quadrants": quadrants,
            "quadrants_ci95": {k: [max(0, v - 0.02), v + 0.02] for k, v in quadrants.items()},
        },
    }
    atomic_write_json(out / "results.json", res)
    return res


def write_probe_result(out: Path, method="vicreg", npc=300, epoch=100, features="backbone", model_cfg=None) -> dict:
    cfg = {
        "method": method,
        "arch": "smallcnn",
        "projector": "64-32",
        "image_size": 32,
        "npc": npc,
        "set": "A",
        "seed": 0,
        "lr": 0.2,
        **(model_cfg or {}),
    }
    top1 = round(0.3 + epoch / 5000 + npc / 10000, 6)
    res = {
        "format": "dejavu-probe/1",
        "config": {"npc": npc, "features": features, "epochs": 100, "lr": 0.3, "batch_size": 256, "augment": True},
        "model": {
            "path": f"runs/x/train/{method}_{npc}pc_A/model_ep{epoch}.pth",
            "sha256": "0" * 64,
            "epoch": epoch,
            "config": cfg,
        },
        "method": method,
        "npc": npc,
        "epoch": epoch,
        "top1": top1,
        "top5": round(min(1.0, top1 + 0.35), 6),
        "fingerprint": {"id": "fake"},
    }
    atomic_write_json(out / "results.json", res)
    return res


def write_attack_arrays(out: Path, synth_root: Path, partition_root: Path, npc: int, k: int = 10, seed: int = 0):
    """Neighbour arrays, public set and examples.csv over the real synthetic dataset."""
    from dejavu.data.imagefolder import scan_imagefolder
    from dejavu.partition import Partition

    rng = np.random.default_rng(seed)
    index = scan_imagefolder(synth_root / "train")
    part = Partition.load(partition_root)
    public = part.attack_public()
    atomic_save_npy(out / "public_idxs.npy", public)
    atomic_save_npy(out / "public_labels.npy", index.targets[public])
    rows = []
    for Y in ("A", "B"):
        attacked = part.load_set(npc, f"bbox_{Y}")
        labels = index.targets[attacked]
        preds, confs = {}, {}
        for X in ("A", "B"):
            neigh = rng.integers(0, len(public), size=(len(attacked), k))
            nl = index.targets[public][neigh]
            atomic_save_npy(out / f"{X}_attk_{Y}_neighb_idxs.npy", neigh)
            atomic_save_npy(out / f"{X}_attk_{Y}_neighb_labels.npy", nl)
            atomic_save_npy(out / f"{X}_attk_{Y}_attk_idxs.npy", attacked)
            atomic_save_npy(out / f"{X}_attk_{Y}_labels.npy", labels)
            preds[X] = np.array([np.bincount(r, minlength=10).argmax() for r in nl])
            confs[X] = rng.uniform(-2.3, 0, len(attacked))
        other = "B" if Y == "A" else "A"
        for i, g in enumerate(attacked):
            ct, cr = bool(preds[Y][i] == labels[i]), bool(preds[other][i] == labels[i])
            quad = {
                (True, False): "memorized",
                (True, True): "correlated",
                (False, True): "forgotten",
                (False, False): "unassociated",
            }[(ct, cr)]
            rows.append(
                [
                    Y,
                    int(g),
                    int(labels[i]),
                    int(preds[Y][i]),
                    int(preds[other][i]),
                    f"{confs[Y][i]:.6f}",
                    f"{confs[other][i]:.6f}",
                    int(ct),
                    int(cr),
                    quad,
                ]
            )
    with open(out / "examples.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "set",
                "index",
                "label",
                "pred_target",
                "pred_reference",
                "conf_target",
                "conf_reference",
                "correct_target",
                "correct_reference",
                "quadrant",
            ]
        )
        w.writerows(rows)
    return rows
