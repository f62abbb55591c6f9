"""Build a small but real run for RCDM tests and the notebooks test:
synth -> partition -> two tiny SSL models (the training stage) -> attack -> two tiny RCDMs.

Layout (DESIGN 3)::

    RUN/partition/   RUN/train/vicreg_10pc_{A,B}/   RUN/attack/vicreg_10pc/ep<E>/
    RUN/rcdm/vicreg_10pc_{A,B}/
"""

from __future__ import annotations

from pathlib import Path

import torch

# A UNet small enough for tests: about 0.05 s per step at batch 16 on one core.
TINY = {
    "block_out_channels": [8, 16, 16],
    "norm_num_groups": 4,
    "cond_hidden": 64,
    "batch_size": 16,
    "diffusion_steps": 100,
    "ddim_steps": 8,
    "log_every": 5,
    "snapshot_every": 1000,
    "lr": 1e-3,
    "warmup_steps": 5,
}


def tiny_config(**kw):
    from dejavu.rcdm.model import RCDMConfig

    return RCDMConfig(**{**TINY, **kw})


def train_ssl_pair(run: Path, data: Path, partition: Path, npc: int = 10, epochs: int = 1) -> dict[str, Path]:
    """Two tiny SSL models with the real training stage."""
    from dejavu.data.imagefolder import DataPaths
    from dejavu.ssl.config import TrainConfig
    from dejavu.ssl.train import train

    paths = DataPaths.resolve(data=data)
    out = {}
    for s in "AB":
        cfg = TrainConfig(
            method="vicreg",
            arch="smallcnn",
            projector="64-32",
            image_size=32,
            epochs=epochs,
            batch_size=50,
            snapshot_every=epochs,
            knn_every=0,
            warmup_epochs=0,
            seed=ord(s),
        )
        res = train(
            cfg,
            paths,
            partition / f"{npc}_per_class" / f"train_{s}.npy",
            run / "train" / f"vicreg_{npc}pc_{s}",
            force=True,
        )
        out[s] = res.snapshots[-1]
    return out


def build_run(run: Path, data: Path, partition: Path, rcdm_steps: int = 30, npc: int = 10) -> dict:
    from dejavu.attack.run import AttackConfig, attack
    from dejavu.data.imagefolder import DataPaths
    from dejavu.rcdm.train import train_rcdm

    paths = DataPaths.resolve(data=data)
    models = train_ssl_pair(run, data, partition, npc)
    epoch = int(torch.load(models["A"], weights_only=True)["epoch"])
    att = run / "attack" / f"vicreg_{npc}pc" / f"ep{epoch}"  # the layout of `dejavu demo` and attack_runs
    attack(
        models["A"],
        models["B"],
        partition,
        paths,
        att,
        AttackConfig(npc=npc, k=20, k_attk=20, n_boot=20, device="cpu", workers=0),
        force=True,
    )
    rcdms = {}
    for s in "AB":
        rcdms[s] = run / "rcdm" / f"vicreg_{npc}pc_{s}"
        train_rcdm(tiny_config(steps=rcdm_steps), models[s], partition, paths, rcdms[s], force=True)
    return {"run": run, "models": models, "attack": att, "rcdm": rcdms, "paths": paths, "partition": partition}
