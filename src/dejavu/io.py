"""File helpers shared by every stage: atomic writes, no silent overwrite,
JSON with provenance, safe checkpoint loading, content hashes and output-folder locks.

Every result file of dejavu is written through these helpers so that a crash
never leaves a half-written artifact under its final name:

* a file is written to ``.<name>.<pid>.<random>.tmp`` in the same folder, fsynced, then
  renamed; the temporary file is created with mode ``0o666`` so the kernel applies the
  user's umask (``tempfile.mkstemp`` would give 0600, unreadable to collaborators);
* a failed write (disk full, ``ulimit -f``, permission denied, read-only file system, a
  path under a file) raises a one-line :class:`DejavuError` naming the file, after the
  temporary file is removed: the previous version of the file, if any, is untouched;
* :func:`folder_lock` (and the :func:`locks_output` decorator the stages use) keeps two
  processes from writing one output folder at once: ``FOLDER/.dejavu.lock`` holds the
  holder's pid, host, SLURM job id and stage, and an ``flock`` on it that the kernel
  drops when the holder dies (so a lock left by a killed job is taken over, not obeyed).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import io
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dejavu import DejavuError

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".dejavu.lock"
SLURM_LOG_NAME = "slurm"  # OUT/slurm: the launcher's job logs, made before the job starts (dejavu.launch)

_WRITE_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (file-size limit, e.g. ulimit -f, or the file system's)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file or folder name too long",
    errno.ENOTDIR: "a parent of it is a file, not a folder",
    errno.EEXIST: "a parent of it is a file, not a folder",
}


def write_error(path: str | os.PathLike, e: OSError) -> DejavuError:
    """The one-line error for a failed write of ``path``.

    Args:
        path: the file that could not be written.
        e: the ``OSError`` raised; its errno picks the reason shown.

    Returns:
        The :class:`DejavuError` to raise (``from None``).
    """
    reason = _WRITE_REASONS.get(e.errno or -1, e.strerror or type(e).__name__)
    return DejavuError(f"{path}: cannot write ({reason}); no partial file was left under this name")


NAME_MAX = 255  # bytes per file or folder name (Linux, macOS)


def check_name_lengths(path: str | os.PathLike) -> Path:
    """Refuse a path with a file or folder name longer than :data:`NAME_MAX` bytes, before
    anything is written (the OS would refuse it with ENAMETOOLONG at some later step).

    Args:
        path: the file or folder to be written.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: naming the path and the length of the long name.
    """
    path = Path(path)
    n = max((len(os.fsencode(p)) for p in path.parts), default=0)
    if n > NAME_MAX:
        raise DejavuError(
            f"{path}: cannot write (a file or folder name of {n} bytes; the limit is {NAME_MAX}); "
            "no partial file was left under this name"
        )
    return path


def _tmp_name(name: str) -> str:
    """``.<name>.<pid>.<random>.tmp``, the name cut so that the whole stays under NAME_MAX
    (a legal 240-character file name must not fail because of its temporary name)."""
    tail = f".{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    keep = os.fsencode(name)[: NAME_MAX - 1 - len(tail)]
    return "." + os.fsdecode(keep).encode("utf-8", "ignore").decode("utf-8", "ignore") + tail


def _open_tmp(path: Path) -> tuple[int, Path]:
    """Create a fresh temporary file beside ``path`` (mode 0o666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.with_name(_tmp_name(path.name))
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def make_parent(path: str | os.PathLike) -> Path:
    """``mkdir -p`` the parent of ``path``; a failure is a :class:`DejavuError`."""
    path = check_name_lengths(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    The file gets the permissions the umask gives; on any failure the temporary file is
    removed and a :class:`DejavuError` names ``path`` and the reason.

    Args:
        path: the destination; missing parent folders are created.
        data: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: the folder or the file cannot be written (the reason named).
    """
    path = make_parent(path)
    tmp: Path | None = None
    try:
        fd, tmp = _open_tmp(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 atomically (:func:`atomic_write_bytes`).

    Args:
        path: the destination; missing parent folders are created.
        text: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: the file cannot be written.
    """
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
    """Write ``obj`` as indented JSON atomically (:func:`to_json`: numpy scalars and arrays,
    paths and dataclasses converted; NaN written as ``NaN``).

    Args:
        path: the destination; missing parent folders are created.
        obj: a JSON-serialisable object.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: the file cannot be written.
        TypeError: ``obj`` holds a value JSON cannot represent.
    """
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
    """Save ``array`` as a ``.npy`` file (no pickle) atomically.

    Args:
        path: the destination (``np.save`` adds no suffix here: name it ``*.npy``).
        array: anything ``np.asarray`` turns into a plain (non-object) array.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: the file cannot be written.
    """
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


def index_hash(indices: np.ndarray, length: int = 16) -> str:
    """Short sha256 of a list of dataset indices (as int64), to key caches and to check that a
    resumed run trains on the same images.

    Args:
        indices: the dataset indices, in order.
        length: hex characters kept (16 in training configs and RCDM caches, as stored).

    Returns:
        The first ``length`` hex digits of the sha256.
    """
    a = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(a.tobytes()).hexdigest()[:length]


def check_can_write(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing result unless ``force``.

    For a folder, "existing" means it exists and is not empty.

    Args:
        path: the output file or folder.
        force: allow overwriting (``--force``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: ``path`` exists (a folder: with content other than dejavu's lock,
            temporary files and the launcher's ``slurm/`` logs) and ``force`` is False.
    """
    path = Path(path)
    if path.exists() and not force:
        if path.is_dir() and not any(_is_content(p) for p in path.iterdir()):
            return path
        raise DejavuError(f"{path}: already exists; pass --force to overwrite")
    return path


def _is_content(p: Path) -> bool:
    """False for dejavu's own bookkeeping: the folder lock, leftover temporary files and the
    SLURM job logs the launcher writes into OUT before the job runs."""
    if p.name == SLURM_LOG_NAME and p.is_dir():
        return False
    return not (p.name == LOCK_NAME or (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX)))


def abspath(path: str | os.PathLike) -> Path:
    """``path`` made absolute against the current folder (``..`` folded, symlinks kept), so
    what a manifest, config or result records works from any folder and on a cluster node."""
    return Path(os.path.abspath(os.fspath(path)))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to a temporary name, then rename: a checkpoint is whole or absent.

    Args:
        path: the destination; missing parent folders are created.
        obj: what ``torch.save`` accepts (load it back with :func:`safe_torch_load`:
            tensors, numbers, strings and containers only).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DejavuError: the file cannot be written.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``: tensors, numbers, strings and
    containers only; a pickle that would run code is refused with a clear error.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (default: CPU).

    Returns:
        The loaded object (usually a dict of tensors and plain values).

    Raises:
        DejavuError: the file is missing, unreadable, or holds objects beyond plain weights.
    """
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
        detail = next(
            (ln for ln in lines if ln.startswith(("Unsupported", "Trying to", "Could not"))),
            lines[-1] if lines else "unsafe content",
        )
        raise DejavuError(
            f"{path}: refused to load: not a plain weights file ({detail}); it is corrupt, of another "
            "format, or holds objects that would run code, and dejavu never loads checkpoints unsafely"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DejavuError(f"{path}: cannot read checkpoint ({first})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's content, read in chunks.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        The 64-character hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- output-folder lock

_HELD: dict[str, list[Any]] = {}  # realpath of a folder -> [fd, depth] (re-entrant per process)
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _holder_info(stage: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "stage": stage,
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 123 on host n01, SLURM job 45, dejavu train since ...`` (what is known)."""
    parts = [f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"]
    if info.get("job_id"):
        parts.append(f"SLURM job {info['job_id']}")
    if info.get("stage"):
        parts.append(f"dejavu {info['stage']} since {info.get('since', '?')}")
    return ", ".join(parts)


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text() or "{}")
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive_here(info: dict[str, Any]) -> bool:
    """Fallback liveness test where the file system has no flock: same host and pid alive."""
    if info.get("host") != socket.gethostname():
        return bool(info)  # another machine: cannot tell, assume alive
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def _acquire(folder: Path, stage: str) -> int:
    import fcntl

    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise write_error(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DejavuError(
                f"{folder}: in use by another dejavu process ({describe_holder(_read_holder(path))}); "
                f"wait for it to end, or delete {path} if that process is dead"
            ) from None
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                os.close(fd)
                raise write_error(path, e) from None
            holder = _read_holder(path)
            if holder and holder.get("pid") != os.getpid() and _pid_alive_here(holder):
                os.close(fd)
                raise DejavuError(
                    f"{folder}: in use by another dejavu process ({describe_holder(holder)}); "
                    f"wait for it to end, or delete {path} if that process is dead"
                ) from None
        try:  # the file we locked may have been removed by its previous holder meanwhile
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(_holder_info(stage)).encode())
            except OSError as e:  # a full disk: no lock file left behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
                os.close(fd)
                raise write_error(path, e) from None
            return fd
        os.close(fd)


def _is_worker_rank() -> bool:
    """Ranks other than 0 of a distributed job write nothing of their own: no lock."""
    return int(os.environ.get("RANK", "0") or 0) != 0


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, stage: str) -> Iterator[Path]:
    """Hold ``folder`` (created if needed) for one writer; refuse, naming the holder, if
    another live process holds it. Re-entrant within a process. A folder this call
    created is removed again if it is still empty at the end (a stage that failed early).

    Args:
        folder: the output folder.
        stage: the stage name recorded for (and shown to) a second process.

    Yields:
        ``folder`` as a :class:`~pathlib.Path`, locked until the block ends. On ranks other
        than 0 of a distributed job (``RANK`` != 0) nothing is locked.

    Raises:
        DejavuError: another live process holds the folder, or it cannot be created.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _HELD or _is_worker_rank():
        if key in _HELD:
            _HELD[key][1] += 1
        try:
            yield folder
        finally:
            if key in _HELD:
                _HELD[key][1] -= 1
        return
    check_name_lengths(folder)
    if folder.exists() and not folder.is_dir():
        raise DejavuError(f"{folder}: is a file, not a folder; pass a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e) from None
    try:
        fd = _acquire(folder, stage)
    except DejavuError:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty


def locks_output(stage: str, param: str = "out", folder_of: Callable[[dict[str, Any]], Any] | None = None) -> Callable:
    """Decorator: run the stage function holding :func:`folder_lock` on its output folder.

    Args:
        stage: name shown to a second process that finds the folder busy.
        param: the argument holding the output folder (ignored when ``folder_of`` is given).
        folder_of: maps the bound arguments to the folder (e.g. the parent of an output file);
            returning None runs the function without a lock.
    """

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = folder_of(bound.arguments) if folder_of else bound.arguments.get(param)
            if folder is None:
                return fn(*args, **kwargs)
            with folder_lock(folder, stage):
                return fn(*args, **kwargs)

        return wrapper

    return deco
