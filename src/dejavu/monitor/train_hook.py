"""What ``dejavu train`` does after each epoch besides training: the online monitor
(``--monitor``) and TensorBoard (``--tensorboard``). One call per epoch from
:func:`dejavu.ssl.train.train`: :meth:`EpochHooks.after_epoch`.

The monitor (:class:`dejavu.monitor.Monitor`) lives in ``OUT/monitor``: set up before the
first epoch (the subsample drawn and recorded, the crop classifier trained or loaded), kept on
``--resume`` (the recorded subsample and classifier are reused; other monitor settings are
refused), discarded by ``--force``. Every ``monitor_every`` epochs (0: a tenth of the run) and
at the last one, the
epoch's ``metrics.jsonl`` row gets ``monitor_<key>`` for each of the monitor's numbers and
``monitor_seconds`` (the time it took, not counted in ``seconds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dejavu import DejavuError
from dejavu.monitor.core import Monitor, MonitorConfig
from dejavu.partition import find_partition, parse_index_name


@dataclass
class EpochHooks:
    """The monitor and the TensorBoard log of one run (either may be off)."""

    every: int
    epochs: int
    monitor: Any = None  # dejavu.monitor.Monitor
    tb: Any = None  # dejavu.monitor.tensorboard.ScalarLog

    @classmethod
    def open(cls, run: Any, paths: Any, force: bool) -> EpochHooks:
        """The hooks of a run (:class:`dejavu.ssl.train._Run`): nothing on other ranks than the
        main one, nor when ``monitor`` and ``tensorboard`` are off.

        Raises:
            UsageError: ``tensorboard`` without the package (with the install command).
            DejavuError: ``monitor`` on an index file that is not a partition's train set.
        """
        cfg = run.cfg
        hooks = cls(cfg.monitor_every or max(1, cfg.epochs // 10), cfg.epochs)
        if not run.dinfo.is_main:
            return hooks
        resumed = run.ckpt is not None
        if cfg.tensorboard:
            from dejavu.monitor.tensorboard import ScalarLog

            hooks.tb = ScalarLog(run.out / "tb", int(run.ckpt["epoch"]) if resumed else 0)
        if cfg.monitor:
            hooks.monitor = _open_monitor(run, paths, force=force and not resumed)
        return hooks

    def after_epoch(self, model: Any, row: dict[str, Any]) -> None:
        """Score the model on a monitored epoch (adding ``monitor_*`` to ``row``), then log ``row``."""
        epoch = int(row["epoch"])
        if self.monitor is not None and (epoch % self.every == 0 or epoch == self.epochs):
            res = self.monitor.score(model, epoch=epoch)
            row.update({f"monitor_{k}": v for k, v in res.items() if k != "epoch"})
        if self.tb is not None:
            self.tb.log(row)
            if epoch == self.epochs:
                self.tb.close()


def _open_monitor(run: Any, paths: Any, force: bool) -> Any:
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
        paths,
        npc,
        audited=which,
        cfg=mcfg,
        reference_model=cfg.monitor_reference or None,
        image_size=cfg.image_size,
        index=run.index,
        force=force,
        device=str(run.device),
    )
