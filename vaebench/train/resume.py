"""Opening a run folder to train in: skip it (finished), start it afresh, or resume it where it stopped.

`open_run_folder` decides between skipping and training (and with --force moves the old folder aside);
`resume_checkpoint` finds the checkpoint to resume from, rebuilding a damaged metrics.jsonl from its
record, and refuses to start again from step 0 without saying so. The runner uses
`check_same_training_spec` and `check_finished_run` too, for runs it skips without starting a worker.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml

from vaebench.config.experiments import flatten
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.runs.checkpoint import CheckpointWarning, RunCheckpoints, load_checkpoint, previous_dir
from vaebench.runs.document import read_run_document
from vaebench.runs.io import atomic_write_text, read_json, remove_stale_temp_files
from vaebench.runs.metrics_log import (
    DamagedMetrics,
    last_logged_step,
    missing_rows,
    read_metrics,
    repair_metrics,
)
from vaebench.runs.paths import RunPaths
from vaebench.train.schedules import scheduled
from vaebench.train.state import zero_sums

Say = Callable[[str], None]

# Spec sections that decide what is trained; a run folder may be resumed only under the same values.
TRAINING_SECTIONS = ("data", "model", "loss", "anneal", "optim", "train")
# Where the data is and how it is read, and whether the step is compiled (the same arithmetic: a rerun
# with train.compile off works around a compiler problem), may change between machines without changing
# the run.
# How many checkpoints are kept is bookkeeping, not training either.
MACHINE_KEYS = {"data.root", "data.cache_dir", "data.num_workers", "train.compile", "train.keep_checkpoints"}


def check_same_training_spec(paths: RunPaths, spec: RunSpec) -> None:
    """Refuse to resume or skip a run folder whose recorded spec trains something else than `spec`.

    The folder is named by experiment, variant and seed, not by --set overrides: without this check a
    rerun with other overrides would resume the old run under the new spec (one checkpoint, two specs)
    or skip it as finished (the old run's numbers reported for the new spec). eval, tracking and
    seeds may change between reruns, as may MACHINE_KEYS.
    """
    if not paths.spec.exists() or not (has_checkpoints(paths) or paths.done.exists()):
        return  # nothing trained yet: starting afresh under the new spec mixes nothing
    try:
        recorded = RunSpec.model_validate(read_run_document(paths.spec)["spec"])
    except Exception as err:
        raise UserError(
            f"{paths.spec} cannot be read as a run spec ({type(err).__name__}: {err}), so the run in "
            f"{paths.root} cannot be resumed safely. Use --force to retrain it (the old folder is kept "
            "as *.replaced-*)."
        ) from None
    sections = set(TRAINING_SECTIONS)
    old = flatten(recorded.model_dump(mode="json", include=sections))
    new = flatten(spec.model_dump(mode="json", include=sections))
    changed = [
        k for k in sorted(old.keys() | new.keys()) if k not in MACHINE_KEYS and old.get(k) != new.get(k)
    ]
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise UserError(
            f"{paths.root} holds a run of another spec ({shown}{', ...' if len(changed) > 5 else ''}); "
            "resuming or skipping it would mix the two. Use --force to replace it (the old folder is kept "
            "as *.replaced-*), or --runs-dir to put the new runs elsewhere."
        )


def open_run_folder(paths: RunPaths, spec: RunSpec, *, force: bool, say: Say) -> Literal["skip", "train"]:
    """Make the run folder ready to train `spec` in; "skip" when its run is finished (DONE).

    Without force: temp files of killed writes are removed and a lost spec.yaml restored
    (`prepare_run_folder`), the recorded spec must train the same thing (`check_same_training_spec`,
    a UserError otherwise), and a finished run's damaged last.pt or metrics.jsonl is said and repaired
    as far as it can be (`check_finished_run`). With force, an existing folder is kept aside as
    <name>.replaced-<time> and the run starts afresh.
    """
    if not force:
        prepare_run_folder(paths, say)
        check_same_training_spec(paths, spec)
        if paths.done.exists():
            check_finished_run(paths, say)
            return "skip"
    elif paths.root.exists():
        # Keep the replaced run next to the new one rather than deleting it.
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        shutil.move(str(paths.root), str(paths.root.with_name(f"{paths.root.name}.replaced-{stamp}")))
    return "train"


def has_checkpoints(paths: RunPaths) -> bool:
    """Whether training ever saved a checkpoint here (last.pt, best.pt or a kept previous one)."""
    return paths.last.exists() or paths.best.exists() or any(previous_dir(paths).glob("step*.pt"))


def prepare_run_folder(paths: RunPaths, say: Say) -> None:
    """Before a run is resumed or skipped: temp files of killed writes removed, a lost spec.yaml restored.

    spec.yaml comes back from the document every checkpoint carries (what the run was trained with), so
    a finished run whose spec.yaml was deleted is reported again after a rerun, without retraining.
    """
    removed = remove_stale_temp_files(paths)
    if removed:
        say(f"removed {len(removed)} temporary file(s) of interrupted writes in {paths.root}")
    if paths.spec.exists() or not paths.root.is_dir():
        return
    for path in (paths.last, paths.best, *sorted(previous_dir(paths).glob("step*.pt"), reverse=True)):
        if not path.exists():
            continue
        try:
            document = load_checkpoint(path)["spec"]
        except (UserError, KeyError):
            continue
        atomic_write_text(paths.spec, yaml.safe_dump(document, sort_keys=False))
        say(f"{paths.spec} was missing: restored from {path}")
        return


def _repair_metrics(
    paths: RunPaths, ckpt: dict[str, Any] | None, say: Say, final_step: int | None = None
) -> None:
    """Rebuild metrics.jsonl from the checkpoint's record of it when the file is damaged, gone, or lacks
    rows the record holds (a crash tears only the last line, so a row gone from the middle was removed);
    else do nothing. Each repair is one CheckpointWarning, also passed to `say`.

    `ckpt` is the checkpoint being resumed from, or a finished run's newest intact one; final_step: a
    finished run's last step, to say which rows no checkpoint holds when `ckpt` is older.
    """
    record = ckpt.get("metrics") if ckpt is not None else None
    record_bytes = record.encode() if isinstance(record, str) else None
    step = ckpt["loop"]["step"] if ckpt is not None else 0
    try:
        if paths.metrics.exists():
            read_metrics(paths.metrics)
        if record_bytes is None:
            return
        gone = missing_rows(paths.metrics, record_bytes, step)
        if not gone:
            return
        if paths.metrics.exists():
            shown = ", ".join(map(str, gone[:10])) + (", ..." if len(gone) > 10 else "")
            problem = f"lacked the rows of step(s) {shown} (removed: a crash only tears the last line)"
        else:
            problem = "was missing"
        message = repair_metrics(paths.metrics, record_bytes, step, problem, tag="incomplete")
    except DamagedMetrics:
        message = repair_metrics(paths.metrics, record_bytes, step)
    if final_step is not None and step < final_step:
        message += (
            f" Rows after step {step} are in no intact checkpoint: those missing from the file are lost."
        )
    warnings.warn(message, CheckpointWarning, stacklevel=3)
    say(message)


def check_finished_run(paths: RunPaths, say: Say) -> None:
    """Before a finished run (DONE) is skipped: say when its last.pt is damaged or gone, and rebuild its
    metrics.jsonl from the newest intact checkpoint's record when rows are damaged or gone.

    A finished run is never retrained by a rerun, so a damaged last.pt (the final model) would otherwise
    stay damaged unnoticed until `vaebench evaluate --checkpoint last` or the figures need it. best.pt is
    never put in its place: it is the best validation's model, from an earlier step. --force retrains.
    """
    try:
        last = load_checkpoint(paths.last)
    except UserError as err:  # CorruptCheckpoint, or no last.pt at all
        problem = str(err).split(". Rerunning")[0] if paths.last.exists() else f"{paths.last} is missing"
    else:
        _repair_metrics(paths, last, say)
        return
    summary = read_json(paths.summary) if paths.summary.exists() else {}
    final = summary.get("step") if isinstance(summary.get("step"), int) else None
    intact: dict[Path, dict[str, Any]] = {}
    for path in (paths.best, *previous_dir(paths).glob("step*.pt")):
        try:
            intact[path] = load_checkpoint(path)
        except UserError:
            continue
    best = f", step {intact[paths.best]['loop']['step']}" if paths.best in intact else ""
    message = (
        f"{problem}. This run is finished, so a rerun does not train it again: its final model"
        f"{f' (step {final})' if final is not None else ''} stays lost, while its numbers (summary.json, "
        f"eval/) are not affected. best.pt is not put in last.pt's place: it is the model of the best "
        f"validation{best}, not of the last step. To get the final model back, train the run again with "
        f"--force (this folder is kept as {paths.root.name}.replaced-<time>)."
    )
    warnings.warn(message, CheckpointWarning, stacklevel=2)
    say(message)
    newest = max(intact.values(), key=lambda c: c["loop"]["step"], default=None)
    _repair_metrics(paths, newest, say, final_step=final)


def resume_checkpoint(
    paths: RunPaths,
    spec: RunSpec,
    total: int,
    checkpoints: RunCheckpoints,
    say: Say,
    terms: tuple[str, ...],
) -> dict[str, Any] | None:
    """The checkpoint a run resumes from (see `RunCheckpoints.resume`), or None to start at step 0.

    Never starts from step 0 without saying so: with no checkpoint but metrics rows past the first
    checkpoint's step (so checkpoints were written, then lost), it refuses and names --force. A damaged
    metrics.jsonl is rebuilt from the checkpoint. A checkpoint made at a logged step holds accumulators
    that row already used (best.pt is written just before its row): they are reset, as last.pt has them.
    """
    found = checkpoints.resume(say)
    if found is None:
        logged = last_logged_step(paths.metrics)
        first = min(spec.train.checkpoint_every, total)
        if logged > first:
            raise UserError(
                f"{paths.root} has metrics up to step {logged} but no checkpoint to resume from "
                f"({paths.checkpoints} holds none), so the run cannot continue where it stopped. To train "
                "it again from step 0, rerun with --force: the old folder is kept as "
                f"{paths.root.name}.replaced-<time>."
            )
        if logged:
            message = (
                f"{paths.root}: no checkpoint was written yet (the first is at step {first}); training "
                f"from step 0, and the rows logged up to step {logged} are written again."
            )
            warnings.warn(message, CheckpointWarning, stacklevel=2)
            say(message)
        return None
    ckpt = found[0]
    _repair_metrics(paths, ckpt, say)
    if scheduled(ckpt["loop"]["step"], spec, total)[1]:
        ckpt["loop"]["acc"] = zero_sums(terms)
    return ckpt
