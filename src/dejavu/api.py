"""Python entry points for models held in memory (the README's "Python API").

Every stage reads its models from checkpoint files, so that results name the file (and its
sha256) they came from. :func:`save_checkpoint` writes an :class:`~dejavu.ssl.model.SSLModel`
in the format the stages read, and :func:`audit_model` audits a model in memory by writing
it into the audit folder first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dejavu import formats
from dejavu.audit.run import AuditResult, audit
from dejavu.io import atomic_torch_save

if TYPE_CHECKING:
    from dejavu.audit.config import AuditConfig
    from dejavu.data.imagefolder import DataPaths, DatasetIndex
    from dejavu.ssl.model import SSLModel


def save_checkpoint(
    model: SSLModel,
    path: str | os.PathLike,
    method: str = "vicreg",
    image_size: int = 32,
    epoch: int = 0,
    npc: int | None = None,
    set_name: str | None = None,
    index: DatasetIndex | None = None,
) -> Path:
    """Write an in-memory model as a checkpoint every stage reads (``dejavu-ckpt/1``).

    Args:
        model: a :class:`dejavu.ssl.model.SSLModel` (its ``spec`` gives arch, projector and classes).
        path: the file to write (atomically).
        method: the training method recorded (the attack and the probe read it).
        image_size: the input side the model was trained at.
        epoch: the training epoch recorded.
        npc: images per class of its training split, when trained on a partition's split.
        set_name: ``"A"`` or ``"B"``, the split it was trained on (lets the audit pick a control).
        index: the dataset's :class:`~dejavu.data.imagefolder.DatasetIndex`, to record its fingerprint.

    Returns:
        ``path``.
    """
    config = {**model.spec.to_dict(), "method": method, "image_size": image_size}
    config.update({k: v for k, v in (("npc", npc), ("set", set_name)) if v is not None})
    ck: dict[str, Any] = {"format": formats.CHECKPOINT, "model": model.state_dict(), "epoch": epoch, "config": config}
    if index is not None:
        ck["fingerprint"] = index.fingerprint.to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, ck)
    return path


def audit_model(
    model: SSLModel,
    partition: str | os.PathLike,
    paths: DataPaths,
    out: str | os.PathLike,
    cfg: AuditConfig | None = None,
    **kwargs: Any,
) -> AuditResult:
    """Audit an in-memory :class:`~dejavu.ssl.model.SSLModel`: it is written to
    ``OUT/audited_model.pth`` (what the results name), then :func:`dejavu.audit.run.audit` runs.

    Args:
        model: the model; ``kwargs`` ``method``, ``image_size``, ``epoch``, ``npc``, ``set_name``
            and ``index`` go to :func:`save_checkpoint`, the rest to ``audit``.
        partition: the partition folder.
        paths: the dataset's :class:`~dejavu.data.imagefolder.DataPaths`.
        out: the audit folder.
        cfg: the :class:`~dejavu.audit.config.AuditConfig`.

    Returns:
        The :class:`~dejavu.audit.run.AuditResult`.
    """
    keys = ("method", "image_size", "epoch", "npc", "set_name", "index")
    save_kw = {k: kwargs.pop(k) for k in keys if k in kwargs}
    if "index" in save_kw:
        kwargs["index"] = save_kw["index"]
    out = Path(out)
    if kwargs.get("force") or not (out / "results.json").exists():  # else audit() refuses, naming the folder
        save_checkpoint(model, out / "audited_model.pth", **save_kw)
    return audit(out / "audited_model.pth", partition, paths, out, cfg, **kwargs)
