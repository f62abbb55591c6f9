"""Watch memorization while a model trains: the online déjà vu monitor.

* :class:`Monitor` (:mod:`dejavu.monitor.core`): the one-model test of any model with an
  embedding function, on a fixed subsample and a fixed crop classifier;
* ``dejavu train --monitor`` (:mod:`dejavu.monitor.train_hook`) logs its scores to
  ``metrics.jsonl`` (and TensorBoard, :mod:`dejavu.monitor.tensorboard`);
* :class:`DejavuMonitorCallback` (:mod:`dejavu.monitor.lightning`): a PyTorch Lightning
  callback logging the scores through the trainer's loggers (needs ``pytorch_lightning``
  or ``lightning``; imported on first use).
"""

from __future__ import annotations

from typing import Any

from dejavu.monitor.core import SCALARS, Monitor, MonitorConfig, summarize

__all__ = ["SCALARS", "DejavuMonitorCallback", "Monitor", "MonitorConfig", "summarize"]


def __getattr__(name: str) -> Any:
    if name == "DejavuMonitorCallback":
        from dejavu.monitor.lightning import DejavuMonitorCallback

        return DejavuMonitorCallback
    raise AttributeError(f"module 'dejavu.monitor' has no attribute {name!r}")
