"""Whether a SLURM job stopped by its warning signal is requeued, and the record of its requeues.

A run's SLURM job (`vaebench.launch.slurm_job.RunJob`) gets SIGUSR2 `slurm.signal_delay_s` before its
time limit, or at a preemption; its run checkpoints and stops (`vaebench.train.signals`), and the job is
requeued to rerun the same command, which resumes the run. This module holds the decisions, as pure
functions, and the small JSON file that records them beside the job's log (`record_path`):

    {"max_requeues": 10,
     "requeues": [{"count": 1, "cause": "time limit", "run": "runs/q/iso/seed0", "step": 1200,
                   "job_id": "4242", "at": "2025-01-01T00:00:00+00:00"}],
     "refused": null}

"refused", when the job was not requeued, is {"count", "cause", "run", "step", "job_id", "at", "why"}.
The controller shows "requeued (time limit, 1 of 10)" from it (`requeue_status`). Without submitit or
torch: the controller and the tests read it too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from vaebench.launch.slurm_state import scontrol_pairs

Cause = Literal["time limit", "preemption"]

SIGNAL_EARLY_S = 60.0
"""SLURM may send the --signal up to 60 s before the delay it was asked for (its event resolution)."""


def record_path(log: Path) -> Path:
    """The requeue record of the job whose output goes to `log`: `<log without .log>.requeue.json`."""
    log = Path(log)
    return log.with_name(f"{log.name.removesuffix('.log')}.requeue.json")


def read_record(path: Path) -> dict[str, Any]:
    """The record at `path`; an empty one when there is none or it is unreadable (it only informs)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("requeues"), list):
        return record
    return {"requeues": [], "refused": None}


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write the record atomically (the controller may be reading it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def requeue_status(record: Mapping[str, Any]) -> str | None:
    """What the controller shows for a job that was requeued: "requeued (time limit, 1 of 10)"; None
    when it never was, or when its last requeue was refused (the job then ends failed, and says why)."""
    requeues = record.get("requeues") or []
    if not requeues or record.get("refused"):
        return None
    last = requeues[-1]
    count, bound = last.get("count", len(requeues)), record.get("max_requeues", "?")
    return f"requeued ({last.get('cause', '?')}, {count} of {bound})"


# ----------------------------------------------------------------------------- the cause


def slurm_duration_s(text: str | None) -> float | None:
    """Seconds of a SLURM duration ("MM:SS", "HH:MM:SS", "D-HH:MM:SS", "MM"); None for UNLIMITED,
    Partition_Limit, INVALID or anything else."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", (text or "").strip())
    if match is None:
        return None
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if c is not None:  # [D-]HH:MM:SS
        hours, minutes, seconds = a, b, c
    elif b is not None:  # D-HH:MM or MM:SS
        hours, minutes, seconds = (a, b, 0) if days is not None else (0, a, b)
    else:  # D-HH or MM
        hours, minutes, seconds = (a, 0, 0) if days is not None else (0, a, 0)
    return float((((days or 0) * 24 + (hours or 0)) * 60 + (minutes or 0)) * 60 + (seconds or 0))


scontrol_fields = scontrol_pairs  # the Key=Value fields of `scontrol show job <id>` (slurm_state's parser)


def requeue_cause(
    fields: Mapping[str, str], *, elapsed_s: float, time_limit_s: float, signal_delay_s: float
) -> Cause:
    """Why the job was signalled: its time limit, or a preemption.

    From what SLURM says when it can (`fields` of `scontrol show job`: JobState PREEMPTED, or TimeLimit
    minus RunTime within the signal's delay, allowing for SLURM signalling up to a minute early);
    otherwise from the job's own clock (`elapsed_s` since it started, against `time_limit_s`).
    submitit's own guess calls every signal after 80% of the time a timeout, which is not this.
    """
    if fields.get("JobState", "").upper().startswith("PREEMPT"):
        return "preemption"
    limit, run_time = slurm_duration_s(fields.get("TimeLimit")), slurm_duration_s(fields.get("RunTime"))
    if "TimeLimit" in fields and limit is None:  # UNLIMITED: no time limit to reach
        return "preemption"
    if limit is None or run_time is None:
        limit, run_time = time_limit_s, elapsed_s
    return "time limit" if limit - run_time <= signal_delay_s + SIGNAL_EARLY_S else "preemption"


# ----------------------------------------------------------------------------- the decision


def refusal(
    *,
    count: int,
    max_requeues: int,
    cause: Cause,
    position: tuple[str, int] | None,
    previous: tuple[str, int] | None,
    first: bool,
    time_min: int,
    signal_delay_s: int,
) -> str | None:
    """Why the job must not be requeued for the `count`-th time, or None to requeue it.

    position: (run folder, step) where the run stopped and checkpointed in this job (None: it stopped
    outside the training loop, before its first step or during its final evaluation); previous: the
    same at the previous requeue of this job (`first`: there was none). A job that reached its time
    limit without training a step since the previous one (or, at the first requeue, without reaching
    the training loop) would loop forever; a preemption is not the job's doing and is requeued up to the
    bound. The reason is one paragraph for the job's log: what happened and what to change.
    """
    if count > max_requeues:
        return (
            f"not requeued: the job was already requeued {count - 1} times, the most slurm.max_requeues = "
            f"{max_requeues} allows; its run is checkpointed. Rerunning the same `vaebench run` command "
            f"resubmits it and resumes; give runs fewer, longer jobs (slurm.time_min = {time_min} min) or "
            "allow more requeues (slurm.max_requeues)."
        )
    stuck = position is None if first else (position is None or position == previous)
    if cause == "time limit" and stuck:
        where = "since the job started" if first else "since its previous requeue"
        at = f" (still at step {position[1]} of {position[0]})" if position else ""
        return (
            f"not requeued: the job reached its time limit without training a step {where}{at}, so "
            "every requeue would do the same. Each job must start, reach the training loop and train before "
            f"SLURM's warning signal, slurm.signal_delay_s = {signal_delay_s} s before its time limit, "
            f"slurm.time_min = {time_min} min (a long final evaluation must fit too). Raise slurm.time_min "
            "or lower slurm.signal_delay_s, then rerun the same `vaebench run` command, which resumes."
        )
    return None


def previous_position(record: Mapping[str, Any]) -> tuple[str, int] | None:
    """(run, step) of the record's last requeue, or None."""
    requeues = record.get("requeues") or []
    if not requeues or requeues[-1].get("step") is None:
        return None
    return str(requeues[-1]["run"]), int(requeues[-1]["step"])


def entry(
    count: int, cause: Cause, position: tuple[str, int] | None, job_id: str | None, why: str | None = None
) -> dict[str, Any]:
    """One requeue (or refusal, with `why`) of the record."""
    run, step = position if position else (None, None)
    item = {"count": count, "cause": cause, "run": run, "step": step, "job_id": job_id}
    item["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return item | ({"why": why} if why else {})
