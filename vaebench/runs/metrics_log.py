"""metrics.jsonl: one JSON object per logged step, appended as training goes, and repaired from the
checkpoints' copy of its rows when a crash tore or removed lines."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from vaebench.core.errors import UserError
from vaebench.runs.io import (
    atomic_write_text,
    dumps,
    moved_aside,
    write_error,
)

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


def last_logged_step(path: Path) -> int:
    """The highest step in metrics.jsonl at `path` (0 when there is none), reading past damaged lines."""
    return max((row["step"] for row in _row_steps(path.read_bytes())), default=0) if path.exists() else 0


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
