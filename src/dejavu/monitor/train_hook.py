"""What ``dejavu train`` does after each epoch besides training: the online monitor
(``--monitor``) and TensorBoard (``--tensorboard``), as epoch hooks of
:func:`dejavu.ssl.train.train`; :func:`epoch_hooks` builds those a :class:`TrainConfig` turns on.

The monitor (:class:`dejavu.monitor.Monitor`) lives in ``OUT/monitor``: set up before the
first epoch (the subsample drawn and recorded, the crop classifier trained or loaded), kept on
``--resume`` (the recorded subsample and classifier are reused; other monitor settings are
refused), discarded by ``--force``. Every ``monitor_every`` epochs (0: a tenth of the run) and
at the last one, the epoch's ``metrics.jsonl`` row gets ``monitor_<key>`` for each of the
monitor's numbers and ``monitor_seconds`` (the time it took, not counted in ``seconds``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dejavu import DejavuError
from dejavu.monitor.core import Monitor, MonitorConfig
from dejavu.monitor.tensorboard import ScalarLog, require_tensorboard
from dejavu.partition import find_partition, parse_index_name
from dejavu.ssl.config import TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from dejavu.ssl.train import EpochHook, TrainRun


def epoch_hooks(cfg: TrainConfig) -> list[EpochHook]:
    """The hooks ``cfg`` turns on, for ``train(..., epoch_hooks=...)``: the monitor, then
    TensorBoard (which logs the monitor's numbers too). What ``dejavu train`` and the demo pass.

    Raises:
        UsageError: ``tensorboard`` without the package (with the install command).
    """
    hooks: list[EpochHook] = []
    if cfg.monitor:
        hooks.append(MonitorHook())
    if cfg.tensorboard:
        require_tensorboard("--tensorboard")
        hooks.append(TensorBoardHook())
    return hooks


class MonitorHook:
    """The online monitor of a run: scores the model on every ``monitor_every``-th epoch and the last."""

    setting = "monitor"

    def __init__(self) -> None:
        self.monitor: Monitor | None = None
        self.every = self.epochs = 1

    def open(self, run: TrainRun) -> None:
        """Set up (or, on a resumed run, reload) the monitor in ``OUT/monitor``.

        Raises:
            DejavuError: the index file is not a partition's train set.
        """
        self.every = run.cfg.monitor_every or max(1, run.cfg.epochs // 10)
        self.epochs = run.cfg.epochs
        self.monitor = _open_monitor(run)

    def after_epoch(self, model: nn.Module, row: dict[str, Any]) -> None:
        """Add ``monitor_*`` to ``row`` on a monitored epoch."""
        epoch = int(row["epoch"])
        if self.monitor is not None and (epoch % self.every == 0 or epoch == self.epochs):
            res = self.monitor.score(model, epoch=epoch)
            row.update({f"monitor_{k}": v for k, v in res.items() if k != "epoch"})


class TensorBoardHook:
    """Each epoch's metrics row as TensorBoard scalars in ``OUT/tb`` (:class:`ScalarLog`)."""

    setting = "tensorboard"

    def __init__(self) -> None:
        self.log: ScalarLog | None = None
        self.epochs = 0

    def open(self, run: TrainRun) -> None:
        self.log = ScalarLog(run.out / "tb", int(run.ckpt["epoch"]) if run.ckpt is not None else 0)
        self.epochs = run.cfg.epochs

    def after_epoch(self, model: nn.Module, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.log(row)
            if int(row["epoch"]) == self.epochs:
                self.log.close()


def _open_monitor(run: TrainRun) -> Monitor:
    """The run's :class:`Monitor` in ``OUT/monitor`` (the audited set from the index file's name)."""
    cfg = run.cfg
    npc, which = parse_index_name(run.index_file)
    part = find_partition(Path(run.index_file))
    if npc is None or which is None or part is None:
        raise DejavuError(
            f"{run.index_file}: --monitor needs a partition's training set (P/<npc>_per_class/train_A.npy or "
            "train_B.npy): it audits that split's bbox set"
        )
    mcfg = MonitorConfig(
        cfg.monitor_crops,
        cfg.monitor_public_per_class,
        cfg.monitor_seed,
        cfg.monitor_audit,
        list(cfg.monitor_audit_set),
    )
    return Monitor(
        run.out / "monitor",
        part,
        run.paths,
        npc,
        audited=which,
        cfg=mcfg,
        reference_model=cfg.monitor_reference or None,
        image_size=cfg.image_size,
        index=run.index,
        force=run.force and run.ckpt is None,
        device=str(run.device),
    )
