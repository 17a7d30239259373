"""The queue of variant x seed runs of an experiment, and one run from start to DONE.

`run_one` is what `vaebench run` does for each run: pick the training path for the device, train
(`vaebench.train.loop.train`, to the last step), then `finish_run`: figures, the final evaluation, the
summary and the DONE marker. It owns the run's W&B tracker: one `with` around training and the final
evaluation finishes it on every path.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vaebench import data as datasets
from vaebench.config.experiments import Variant
from vaebench.config.spec import RunSpec
from vaebench.core.device import Device, resolve_device
from vaebench.core.errors import UserError
from vaebench.core.progress import Reporter, SilentReporter
from vaebench.data.batches import eval_batches, to_float
from vaebench.data.spec import SyntheticDataSpec
from vaebench.evaluation.evaluate import evaluate_run
from vaebench.evaluation.figures import standard_figures
from vaebench.evaluation.quality import check_required_weights
from vaebench.launch.workers import Board, Executor, Job, Outcome, error_line, python_vaebench, run_pool
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.document import read_run_document, run_document, training_summary, update_summary
from vaebench.runs.io import atomic_write_text, read_json
from vaebench.runs.metrics_log import MetricsLog
from vaebench.runs.paths import RunPaths, run_dir
from vaebench.runs.tracking import Tracker
from vaebench.runs.trained import load_trained_model
from vaebench.train.fastpath import FAST
from vaebench.train.loop import RunResult, train
from vaebench.train.resume import check_finished_run, check_same_training_spec
from vaebench.train.signals import EXIT_REQUEUE
from vaebench.train.steps import PLAIN, TrainPath


@dataclass(frozen=True)
class PlannedRun:
    variant: Variant  # its name carries the suffix, if any: it names the folder and the W&B run
    seed: int
    run_dir: Path
    source_variant: str = ""  # the variant's name in the experiment file (what --variant selects)


def plan_runs(
    variants: Sequence[Variant], runs_dir: Path, seeds: Sequence[int] = (), suffix: str | None = None
) -> list[PlannedRun]:
    """Every variant x seed: the variant's own seeds, or `seeds` when given (--seed).

    suffix: one sweep run's name; each variant becomes `<variant>+<suffix>`, so that sweep runs of the
    same variant with other parameters get folders of their own (runs/<experiment>/<variant>+<suffix>/).
    """
    if suffix is not None and not re.fullmatch(r"[\w.=-]+", suffix):
        raise UserError(f"Run name suffix {suffix!r}: use letters, digits and . = - _ only.")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise UserError(
            f"--seed {negative[0]}: seeds are 0 or more (each names a run folder, seed<k>, as in the spec)."
        )
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise UserError(f"--seed {repeated[0]} is given twice: each seed is one run folder; give each once.")
    planned = []
    for v in variants:
        named = replace(v, name=f"{v.name}+{suffix}") if suffix else v
        for seed in seeds or v.spec.seeds:
            planned.append(PlannedRun(named, seed, run_dir(runs_dir, v.experiment, named.name, seed), v.name))
    return planned


def check_runs_dir(runs_dir: Path) -> None:
    """--runs-dir must be a folder this process can create and write in; checked before any run starts."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--runs-dir {runs_dir} is a file, not a folder: give a folder for the run folders.")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as err:
        raise UserError(
            f"--runs-dir {runs_dir} cannot be written ({err.strerror}): give a folder you can write in, "
            "e.g. --runs-dir $HOME/runs or a scratch disk."
        ) from None


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_synthetic_memory(spec: RunSpec, memory: int | None = None) -> None:
    """Synthetic splits are rendered into memory as uint8: refuse sizes this machine cannot hold.

    The render is float32 in batches, then uint8: about 3 * S^2 bytes an image for the three splits.
    """
    data = spec.data
    if not isinstance(data, SyntheticDataSpec):
        return
    memory = physical_memory_bytes() if memory is None else memory
    per_image = 3 * data.image_size**2
    need = (data.train_size + data.val_size + data.test_size) * per_image
    if memory is not None and need > memory // 2:
        raise UserError(
            f"The synthetic splits (data.train_size = {data.train_size:,}, data.val_size = "
            f"{data.val_size:,}, data.test_size = {data.test_size:,} images of side {data.image_size}) need "
            f"{need / 2**30:,.1f} GiB of memory, more than half of this machine's {memory / 2**30:,.1f} GiB. "
            "Lower data.train_size (4096 trains the quickstart) or data.image_size."
        )


def preflight(plan: Sequence[PlannedRun]) -> None:
    """Check, before the first step of the first run, what a person must fix: data, memory, pretrained
    weights (VGG16 for the perceptual loss, downloaded when absent; the quality metrics' weights, which
    are never downloaded here: `vaebench weights fetch` does that, on a machine with internet access),
    and CelebA's attribute file when eval.probes.enabled.

    The quality metrics' weights are checked only for runs that evaluate when they finish (eval.at_end):
    a run evaluated later by `vaebench evaluate` is checked there.
    """
    from vaebench.data import check_data
    from vaebench.data.attributes import check_attributes
    from vaebench.objectives.perceptual import check_vgg_weights_available

    checked: set[str] = set()
    for item in plan:
        spec = item.variant.spec
        key = spec.data.model_dump_json()
        if key not in checked:
            check_synthetic_memory(spec)
            check_data(spec.data)
            checked.add(key)
        if spec.loss.perceptual_weight > 0 and spec.loss.vgg_weights == "imagenet":
            check_vgg_weights_available()
        if spec.eval.at_end:
            check_required_weights(spec.eval)  # each file is hashed once per process (sha256_file)
        if spec.eval.at_end and spec.eval.probes.enabled:
            check_attributes(spec.data)  # CelebA's attribute file (parsed once per process)


def train_path(spec: RunSpec, device: torch.device, fast_path: bool | None = None) -> TrainPath:
    """The fast path on CUDA and when train.compile is "on", the plain path otherwise.

    fast_path: True takes the fast path on any device (the tests run it on CPU), False never.
    """
    fast = fast_path if fast_path is not None else (device.type == "cuda" or spec.train.compile == "on")
    return FAST if fast else PLAIN


def run_one(
    variant: Variant,
    seed: int,
    run_dir: Path,
    *,
    device: Device = "auto",
    force: bool = False,
    reporter: Reporter | None = None,
    stop_after: int | None = None,
    fast_path: bool | None = None,
) -> RunResult:
    """Train one variant x seed in `run_dir` (or resume it, or skip it when finished) and finish it.

    A run that trained to its last step but was not finished (its evaluation failed or was
    interrupted) goes straight to `finish_run` when rerun. The run's W&B tracker is made and finished
    here, whatever happens (`Tracker`: exit code 1 when training or its end fails, 0 otherwise); W&B
    starts only once training begins, so a skipped run starts no W&B run.
    """
    reporter = reporter or SilentReporter()
    dev = resolve_device(device)
    path = train_path(variant.spec, dev, fast_path)
    with run_tracker(variant, seed, run_dir) as tracker:
        result = train(
            variant.spec, seed, run_dir, labels=variant.labels, device=device, force=force,
            reporter=reporter, stop_after=stop_after, path=path, tracker=tracker,
        )  # fmt: skip
        if result.status != "trained":
            return result
        summary = finish_run(RunPaths(run_dir), dev, tracker)
    return RunResult(run_dir, "finished", summary, wall_s=result.wall_s)


def run_tracker(variant: Variant, seed: int, run_dir: Path) -> Tracker:
    """The W&B tracker of one run, not started yet: grouped by experiment, named <variant>/seed<k>, tagged
    with the variant's axes, its config what spec.yaml holds."""
    labels = variant.labels
    return Tracker(
        run_dir,
        variant.spec.tracking,
        config=run_document(labels, variant.spec, seed),
        group=labels.experiment,
        name=f"{labels.variant}/seed{seed}",
        tags=[f"{k}={v}" for k, v in labels.axes.items()],
    )


def finish_run(paths: RunPaths, device: torch.device, tracker: Tracker | None = None) -> dict[str, Any]:
    """Figures, the final evaluation, the summary and the DONE marker of a run at its last step.

    Figures show the final model (checkpoints/last.pt); the evaluation (when eval.at_end) is of
    checkpoints/best.pt, the model the run's headline numbers are about, with the spec's eval settings.
    It runs before the summary and DONE, so a finished run always has its "<split>/..." keys in
    summary.json, and a run whose evaluation failed is finished by rerunning.
    """
    document = read_run_document(paths.spec)
    spec = RunSpec.model_validate(document["spec"])
    last = load_checkpoint(paths.last)  # read once: the figures' weights and the loop state
    model, _ = load_trained_model(paths.last, spec, device, state=last)
    model.eval()
    loop = last["loop"]
    test_set = datasets.build_dataset(spec.data, "test")
    images = to_float(next(eval_batches(test_set, 16)), device)
    figures = standard_figures(model, images, paths.figures, seed=document["seed"], step=loop["step"])
    if tracker is not None:
        tracker.log_images(figures, loop["step"])
    if spec.eval.at_end:
        # last.pt only if no validation ever gave a finite loss (then best.pt was never written)
        which = "best" if paths.best.exists() else "last"
        evaluate_run(paths.root, checkpoint=which, device=device, tracker=tracker, tracker_step=loop["step"])
    summary = training_summary(document, loop, MetricsLog.read(paths.metrics))
    update_summary(paths.summary, summary)
    if tracker is not None:
        tracker.summary_update(summary)
    atomic_write_text(paths.done, datetime.now(timezone.utc).isoformat())
    return read_json(paths.summary)


def run_queue(
    plan: Sequence[PlannedRun], *, device: Device, force: bool, reporter: Reporter
) -> list[RunResult]:
    """Train each planned run in turn; a run that fails is recorded and the others still run.

    Expected failures (bad data, missing weights, non-finite loss) become `failed` results with their
    message. Ctrl-C stops the queue (the trainer has checkpointed the current run first).
    """
    results = []
    for item in plan:
        try:
            result = run_one(
                item.variant, item.seed, item.run_dir, device=device, force=force, reporter=reporter
            )
        except UserError as err:
            reporter.message(f"{item.run_dir}: failed: {err}")
            result = RunResult(item.run_dir, "failed", error=str(err))
        results.append(result)
        run_done = getattr(reporter, "run_done", None)
        if run_done is not None:
            run_done()
    return results


def worker_command(
    spec: Path,
    *,
    runs_dir: Path,
    device: str,
    force: bool,
    suffix: str | None,
    sets: Sequence[str],
    extra: Sequence[str],
) -> list[str]:
    """The command line every worker of one `vaebench run` shares (a subprocess, or a SLURM job, per run):
    `vaebench run SPEC` with the invocation's options and overrides, quiet, on this interpreter.

    sets: the --set values; extra: the trailing `key=value` overrides, as given. `run_parallel` adds each
    run's `--variant V --seed S`; the --parallel/--executor/--slurm-* options stay with the controller.
    """
    argv = [*python_vaebench(), "run", str(spec), "--runs-dir", str(runs_dir), "--quiet"]
    argv += ["--device", device, *(["--force"] if force else [])]
    argv += ["--suffix", suffix] if suffix else []
    return argv + [arg for item in sets for arg in ("--set", item)] + list(extra)


def run_parallel(
    plan: Sequence[PlannedRun],
    worker_args: Sequence[str],
    *,
    force: bool,
    executor: Executor,
    slots: Sequence[str | None],
    board: Board,
    slurm_overrides: Mapping[str, Any] | None = None,
) -> list[RunResult]:
    """Train the planned runs as `vaebench run` subprocesses, len(slots) at a time (see
    vaebench.launch.workers).

    worker_args: the command line of one run without its selection (`worker_command`); `--variant V
    --seed S` is added per run. Finished runs are
    skipped here (after the same spec check the trainer does); a failed run is reported with the
    `error:` line of its log, `<run folder>.log`, and the others go on. SLURM jobs get each variant's
    `slurm` section with `slurm_overrides` (the --slurm-* flags) on top.
    """
    results: dict[Path, RunResult] = {}
    jobs: list[Job] = []
    for item in plan:
        paths = RunPaths(item.run_dir)
        if paths.done.exists() and not force:
            try:
                check_same_training_spec(paths, item.variant.spec)
            except UserError as err:
                results[item.run_dir] = RunResult(item.run_dir, "failed", error=str(err))
                continue
            notes: list[str] = []
            check_finished_run(paths, notes.append)  # a damaged last.pt is said, metrics rows rebuilt
            summary = read_json(paths.summary) if paths.summary.exists() else {}
            results[item.run_dir] = RunResult(item.run_dir, "skipped", summary, error=" ".join(notes) or None)
            continue
        argv = [*worker_args, "--variant", item.source_variant or item.variant.name, "--seed", str(item.seed)]
        log = item.run_dir.with_name(f"{item.run_dir.name}.log")
        slurm = item.variant.spec.slurm.model_copy(update=dict(slurm_overrides or {}))
        jobs.append(Job(str(item.run_dir), argv, log, slurm=slurm))
    for result in results.values():
        board.ended(str(result.run_dir), result.status, result.error or "already finished")

    def on_done(outcome: Outcome) -> tuple[str, str]:
        run_dir = Path(outcome.job.name)
        paths = RunPaths(run_dir)
        summary = read_json(paths.summary) if paths.summary.exists() else {}
        if outcome.returncode == 0 and paths.done.exists():
            results[run_dir] = RunResult(run_dir, "finished", summary, wall_s=outcome.wall_s)
            return "finished", ""
        if outcome.stopped is not None or outcome.returncode == EXIT_REQUEUE:
            why = outcome.stopped or "stopped by SIGUSR2/SIGTERM to be requeued, but the job ended"
            error = f"{why}; rerun to resume (log: {outcome.job.log})"
            results[run_dir] = RunResult(run_dir, "stopped", summary, error=error, wall_s=outcome.wall_s)
            return "stopped", error
        why = error_line(outcome.job.log) or f"exit status {outcome.returncode}"
        error = f"{why} (log: {outcome.job.log})"
        results[run_dir] = RunResult(run_dir, "failed", summary, error=error, wall_s=outcome.wall_s)
        return "failed", why

    queue = iter(jobs)
    run_pool(lambda: next(queue, None), executor, slots, on_done, board)
    return [results[item.run_dir] for item in plan if item.run_dir in results]
