"""TensorBoard scalars of a training run (the optional ``tensorboard`` extra).

:class:`ScalarLog` writes the numeric values of each ``metrics.jsonl`` row (loss, lr,
throughput, online kNN accuracy, the monitor's scores) as scalars at step = epoch into
``OUT/tb``. A resumed run drops the events past the epoch it resumes from, a new run
all earlier ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dejavu import UsageError

INSTALL_HINT = "pip install 'dejavu-ssl[tensorboard]' (or: pip install tensorboard)"
# metrics.jsonl keys -> TensorBoard tags (monitor_* keys go under monitor/)
TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "seconds": "train/epoch_seconds",
    "knn_top1": "eval/knn_top1",
}


def require_tensorboard(what: str = "tensorboard") -> None:
    """Raise a one-line :class:`UsageError` with the install command when TensorBoard is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs the tensorboard package, not installed here: {INSTALL_HINT}") from None


def tag_of(key: str) -> str | None:
    """The TensorBoard tag of a ``metrics.jsonl`` key (None: not logged)."""
    if key in TAGS:
        return TAGS[key]
    if key.startswith("monitor_"):
        return "monitor/" + key[len("monitor_") :]
    return None


class ScalarLog:
    """Scalars of each epoch's metrics row into ``logdir`` (a TensorBoard event file).

    Args:
        logdir: the event folder (``OUT/tb``).
        start_epoch: the epochs already done (a resumed run): TensorBoard drops the folder's
            events of later epochs (all of them for a run starting at 0).
    """

    def __init__(self, logdir: str | os.PathLike, start_epoch: int = 0):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.writer = SummaryWriter(str(self.logdir), purge_step=start_epoch + 1)

    def log(self, row: dict[str, Any]) -> None:
        """Write a metrics row's numbers at step ``row["epoch"]`` (CI pairs as ``_lo``/``_hi``)."""
        step = int(row["epoch"])
        for k, v in row.items():
            tag = tag_of(k)
            if tag is None or v is None:
                continue
            if isinstance(v, (list, tuple)) and len(v) == 2:
                self.writer.add_scalar(tag + "_lo", float(v[0]), step)
                self.writer.add_scalar(tag + "_hi", float(v[1]), step)
            elif isinstance(v, (int, float)):
                self.writer.add_scalar(tag, float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
