"""The same RunSet as `vaebench.report.load`, read from the W&B public API instead of run folders.

`vaebench run` gives each W&B run config = the run's spec.yaml document (experiment, variant, seed,
axes, overrides, spec), group = the experiment and every metrics.jsonl row as a history row, so a W&B
run maps onto a RunRecord field by field. `load_wandb` takes the `api` object (`wandb.Api()` in
real use) as an argument, so tests pass a stand-in with the same few attributes:

    api.runs(path, filters=...) -> iterable of runs with
        .id, .name, .group, .state ("finished", "running", "crashed", "failed", ...), .path (list),
        .config (dict), .summary (mapping), .metadata (dict or None), .scan_history() -> iterable of dicts

Runs loaded this way have no checkpoints here, so the report has no write-up figures for them, and no
per-dimension statistics beyond the KL per dimension that the summary holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import track

from vaebench.core.errors import UserError
from vaebench.report.load import RunRecord, RunSet, classify, make_run_set


def _plain(value: Any) -> Any:
    """W&B's summary and config wrappers -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _environment(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The env.json fields that W&B's run metadata also records."""
    if not metadata:
        return None
    git = metadata.get("git") or {}
    return {
        "git_commit": git.get("commit"),
        "python": metadata.get("python"),
        "hostname": metadata.get("host"),
        "device": "cuda" if metadata.get("gpu") else "cpu",
        "device_name": metadata.get("gpu") or metadata.get("cpu"),
        "packages": {},
    }


def wandb_record(run: Any) -> RunRecord:
    """One W&B run as a RunRecord; a run without a vaebench config is "broken" with the reason."""
    path = "/".join(run.path) if getattr(run, "path", None) else str(run.id)
    config = _plain(run.config or {})
    record = RunRecord(
        path,
        config.get("experiment") or getattr(run, "group", None),
        config.get("variant"),
        config.get("seed") if isinstance(config.get("seed"), int) else None,
        label=f"{getattr(run, 'group', None) or '-'}/{run.name} ({run.id})",
    )
    if not isinstance(config.get("spec"), dict):
        record.status = "broken"
        record.reason = "W&B config has no `spec`: not a run started by `vaebench run`"
        return record
    record.axes = {str(k): str(v) for k, v in (config.get("axes") or {}).items()}
    record.overrides = dict(config.get("overrides") or {})
    record.spec = config["spec"]
    record.summary = {k: v for k, v in _plain(run.summary or {}).items() if not k.startswith("_")}
    per_dim = record.summary.get(f"{record.eval_split}/kl_per_dim")
    if isinstance(per_dim, list):
        record.per_dim = {"kl_per_dim": per_dim}
    for row in run.scan_history():
        step = row.get("step", row.get("_step"))
        if not isinstance(step, int):
            continue
        kept = {
            k: v
            for k, v in row.items()
            if not k.startswith("_") and (v is None or isinstance(v, (int, float)))
        }
        record.curves.append({**kept, "step": step})
    record.env = _environment(_plain(getattr(run, "metadata", None)))
    classify(record, done=run.state == "finished")
    if run.state not in ("finished", "running") and record.status in ("unfinished", "evaluating"):
        record.reason = f"W&B state {run.state!r}; " + record.reason
    return record


def check_project_path(path: str) -> None:
    """`--wandb` must be ENTITY/PROJECT: checked before the W&B API is created (which asks for a login)."""
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", path):
        raise UserError(
            f"--wandb {path!r} is not ENTITY/PROJECT: give the W&B entity (your user or team name) and "
            "the project, e.g. --wandb my-team/vaebench (as in the project's URL, wandb.ai/ENTITY/PROJECT)."
        )


def load_wandb(api: Any, path: str, experiment: str | None = None, console: Console | None = None) -> RunSet:
    """The runs of W&B project `path` ("entity/project"), only those of group `experiment` when given."""
    filters = {"group": experiment} if experiment else None
    try:
        runs = list(api.runs(path, filters=filters))
        records = [
            wandb_record(run)
            for run in track(
                runs, description="loading W&B runs", console=console, transient=True, disable=console is None
            )
        ]
    except Exception as err:  # the API raises its own, changing, error types (network, auth, bad path)
        raise UserError(
            f"Could not read the runs of W&B project {path!r} ({type(err).__name__}: {err}). Check the "
            "ENTITY/PROJECT spelling and that you are logged in (`wandb login` or WANDB_API_KEY)."
        ) from err
    return make_run_set(records, experiment, f"W&B project {path}")
