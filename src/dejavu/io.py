"""File helpers shared by every stage: atomic writes, no silent overwrite,
JSON with provenance, safe checkpoint loading and content hashes.

Every result file of dejavu is written through these helpers so that a crash
never leaves a half-written artifact under its final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError


def _tmp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=True) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DejavuError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DejavuError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load an array without pickle (index files from elsewhere cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise DejavuError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DejavuError(f"{path}: not a plain numpy array ({e})") from None


def check_can_write(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing result unless ``force``.

    For a folder, "existing" means it exists and is not empty.
    """
    path = Path(path)
    if path.exists() and not force:
        if path.is_dir() and not any(path.iterdir()):
            return path
        raise DejavuError(f"{path}: already exists; pass --force to overwrite")
    return path


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to a temporary name, then rename: a checkpoint is whole or absent."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors, numbers, strings and
    containers only; a pickle that would run code is refused with a clear error."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise DejavuError(f"{path}: checkpoint not found")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long and suggests weights_only=False; keep only its diagnosis
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith(("Unsupported", "Trying to", "Could not"))),
                      lines[-1] if lines else "unsafe content")
        raise DejavuError(
            f"{path}: refused to load: not a plain weights file ({detail}); it is corrupt, of another "
            "format, or holds objects that would run code, and dejavu never loads checkpoints unsafely"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DejavuError(f"{path}: cannot read checkpoint ({first})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
