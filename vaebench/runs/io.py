"""Atomic file I/O: every whole-file write of a run folder, written so that a crash never corrupts it.

Why atomic writes: a run killed mid-write (kill -9, pre-emption, full disk) must leave either the old
or the new version of a file, never half of one. Every whole-file write goes to a temporary file in
the same folder, is flushed and fsynced, and replaces the target with `os.replace` (atomic on POSIX
and Windows); the folder is then fsynced so that the rename itself survives a power cut.

Non-finite floats in JSON: NaN, +inf and -inf are written as ``null``. Python's json module would
otherwise write the literals ``NaN``/``Infinity``, which are not JSON and which strict readers (jq,
JavaScript, many dashboards) reject. ``null`` reads back as None here and as NaN in pandas, which is
what a report wants for "no finite value" (a diverged loss). The distinction between nan and inf is
lost on purpose; the run's log and W&B keep the raw values. Anything else that JSON cannot hold
raises TypeError naming the key, rather than being turned silently into a string.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from vaebench.core.errors import UserError
from vaebench.runs.paths import RunPaths

# The process umask, read once: files made by mkstemp are 0600 and get the usual mode back.
_UMASK = os.umask(0)
os.umask(_UMASK)


# ----------------------------------------------------------------------------- atomic writes


def fsync_dir(directory: Path) -> None:
    """fsync a folder so that a rename inside it is durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; NTFS journals renames anyway.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """Open a binary temp file beside `path`; on a clean exit it atomically becomes `path`.

    If the block raises, the temp file is removed, `path` is left untouched and the error propagates.
    Parent folders are created as needed. Used by the atomic_write_* functions and by checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix.

    A full disk or unwritable folder is a UserError naming the folder (`write_error`).
    """
    try:
        with atomic_writer(path) as f:
            f.write(data)
    except OSError as e:
        err = write_error(e, Path(path), len(data))
        if err is None:
            raise
        raise err from None


# errno values that mean "this folder cannot take the file", with what to tell the user
_WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file exceeds a file-size limit (ulimit -f, or the file system's maximum)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def write_error(error: BaseException, path: Path, nbytes: int, what: str = "file") -> UserError | None:
    """The UserError for a write of `nbytes` to `path` that failed for lack of space or permission.

    None when `error` is something else (a bug, which keeps its traceback). torch.save reports a
    failed write to a file object as RuntimeError "... unexpected pos ...", without the errno; the free
    space then tells whether the disk was full.
    """
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        reason = _WRITE_ERRNOS[error.errno]
    elif isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        full = free is not None and free < max(nbytes, 1) * 2
        reason = "the disk is full" if full else "the write failed (full disk, file-size limit or I/O error)"
    else:
        return None
    space = f"{_size(free)} free there" if free is not None else "free space unknown"
    return UserError(
        f"cannot write {Path(path).name} in {folder}: {reason} ({space}; this {what} needs about "
        f"{_size(nbytes)}). Nothing was half-written: the previous files are intact and the temporary "
        "file was removed. Free some space (or give --runs-dir a folder that has it) and rerun the same "
        "command: the run resumes from its last checkpoint."
    )


def moved_aside(path: Path, tag: str) -> Path:
    """Rename `path` to `<name>.<tag>` (or `<name>.<tag>-<UTC time>` if that exists) and return the new path.

    Damaged files are kept this way, never deleted: what was in them stays there to inspect.
    """
    path = Path(path)
    target = path.with_name(f"{path.name}.{tag}")
    if target.exists():
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        target = path.with_name(f"{path.name}.{tag}-{stamp}")
    os.replace(path, target)
    return target


def remove_stale_temp_files(paths: RunPaths) -> list[Path]:
    """Delete the `.<name>.*.tmp` files that writes killed mid-way (kill -9, power cut) left behind.

    Only in the run folder, checkpoints/ and checkpoints/previous/, where a run's own writes go; call it
    when a run starts, before anything of that run writes. Returns the removed files.
    """
    removed = []
    for folder in (paths.root, paths.checkpoints, paths.checkpoints / "previous"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic UTF-8 text write (newlines are written as given, no platform translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any, where: str = "") -> Any:
    """A copy of `obj` that strict JSON can hold: non-finite floats become None (see module docstring).

    numpy scalars and arrays, one-element or small torch tensors become Python numbers and lists,
    tuples become lists, Paths become strings. Other types raise TypeError naming the dotted key.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON keys must be strings: key {k!r} at {where or '<root>'}")
            out[k] = to_jsonable(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and type(obj).__module__.split(".")[0] in ("numpy", "torch"):
        return to_jsonable(obj.tolist(), where)  # numpy scalar/array or torch tensor
    raise TypeError(
        f"cannot write {type(obj).__name__} as JSON at {where or '<root>'}: "
        "convert it to a number, string, list or dict first"
    )


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps after `to_jsonable`; allow_nan=False guarantees no NaN literal can slip through."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write `obj` as indented JSON (non-finite floats as null)."""
    atomic_write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or unparsable file is a UserError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist: is this a run folder, and did the run get that far?"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if path.name == "summary.json":  # rebuilt by evaluate_run's check_summary
            advice = (
                f"run `vaebench evaluate {path.parent}`: it rebuilds summary.json from the run's checkpoint, "
                "metrics.jsonl and eval/ files (keeping the damaged file as summary.json.damaged), then "
                "evaluates"
            )
        else:
            advice = "move it aside and restore it from a copy, or rerun the command that wrote it"
        raise UserError(f"{path} is not valid JSON ({e}); {advice}.") from None
