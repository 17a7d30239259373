"""The run folder: where every result of a run lives, written so that a crash never corrupts it.

Layout of one run (``runs/<experiment>/<variant>/seed<k>/``, see `RunPaths`)::

    spec.yaml            resolved spec
    metrics.jsonl        one JSON object per logged step (`MetricsLog`)
    summary.json         final metrics, one flat object with W&B-style keys ("test/bpd_elbo")
    env.json             git commit, package versions, device, command line (`environment_info`)
    wandb_id             the W&B run id, reused when the run resumes
    DONE                 written last: the run finished (a folder without it is resumable)
    checkpoints/         last.pt, best.pt
    figures/             *.png, temperature.json (how much the temperature grid's samples vary)
    eval/                evaluation outputs
    wandb/               W&B's own files (offline runs, logs)

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
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import yaml

from vaebench.core.errors import UserError

if TYPE_CHECKING:
    from vaebench.config.spec import RunSpec

# The process umask, read once: files made by mkstemp are 0600 and get the usual mode back.
_UMASK = os.umask(0)
os.umask(_UMASK)


# ----------------------------------------------------------------------------- layout


class RunPaths(NamedTuple):
    """Paths of one run folder; nothing is created until `make_dirs` is called."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"

    @property
    def wandb_dir(self) -> Path:
        """W&B's own folder (created by wandb.init(dir=root))."""
        return self.root / "wandb"

    @property
    def done(self) -> Path:
        """Marker written last: its presence means the run completed (training and final evaluation)."""
        return self.root / "DONE"

    def make_dirs(self) -> RunPaths:
        """Create the run folder and its checkpoints/, figures/ and eval/ subfolders."""
        for d in (self.root, self.checkpoints, self.figures, self.eval):
            d.mkdir(parents=True, exist_ok=True)
        return self


def run_dir(runs_dir: Path, experiment: str, variant: str, seed: int) -> Path:
    """The folder of one run: ``runs_dir / experiment / variant / f"seed{seed}"``.

    Names become single folder names, so they may not be empty, ``.``/``..``, or contain a path separator.
    """
    for what, name in (("experiment", experiment), ("variant", variant)):
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise UserError(
                f"{what} name {name!r} cannot be used as a folder name under {runs_dir}: "
                "use a non-empty name without '/' or '\\' (e.g. 'beta_sweep', 'beta4')."
            )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return Path(runs_dir) / experiment / variant / f"seed{seed}"


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


@dataclass(frozen=True)
class RunLabels:
    """What a run is part of: its experiment, variant, axis levels and overrides (not what it trains)."""

    experiment: str = ""
    variant: str = ""
    axes: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def run_document(labels: RunLabels, spec: RunSpec, seed: int) -> dict[str, Any]:
    """What spec.yaml holds: enough to rebuild the run (and the report's axes) without the experiment file."""
    return {
        "experiment": labels.experiment,
        "variant": labels.variant,
        "seed": seed,
        "axes": labels.axes,
        "overrides": labels.overrides,
        "spec": spec.model_dump(mode="json"),
    }


def training_summary(
    document: dict[str, Any], loop: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """summary.json's training keys: the run's names, last and best step, the last train/ and val/ values.

    document: spec.yaml's (`run_document`); loop: the trainer's state at the last step; rows: metrics.jsonl.
    """
    last_val = next((r for r in reversed(rows) if "val/loss" in r), {})
    return {
        "experiment": document["experiment"],
        "variant": document["variant"],
        "seed": document["seed"],
        "step": loop["step"],
        "best_step": loop.get("best_step"),
        "best/val_loss": loop["best_val"],
        **{k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("train/")},
        **{k: v for k, v in last_val.items() if k.startswith("val/")},
    }


def read_run_document(path: Path) -> dict[str, Any]:
    """The document of a run's spec.yaml (what `run_document` wrote): experiment, variant,
    seed, axes, overrides and the resolved `spec` mapping, unvalidated.

    Callers check that the file exists (what to advise when it does not depends on the command); an
    unreadable file, or one without a `spec` mapping, is a UserError naming it.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid YAML ({type(e).__name__}: {e}).") from None
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        raise UserError(f"{path} is not a spec.yaml written by `vaebench run` (no `spec` mapping).")
    return document


def update_summary(path: Path, new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `new` into the flat summary.json at `path` (created if missing) and return the result.

    Keys of `new` overwrite existing ones; all other keys survive, so an evaluation with other
    settings adds its keys without erasing earlier ones. The write is atomic. Not safe against two
    processes updating the same summary at the same instant (one of the two updates would be lost).
    """
    path = Path(path)
    current: dict[str, Any] = read_json(path) if path.exists() else {}
    if not isinstance(current, dict):
        raise UserError(f"{path} should hold a JSON object, found {type(current).__name__}; delete it.")
    current.update(to_jsonable(dict(new)))
    atomic_write_json(path, current)
    return current


# ----------------------------------------------------------------------------- metrics.jsonl


class DamagedMetrics(UserError):
    """metrics.jsonl has an unreadable line before its last one (not a torn write: damage)."""


def _parse_lines(path: Path, data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Rows of a JSONL file and the byte length of its intact part.

    Only the last line may be torn (a writer killed mid-line): it is dropped unless it is a complete
    JSON object that merely lacks its newline. A bad line elsewhere is damage, not a crash, and raises.
    """
    rows: list[dict[str, Any]] = []
    pos = 0
    lineno = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        last = end == -1
        line = data[pos:] if last else data[pos:end]
        lineno += 1
        try:
            row = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            if last:
                return rows, pos  # torn tail: drop it
            raise DamagedMetrics(
                f"{path}, line {lineno} is not valid JSON and is not the last line, so it is not a "
                "crash artefact: the file was damaged. Rerun `vaebench run` for this run (same experiment, "
                "variant and seed; a finished run is not retrained): it rebuilds metrics.jsonl from the "
                "run's checkpoint, which records every row up to its step, and keeps the damaged file as "
                "metrics.jsonl.damaged."
            ) from None
        if row is not None:
            if not isinstance(row, dict):
                raise UserError(f"{path}, line {lineno}: expected a JSON object, found {type(row).__name__}.")
            rows.append(row)
        pos = len(data) if last else end + 1
    return rows, pos


def _row_steps(data: bytes) -> list[dict[str, Any]]:
    """The readable rows of metrics.jsonl bytes that carry an int step; unreadable lines are skipped."""
    rows = []
    for line in data.split(b"\n"):
        try:
            row = json.loads(line) if line.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
            rows.append(row)
    return rows


def missing_rows(path: Path, record: bytes, step: int) -> list[int]:
    """Steps up to `step` whose rows a checkpoint's `record` of metrics.jsonl holds but the file at `path`
    lacks (all of them when the file is gone). A crash tears only the last line, so these were removed."""
    path = Path(path)
    have = {r["step"] for r in _row_steps(path.read_bytes())} if path.exists() else set()
    return [r["step"] for r in _row_steps(record) if r["step"] <= step and r["step"] not in have]


def repair_metrics(
    path: Path, record: bytes | None, step: int, problem: str = "was damaged", tag: str = "damaged"
) -> str:
    """Rebuild metrics.jsonl (damaged, see `DamagedMetrics`, or missing rows); returns what was done.

    `record` is metrics.jsonl as a checkpoint at `step` saw it (None for checkpoints without one): its
    rows up to `step` replace the file's, and the file's readable rows that the record lacks stay (those
    after `step`, and best.pt's own step, whose row is written just after best.pt). Without a record,
    unreadable lines are left out. The old file, if there is one, is kept as metrics.jsonl.<tag>;
    `problem` says what was wrong with it, for the message.
    """
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    readable = _row_steps(data)
    bad = sum(1 for line in data.split(b"\n") if line.strip()) - len(readable)
    by_step = {r["step"]: r for r in readable}
    rebuilt = [r for r in _row_steps(record) if r["step"] <= step] if record is not None else []
    by_step |= {r["step"]: r for r in rebuilt}
    kept = f"; the old file is kept as {moved_aside(path, tag).name}" if path.exists() else ""
    atomic_write_text(path, "".join(dumps(by_step[s]) + "\n" for s in sorted(by_step)))
    if record is not None:
        return (
            f"{path} {problem}: rebuilt rows up to step {step} from the checkpoint's record "
            f"({len(rebuilt)} rows){kept}."
        )
    return (
        f"{path} {problem} and the checkpoint has no record of it: {bad} unreadable line(s) left out{kept}."
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file, dropping a torn last line. Non-finite values read as None."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            f"{path} does not exist: the run has not logged metrics yet, or this is not a run folder."
        ) from None
    return _parse_lines(path, data)[0]


class MetricsLog:
    """Append-only writer of metrics.jsonl: one JSON object per logged step, steps strictly increasing.

    Flush policy: every `write` writes its whole line, flushes and fsyncs. A crash can therefore lose
    at most the line being written, which readers and the next `MetricsLog` drop as a torn line. The
    cost is one fsync per logged step (well under a millisecond to a few ms), negligible at the
    trainer's `log_every` of tens of steps.

    Opening an existing file repairs a torn tail (so the next row starts on its own line) and takes
    its last step. On resume call `truncate_after(checkpoint_step)`: rows logged after the checkpoint
    are removed, so that re-training from the checkpoint neither duplicates nor skips a step.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        rows, intact = _parse_lines(self.path, data)
        if intact < len(data):  # torn last line: cut it off
            with open(self.path, "r+b") as f:
                f.truncate(intact)
                f.flush()
                os.fsync(f.fileno())
        elif data and not data.endswith(b"\n"):  # complete last row without its newline
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
        self.last_step: int | None = rows[-1].get("step") if rows else None
        self._file: IO[bytes] | None = open(self.path, "ab")  # closed in close()

    def write(self, row: Mapping[str, Any]) -> None:
        """Write one row (must hold an int "step" after the last one) and fsync it."""
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise ValueError(f"a metrics row needs an int 'step', got {step!r} in {dict(row)!r}")
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(
                f"metrics step {step} is not after the last logged step {self.last_step} in {self.path}: "
                "log one row per step (merge train and val values into one row), and call "
                "truncate_after(checkpoint_step) when resuming."
            )
        if self._file is None:
            raise ValueError(f"MetricsLog for {self.path} is closed")
        line = (dumps(row) + "\n").encode("utf-8")
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            err = write_error(e, self.path, len(line), what="row")
            if err is None:
                raise
            raise err from None
        self.last_step = step

    read = staticmethod(read_metrics)  # MetricsLog.read(path) == read_metrics(path)

    def truncate_after(self, step: int) -> int:
        """Keep only rows with row["step"] <= step (atomically rewriting the file); returns rows dropped."""
        if self._file is not None:
            self._file.close()
        rows = read_metrics(self.path)
        kept = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in kept))
        self.last_step = kept[-1]["step"] if kept else None
        self._file = open(self.path, "ab")
        return len(rows) - len(kept)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- environment


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding the vaebench source; (None, None) if not from one.

    The checkout must track vaebench's own files: a pip-installed copy inside some other repository
    (a venv in a project folder) reports None, not that repository's commit. Dirty means tracked
    files differ from the commit (untracked files such as runs/ do not count).
    """
    package = Path(__file__).resolve().parent
    if _git(["ls-files", "--error-unmatch", "__init__.py"], cwd=package) is None:
        return None, None
    commit = _git(["rev-parse", "HEAD"], cwd=package)
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd=package)
    return commit, (None if status is None else bool(status))


def _version(dist: str) -> str | None:
    """The version of an installed package; an imported module's own __version__ is preferred
    because it keeps build tags that the metadata may drop (torch "2.4.1+cu121")."""
    version = getattr(sys.modules.get(dist), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(device: Any) -> dict[str, Any]:
    """What env.json records: code version, package versions, machine, device and command line.

    `device` is the torch.device (or its string) the run uses; for CUDA the GPU's name is recorded.
    Never raises for a missing git or package: those entries are None.
    """
    import torch

    device = torch.device(device)
    commit, dirty = source_git_state()
    device_name: str | None
    try:
        if device.type == "cuda":
            device_name = torch.cuda.get_device_name(device)
        elif device.type == "cpu":
            device_name = platform.processor() or platform.machine() or "cpu"
        else:
            device_name = device.type
    except Exception:  # no driver, bad index: record what we can
        device_name = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in ("vaebench", "torch", "torchvision", "numpy", "pydantic", "wandb")
        },
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "device_name": device_name,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
