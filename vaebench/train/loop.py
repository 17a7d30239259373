"""Training one run: a plain function of (resolved spec, seed, run folder) -> result.

The loop follows nanoGPT's order: learning rate and KL weight for this step -> the step (forward,
backward, finite check, clip, update) -> maybe read its numbers, log, validate and checkpoint -> stop.
Everything a later stage needs (metrics, checkpoints) is written to the run folder; W&B only mirrors
it. The end of a run (figures, the final evaluation, summary.json, DONE) is the runner's
(`vaebench.launch.runner.finish_run`): a run that trained to its last step here comes back as "trained".

One step has one interface (`vaebench.train.steps.TrainStep`: step / read / reset) and two implementations:
the plain path (`vaebench.train.steps`, the default on CPU) and the fast path (`vaebench.train.fastpath`,
CUDA),
which keeps its numbers on the device until they are read. The caller picks the path (`path=`), so
this module imports neither the fast path nor evaluation.

Resumption is exact: the batch order is a pure function of (seed, epoch), the checkpoint holds the
model, optimizer, RNG states, the metric accumulators and the step, so a run stopped at any point
and resumed ends with the same parameters (bit-identical on CPU) as one never stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch.utils.data import Dataset

from vaebench import data as datasets
from vaebench.config.experiments import RunLabels, flatten
from vaebench.config.spec import RunSpec
from vaebench.core.device import Device, resolve_device
from vaebench.core.errors import UserError
from vaebench.core.progress import Reporter, SilentReporter
from vaebench.data.batches import eval_batches, steps_per_epoch, to_float
from vaebench.model.likelihoods import bits_per_dim
from vaebench.model.vae import VAE, build_model
from vaebench.objectives import TrainingLoss
from vaebench.objectives.annealing import kl_weight
from vaebench.objectives.perceptual import VGGPerceptual
from vaebench.runs.checkpoint import (
    CheckpointWarning,
    RunCheckpoints,
    load_checkpoint,
    previous_dir,
    rng_state,
    set_rng_state,
)
from vaebench.runs.document import read_run_document, run_document
from vaebench.runs.environment import environment_info
from vaebench.runs.io import atomic_write_json, atomic_write_text, read_json, remove_stale_temp_files
from vaebench.runs.metrics_log import DamagedMetrics, MetricsLog, missing_rows, read_metrics, repair_metrics
from vaebench.runs.paths import RunPaths
from vaebench.runs.tracking import Tracker
from vaebench.train.schedules import lr_at, total_steps
from vaebench.train.steps import PLAIN, TrainPath, TrainStep, training_loss, zero_sums

__all__ = ["Device", "Reporter", "SilentReporter", "train"]  # Device, Reporter: for callers' hints


class NumericalFault(UserError):
    """A non-finite loss or gradient: the run stops, and the last good checkpoint is named."""


@dataclass
class RunResult:
    """What became of one run. "trained": at its last step, its end (`finish_run`) still to do; then
    `tracker` is its W&B run, still open, which the end logs the evaluation to and finishes."""

    run_dir: Path
    status: Literal["finished", "trained", "skipped", "stopped", "failed"]
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0
    tracker: Tracker | None = field(default=None, repr=False)


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


class DeferredInterrupt:
    """Holds a first Ctrl-C (SIGINT) until the current training step is complete; a second one interrupts.

    Nearly all of a step's time is spent inside forward/backward/optimizer.step: an immediate
    KeyboardInterrupt would leave random numbers drawn, or parameters half updated, for a step the
    checkpoint says did not happen, and the resumed run would differ from one never interrupted.
    Signals reach only the main thread; elsewhere install() does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT) or signal.default_int_handler
            signal.signal(signal.SIGINT, self._handle)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(
    model: VAE, dataset: Dataset, spec: RunSpec, device: torch.device, loss: TrainingLoss,
    batch_size: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Validation metrics: the objective's own terms at the end of annealing, and the beta = 1 ELBO.

    `val/loss` (what the best checkpoint minimises) is the objective's loss at annealing weight 1 (for
    the ELBO: recon + loss.beta * KL after free bits, plus the perceptual term), so a new objective or
    term is selected on what it trains; `val/<term>` is each of its terms, and `val/bpd_elbo` is -ELBO at
    beta = 1 in bits/dim, comparable across variants whatever their objective. The first
    train.val_batches * train.batch_size images are used (all when val_batches is null); `batch_size`
    (default train.batch_size) is only how many go through the model at once.
    """
    model.eval()
    totals = dict.fromkeys(loss.terms, 0.0)
    count = 0
    per_call = batch_size or spec.train.batch_size
    limit = None if spec.train.val_batches is None else spec.train.val_batches * spec.train.batch_size
    for xb in eval_batches(dataset, per_call, None if limit is None else math.ceil(limit / per_call)):
        x = to_float(xb if limit is None else xb[: limit - count], device)
        terms = loss(model, x, 1.0)
        for key in totals:
            totals[key] += float(terms[key]) * len(x)
        count += len(x)
    model.train()
    m = {k: v / count for k, v in totals.items()}
    return {
        "val/loss": m["loss"],
        **{f"val/{k}": v for k, v in m.items() if k != "loss"},
        "val/bpd_elbo": bits_per_dim(m["recon"] + m["kl"], x[0].numel()),
    }


# ----------------------------------------------------------------------------- the run


def build_optimizer(
    model: VAE, spec: RunSpec, device: torch.device, fused: bool | None = None
) -> torch.optim.Optimizer:
    """Adam/AdamW; fused (one kernel for all parameters) on CUDA or when asked, the plain loop otherwise."""
    cls = torch.optim.AdamW if spec.optim.name == "adamw" else torch.optim.Adam
    extra = {"fused": True} if (device.type == "cuda" if fused is None else fused) else {}
    return cls(
        model.parameters(),
        lr=spec.optim.lr,
        betas=spec.optim.betas,
        weight_decay=spec.optim.weight_decay,
        **extra,
    )


def train(
    spec: RunSpec,
    seed: int,
    run_dir: Path,
    *,
    labels: RunLabels | None = None,
    device: Device = "auto",
    force: bool = False,
    reporter: Reporter | None = None,
    stop_after: int | None = None,
    path: TrainPath = PLAIN,
) -> RunResult:
    """Train (or resume, or skip when finished) one run of `spec` with `seed` in `run_dir`, to its last step.

    Returns "trained" at the last step (the caller finishes the run: `vaebench.launch.runner.finish_run`),
    "skipped" when the folder's DONE marker says it is finished, "stopped" after `stop_after` steps
    (a checkpoint is written; used to test resumption). labels: the experiment, variant and axes the
    run belongs to (spec.yaml, W&B). path: how steps run (`vaebench.train.steps.PLAIN`, or
    `vaebench.train.fastpath.FAST`); the runner picks the fast path on CUDA.
    """
    reporter = reporter or SilentReporter()
    labels = labels or RunLabels()
    document = run_document(labels, spec, seed)
    paths = RunPaths(run_dir)
    if not force:
        prepare_run_folder(paths, reporter)
        check_same_training_spec(paths, spec)
    if paths.done.exists() and not force:
        check_finished_run(paths, reporter.message)
        return RunResult(run_dir, "skipped", read_json(paths.summary) if paths.summary.exists() else {})
    if force and run_dir.exists():
        # Keep the replaced run next to the new one rather than deleting it.
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        shutil.move(str(run_dir), str(run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")))

    # Fail before any work on what a person must fix: data, weights, device.
    datasets.check_data(spec.data, run_dir=run_dir)
    dev = resolve_device(device)
    perceptual = (
        VGGPerceptual(spec.loss.perceptual_layers, spec.loss.vgg_weights).to(dev)
        if spec.loss.perceptual_weight > 0
        else None
    )
    train_set = datasets.build_dataset(spec.data, "train")
    val_set = datasets.build_dataset(spec.data, "val")
    total = total_steps(spec.train, len(train_set))
    per_epoch = steps_per_epoch(len(train_set), spec.train.batch_size)
    loss = training_loss(spec, len(train_set), dev, perceptual)

    torch.manual_seed(seed)
    model = build_model(spec.model, spec.data.image_size).to(dev)
    optimizer = build_optimizer(model, spec, dev, fused=path.fused_optimizer)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.checkpoints.mkdir(exist_ok=True)
    atomic_write_text(paths.spec, yaml.safe_dump(document, sort_keys=False))
    atomic_write_json(paths.env, environment_info(dev))

    state = {
        "step": 0, "best_val": math.inf, "acc": zero_sums(loss.terms), "skipped_batches": 0,
        "val_loss": VAL_LOSS,
    }  # fmt: skip
    checkpoints = RunCheckpoints(paths, spec.train.keep_checkpoints)
    ckpt = resume_checkpoint(paths, spec, total, checkpoints, reporter, loss.terms)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        state = ckpt["loop"]
        reporter.message(f"resuming {run_dir} from step {state['step']}")
        _upgrade_best_val(state, spec, reporter)
    metrics = MetricsLog(paths.metrics)
    metrics.truncate_after(state["step"])

    tracker = Tracker.start(
        spec.tracking,
        run_dir,
        config=document,
        group=labels.experiment,
        name=f"{labels.variant}/seed{seed}",
        tags=[f"{k}={v}" for k, v in labels.axes.items()],
    )

    batches = path.batches(train_set, spec, seed, state["step"], dev, reporter.message)
    train_step = path.step(model, optimizer, spec, dev, loss, state=state)
    val_batch_size = path.validation_batch_size(spec, dev)
    dims = 3 * spec.data.image_size**2
    beta = getattr(spec.loss, "beta", 1.0)  # the annealed beta logged as train/beta, for objectives with one
    reporter.start(f"{labels.variant}/seed{seed}", total, state["step"])
    started = time.perf_counter()

    def checkpoint(where: Path) -> None:
        checkpoints.save(
            where,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
                "loop": state,
                "spec": document,
                # every row so far (str: weights_only loading refuses b""), to rebuild a damaged metrics.jsonl
                "metrics": paths.metrics.read_bytes().decode("utf-8", errors="replace"),
            },
        )

    interrupt = DeferredInterrupt()
    interrupt.install()
    try:
        t_log = time.perf_counter()
        grad_norm = math.nan
        while state["step"] < total:
            step = state["step"]
            lr = lr_at(step, spec.optim, total)
            weight = kl_weight(step, spec.anneal, total)  # the annealing fraction, in [0, 1] mostly

            # forward, backward, finite check, clip, update and metric sums (queued on the device on the
            # fast path). A skipped non-finite batch still counts as a step, so the data order stays a
            # function of the step and the run logs, validates and checkpoints on schedule.
            train_step.step(*batches.next(), lr=lr, weight=weight)
            state["step"] = step = step + 1

            validate_now, log_now, checkpoint_now = scheduled(step, spec, total)
            stop_now = stop_after is not None and step >= stop_after and step < total
            if not train_step.deferred or log_now or checkpoint_now or stop_now or interrupt.requested:
                # The fast path's one read-back: metric sums into state["acc"], and a NumericalFault before
                # any row or checkpoint that would come after a fault.
                grad_norm = _settle(train_step, state, spec, reporter, paths)
            if log_now:
                now = time.perf_counter()
                acc = state["acc"]
                n = acc["n"] or math.nan  # nan (null in metrics.jsonl): every step since the last row skipped
                row = {
                    "step": step,
                    "epoch": step / per_epoch,
                    **{f"train/{k}": acc.get(k, 0.0) / n for k in loss.terms},
                    "train/beta": beta * weight,
                    "train/kl_weight": weight,
                    "lr": lr,
                    "train/bpd_elbo": bits_per_dim((acc["recon"] + acc["kl"]) / n, dims),
                    "train/grad_norm": float(grad_norm),
                    "images_per_s": acc["n"] * spec.train.batch_size / max(now - t_log, 1e-9),
                }
                if validate_now:
                    row.update(validate(model, val_set, spec, dev, loss, val_batch_size))
                    if row["val/loss"] < state["best_val"]:
                        state["best_val"] = row["val/loss"]
                        state["best_step"] = step
                        checkpoint(paths.best)
                metrics.write(row)
                tracker.log(row, step)
                reporter.update(step, row)
                state["acc"] = zero_sums(loss.terms)
                train_step.reset()
                t_log = time.perf_counter()
            else:
                reporter.update(step, {})
            if checkpoint_now:
                checkpoint(paths.last)
            if stop_now:
                checkpoint(paths.last)
                tracker.finish()
                return RunResult(
                    run_dir,
                    "stopped",
                    error=f"stopped after {step} steps (stop_after)",
                    wall_s=time.perf_counter() - started,
                )
            if interrupt.requested:  # Ctrl-C during this step, which is now complete
                checkpoint(paths.last)
                raise KeyboardInterrupt(f"interrupted at step {step}; rerun the same command to resume")
    except KeyboardInterrupt as err:
        tracker.finish()
        # Without a message it came mid-step (a second Ctrl-C): nothing was saved, the last checkpoint stands.
        reporter.message(
            str(err)
            or f"interrupted mid-step, nothing saved; the last checkpoint is {_last_checkpoint(paths)}"
        )
        raise
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    finally:
        interrupt.restore()
        reporter.finish()
    return RunResult(run_dir, "trained", wall_s=time.perf_counter() - started, tracker=tracker)


VAL_LOSS = "objective"
"""What val/loss (and so the loop's best_val) means: the objective's own loss at annealing weight 1.
Checkpoints written before objectives existed have no "val_loss" key; their best_val left out free bits."""


def _upgrade_best_val(state: dict[str, Any], spec: RunSpec, reporter: Reporter) -> None:
    """A checkpoint from before objectives, with free bits on, compares best_val without free bits:
    restart the comparison so that best.pt keeps following val/loss (the next validation replaces it)."""
    if state.get("val_loss") == VAL_LOSS:
        return
    state["val_loss"] = VAL_LOSS
    if spec.anneal.free_bits > 0 and math.isfinite(state["best_val"]):
        reporter.message(
            f"val/loss now includes free bits (the objective's own loss); best.pt from step "
            f"{state.get('best_step')} ({state['best_val']:.6g} without them) is replaced at the next "
            "validation"
        )
        state["best_val"] = math.inf


def scheduled(step: int, spec: RunSpec, total: int) -> tuple[bool, bool, bool]:
    """(validate, log, checkpoint) after `step` steps: the loop's schedule, also used when resuming."""
    validate_now = step % spec.train.val_every == 0 or step == total
    log_now = validate_now or step % spec.train.log_every == 0
    checkpoint_now = step % spec.train.checkpoint_every == 0 or step == total
    return validate_now, log_now, checkpoint_now


# ----------------------------------------------------------------------------- resuming a run folder


def has_checkpoints(paths: RunPaths) -> bool:
    """Whether training ever saved a checkpoint here (last.pt, best.pt or a kept previous one)."""
    return paths.last.exists() or paths.best.exists() or any(previous_dir(paths).glob("step*.pt"))


def prepare_run_folder(paths: RunPaths, reporter: Reporter) -> None:
    """Before a run is resumed or skipped: temp files of killed writes removed, a lost spec.yaml restored.

    spec.yaml comes back from the document every checkpoint carries (what the run was trained with), so
    a finished run whose spec.yaml was deleted is reported again after a rerun, without retraining.
    """
    removed = remove_stale_temp_files(paths)
    if removed:
        reporter.message(f"removed {len(removed)} temporary file(s) of interrupted writes in {paths.root}")
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
        reporter.message(f"{paths.spec} was missing: restored from {path}")
        return


def _repair_metrics(
    paths: RunPaths, ckpt: dict[str, Any] | None, say: Callable[[str], None], final_step: int | None = None
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


def check_finished_run(paths: RunPaths, say: Callable[[str], None]) -> None:
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
    reporter: Reporter,
    terms: tuple[str, ...],
) -> dict[str, Any] | None:
    """The checkpoint a run resumes from (see `RunCheckpoints.resume`), or None to start at step 0.

    Never starts from step 0 without saying so: with no checkpoint but metrics rows past the first
    checkpoint's step (so checkpoints were written, then lost), it refuses and names --force. A damaged
    metrics.jsonl is rebuilt from the checkpoint. A checkpoint made at a logged step holds accumulators
    that row already used (best.pt is written just before its row): they are reset, as last.pt has them.
    """
    found = checkpoints.resume(reporter.message)
    if found is None:
        logged = _last_logged_step(paths)
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
            reporter.message(message)
        return None
    ckpt = found[0]
    _repair_metrics(paths, ckpt, reporter.message)
    if scheduled(ckpt["loop"]["step"], spec, total)[1]:
        ckpt["loop"]["acc"] = zero_sums(terms)
    return ckpt


def _last_logged_step(paths: RunPaths) -> int:
    """The highest step in metrics.jsonl (0 when there is none), reading past damaged lines."""
    if not paths.metrics.exists():
        return 0
    step = 0
    for line in paths.metrics.read_bytes().splitlines():
        try:
            row = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            step = max(step, row["step"])
    return step


def _last_checkpoint(paths: RunPaths) -> str:
    return f"{paths.last} (step {_ckpt_step(paths.last)})" if paths.last.exists() else "none yet"


def _settle(
    train_step: TrainStep, state: dict[str, Any], spec: RunSpec, reporter: Reporter, paths: RunPaths
) -> float:
    """Read the step's counters into `state` (the fast path's one host sync); the last gradient norm.

    Raises NumericalFault when more than train.skip_bad_batches steps were non-finite: their updates
    were skipped, and this read comes before the row and checkpoint of this step, so no metrics row or
    checkpoint after the first step beyond the allowance is ever written.
    """
    counts = train_step.read()
    state["acc"] = counts.sums
    state["skipped_batches"] = counts.skipped
    if counts.fault_step is not None:
        raise NumericalFault(
            _fault_message(counts.fault_step, counts.fault_loss, counts.fault_grad_norm, paths)
        )
    if counts.new_skipped:
        reporter.message(
            f"step {counts.first_new_skipped}: non-finite loss or gradient, batch skipped "
            f"({counts.skipped}/{spec.train.skip_bad_batches})"
            + (f"; {counts.new_skipped} such batches since the last check" if counts.new_skipped > 1 else "")
        )
    return counts.grad_norm


def _fault_message(step: int, loss: float, grad_norm: float, paths: RunPaths) -> str:
    return (
        f"Non-finite training at step {step}: loss={loss}, grad norm={grad_norm}. "
        f"The run stopped; the last good checkpoint is {_last_checkpoint(paths)}, and metrics up to it "
        f"are in {paths.metrics}. "
        "Lower optim.lr, tighten train.grad_clip, or allow train.skip_bad_batches; rerunning resumes "
        "from that checkpoint."
    )


def _ckpt_step(path: Path) -> int | str:
    try:
        return load_checkpoint(path)["loop"]["step"]
    except UserError:
        return "unreadable"
