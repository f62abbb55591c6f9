"""A PyTorch Lightning callback: the online déjà vu monitor in any Lightning training loop
(lightly, solo-learn, your own), its scores logged through the trainer's loggers.

The callback derives from the ``Callback`` of each Lightning package installed
(``lightning.pytorch`` and ``pytorch_lightning``, which lightly brings), so a trainer of
either accepts it.

Example (the five lines a lightly or solo-learn user adds)::

    from dejavu.monitor import DejavuMonitorCallback, Monitor
    monitor = Monitor("runs/monitor", "runs/partition", "runs/data", npc=100, audited="A", image_size=32)
    callback = DejavuMonitorCallback(monitor, model=lambda m: m.backbone, every=10)
    trainer = pl.Trainer(max_epochs=100, callbacks=[callback])  # + the loggers you use
    trainer.fit(model, loader)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dejavu import UsageError
from dejavu.monitor.core import SCALARS, Monitor


def _bases() -> tuple[type, ...]:
    found: list[type] = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            mod = __import__(name, fromlist=["Callback"])
        except ImportError:
            continue
        found.append(mod.Callback)
    if not found:
        raise UsageError("DejavuMonitorCallback needs PyTorch Lightning: pip install lightning (or pytorch_lightning)")
    return tuple(found)


def log_values(res: dict[str, Any], prefix: str = "dejavu/") -> dict[str, float]:
    """The monitor's numbers as logger metrics: each scalar, and CI bounds as ``_lo``/``_hi``.

    Args:
        res: :meth:`Monitor.score`'s answer.
        prefix: put before every name.

    Returns:
        ``{prefix + name: float}`` (missing values left out).
    """
    out: dict[str, float] = {}
    for k in SCALARS:
        v = res.get(k)
        if v is not None:
            out[prefix + k] = float(v)
        ci = res.get(k + "_ci95")
        if ci is not None:
            out[prefix + k + "_ci95_lo"], out[prefix + k + "_ci95_hi"] = float(ci[0]), float(ci[1])
    return out


class DejavuMonitorCallback(*_bases()):  # type: ignore[misc]
    """Score the model with a :class:`Monitor` at the end of every ``every``-th training epoch
    (and the last one) and log the numbers through ``trainer.loggers`` at the global step.

    Args:
        monitor: the monitor (its subsample and classifier are fixed when it is built).
        model: ``pl_module -> module or callable`` giving what is scored (e.g.
            ``lambda m: m.backbone``); default: the LightningModule itself (its forward must
            return embeddings).
        every: epochs between scores.
        prefix: put before the logged names (``dejavu/score``, ``dejavu/memorized``, ...).

    Attributes:
        history: every score so far (:meth:`Monitor.score`'s answers, with ``epoch``).
    """

    def __init__(
        self,
        monitor: Monitor,
        model: Callable[[Any], Any] | None = None,
        every: int = 1,
        prefix: str = "dejavu/",
    ):
        super().__init__()
        if every < 1:
            raise UsageError(f"DejavuMonitorCallback: every must be >= 1, got {every}")
        self.monitor, self.model, self.every, self.prefix = monitor, model, int(every), prefix
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = int(trainer.current_epoch) + 1
        last = trainer.max_epochs is not None and epoch == int(trainer.max_epochs)
        if (epoch % self.every and not last) or not trainer.is_global_zero:
            return
        target = self.model(pl_module) if self.model is not None else pl_module
        res = self.monitor.score(target, epoch=epoch)
        self.history.append(res)
        values = log_values(res, self.prefix)
        for lg in trainer.loggers:
            lg.log_metrics({**values, "epoch": epoch}, step=trainer.global_step)
