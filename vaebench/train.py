"""Training one run: a plain function of (resolved spec, seed, run folder) -> result.

The loop follows nanoGPT's order: learning rate and KL weight for this step -> maybe validate and
checkpoint -> forward/backward -> check finite -> clip -> step -> log. Everything a later stage
needs (metrics, checkpoints, figures, summary) is written to the run folder; W&B only mirrors it.

Resumption is exact: the batch order is a pure function of (seed, epoch), the checkpoint holds the
model, optimizer, RNG states, the metric accumulators and the step, so a run stopped at any point
and resumed ends with the same parameters (bit-identical on CPU) as one never stopped.

On CUDA the step runs on the fast path (`vaebench.fastpath`): the same loop, but the batch, the loss,
the finite check and the metric sums stay on the device and are read back only when a row is logged,
the model is validated or a checkpoint is written.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import yaml
from torch.utils.data import Dataset

from vaebench import data as datasets
from vaebench.annealing import kl_weight
from vaebench.batches import eval_batches, flip_batch, to_float, train_batches
from vaebench.checkpoint import (
    CheckpointWarning,
    RunCheckpoints,
    load_checkpoint,
    previous_dir,
    rng_state,
    set_rng_state,
)
from vaebench.errors import UserError
from vaebench.experiments import Variant, flatten
from vaebench.figures import standard_figures
from vaebench.likelihoods import bits_per_dim
from vaebench.losses import compute_loss
from vaebench.perceptual import VGGPerceptual
from vaebench.runfolder import (
    DamagedMetrics,
    MetricsLog,
    RunPaths,
    atomic_write_json,
    atomic_write_text,
    environment_info,
    read_json,
    read_metrics,
    read_run_document,
    remove_stale_temp_files,
    repair_metrics,
    update_summary,
)
from vaebench.schedules import lr_at, steps_per_epoch, total_steps
from vaebench.spec import RunSpec
from vaebench.tracking import Tracker
from vaebench.vae import VAE, build_model

Device = str
"""auto, cpu, cuda or cuda:N (`vaebench.cli.parse_device` checks what a person types)."""


class NumericalFault(UserError):
    """A non-finite loss or gradient: the run stops, and the last good checkpoint is named."""


class Reporter(Protocol):
    """What the trainer tells whoever shows progress (a rich bar, plain log lines, or nothing)."""

    def start(self, name: str, total: int, initial: int) -> None: ...
    def update(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, name: str, total: int, initial: int) -> None: ...
    def update(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


@dataclass
class RunResult:
    run_dir: Path
    status: Literal["finished", "skipped", "stopped", "failed"]
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0


def resolve_device(device: Device) -> torch.device:
    """auto, cpu, cuda or cuda:N as a torch.device; a CUDA device torch cannot see is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"--device {device} was asked for, but torch sees no CUDA device (torch.cuda.is_available() "
            "is False). Use --device cpu, or install a CUDA build of torch."
        )
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UserError(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0 "
            "(CUDA_VISIBLE_DEVICES renumbers them). Give one of those, or --device cuda."
        )
    return resolved


def autocast_dtype(spec: RunSpec, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on CPU (bf16 on CPU is slow and would break bit-exactness)."""
    if spec.train.precision == "bf16" or (spec.train.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def run_document(variant: Variant, seed: int) -> dict[str, Any]:
    """What spec.yaml holds: enough to rebuild the run (and the report's axes) without the experiment file."""
    return {
        "experiment": variant.experiment,
        "variant": variant.name,
        "seed": seed,
        "axes": variant.axes,
        "overrides": variant.overrides,
        "spec": variant.spec.model_dump(mode="json"),
    }


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
    model: VAE,
    dataset: Dataset,
    spec: RunSpec,
    device: torch.device,
    perceptual: VGGPerceptual | None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Validation metrics at beta = loss.beta (the objective annealing leads to) and the beta = 1 ELBO.

    `val/loss` (what the best checkpoint minimises) = recon + loss.beta * KL (+ perceptual term);
    `val/bpd_elbo` is -ELBO at beta = 1 in bits/dim, comparable across variants whatever their beta.
    The first train.val_batches * train.batch_size images are used (all when val_batches is null);
    `batch_size` (default train.batch_size) is only how many go through the model at once.
    """
    model.eval()
    totals = {"recon": 0.0, "kl": 0.0, "perceptual": 0.0}
    count = 0
    dtype = autocast_dtype(spec, device)
    per_call = batch_size or spec.train.batch_size
    limit = None if spec.train.val_batches is None else spec.train.val_batches * spec.train.batch_size
    for xb in eval_batches(dataset, per_call, None if limit is None else math.ceil(limit / per_call)):
        x = to_float(xb if limit is None else xb[: limit - count], device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        terms = compute_loss(out, x, spec.loss, spec.loss.beta, 0.0, perceptual)
        for key in totals:
            totals[key] += float(getattr(terms, key)) * len(x)
        count += len(x)
    model.train()
    m = {k: v / count for k, v in totals.items()}
    dims = x[0].numel()
    result = {
        "val/loss": m["recon"] + spec.loss.beta * m["kl"] + spec.loss.perceptual_weight * m["perceptual"],
        "val/recon": m["recon"],
        "val/kl": m["kl"],
        "val/bpd_elbo": bits_per_dim(m["recon"] + m["kl"], dims),
    }
    if perceptual is not None:
        result["val/perceptual"] = m["perceptual"]
    return result


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
    """Train (or resume, or skip when finished) one variant x seed in `run_dir`.

    stop_after: stop (with a checkpoint) after this many steps even if the run is longer;
    used to test resumption, harmless otherwise.
    fast_path: None (default) takes the fast path (`vaebench.fastpath`) on CUDA and when
    train.compile is "on"; True takes it on any device (the tests run it on CPU), False never.
    """
    reporter = reporter or SilentReporter()
    spec = variant.spec
    paths = RunPaths(run_dir)
    if not force:
        prepare_run_folder(paths, reporter)
        check_same_training_spec(paths, spec)
    if paths.done.exists() and not force:
        _repair_damaged_metrics(paths, None, reporter)
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

    fast = fast_path if fast_path is not None else (dev.type == "cuda" or spec.train.compile == "on")
    torch.manual_seed(seed)
    model = build_model(spec.model, spec.data.image_size).to(dev)
    optimizer = build_optimizer(model, spec, dev, fused=fast or None)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.checkpoints.mkdir(exist_ok=True)
    atomic_write_text(paths.spec, yaml.safe_dump(run_document(variant, seed), sort_keys=False))
    atomic_write_json(paths.env, environment_info(dev))

    state = {"step": 0, "best_val": math.inf, "acc": _zero_acc(), "skipped_batches": 0}
    checkpoints = RunCheckpoints(paths, spec.train.keep_checkpoints)
    ckpt = resume_checkpoint(paths, spec, total, checkpoints, reporter)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        state = ckpt["loop"]
        reporter.message(f"resuming {run_dir} from step {state['step']}")
    metrics = MetricsLog(paths.metrics)
    metrics.truncate_after(state["step"])

    tracker = Tracker.start(
        spec.tracking,
        run_dir,
        config=run_document(variant, seed),
        group=variant.experiment,
        name=f"{variant.name}/seed{seed}",
        tags=[f"{k}={v}" for k, v in variant.axes.items()],
    )

    dtype = autocast_dtype(spec, dev)
    dims = 3 * spec.data.image_size**2
    fast_step, val_batch_size = None, None
    if fast:
        from vaebench.fastpath import DeviceBatches, FastTrainStep, validation_batch_size

        device_batches = DeviceBatches(
            train_set, spec.train.batch_size, seed, flip=spec.data.flip, device=dev,
            start_step=state["step"], workers=spec.data.num_workers, say=reporter.message,
        )  # fmt: skip
        fast_step = FastTrainStep(model, optimizer, spec, dev, perceptual, state=state)
        val_batch_size = validation_batch_size(spec, dev)
    else:
        batches = train_batches(train_set, spec.train.batch_size, seed, state["step"], spec.data.num_workers)
    reporter.start(f"{variant.name}/seed{seed}", total, state["step"])
    started = time.perf_counter()

    def checkpoint(path: Path) -> None:
        checkpoints.save(
            path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
                "loop": state,
                "spec": run_document(variant, seed),
                # every row so far (str: weights_only loading refuses b""), to rebuild a damaged metrics.jsonl
                "metrics": paths.metrics.read_bytes().decode("utf-8", errors="replace"),
            },
        )

    interrupt = DeferredInterrupt()
    interrupt.install()
    try:
        t_log = time.perf_counter()
        while state["step"] < total:
            step = state["step"]
            lr = lr_at(step, spec.optim, total)
            beta = spec.loss.beta * kl_weight(step, spec.anneal, total)

            if fast_step is not None:
                # forward, backward, clip, finite check, update and metric sums, all queued on the device
                fast_step(*device_batches.next(), lr=lr, beta=beta)
            else:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                xb = next(batches)
                if spec.data.flip:
                    xb = flip_batch(xb, seed, step)
                x = to_float(xb, dev)
                with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = model(x)
                terms = compute_loss(out, x, spec.loss, beta, spec.anneal.free_bits, perceptual)
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), spec.train.grad_clip or math.inf
                )
                acc = state["acc"]
                if torch.isfinite(terms.loss) and torch.isfinite(grad_norm):
                    optimizer.step()
                    acc["n"] += 1
                    for key in ("loss", "recon", "kl", "perceptual"):
                        acc[key] += float(getattr(terms, key).detach())
                else:
                    state["skipped_batches"] += 1
                    if state["skipped_batches"] > spec.train.skip_bad_batches:
                        raise NumericalFault(
                            _fault_message(step, float(terms.loss.detach()), float(grad_norm), paths)
                        )
                    reporter.message(
                        f"step {step}: non-finite loss or gradient, batch skipped "
                        f"({state['skipped_batches']}/{spec.train.skip_bad_batches})"
                    )
            # A skipped batch still counts as a step, so the data order stays a function of the step and
            # the step still logs, validates and checkpoints on schedule (the last step included).
            state["step"] = step = step + 1

            validate_now = step % spec.train.val_every == 0 or step == total
            log_now = validate_now or step % spec.train.log_every == 0
            checkpoint_now = step % spec.train.checkpoint_every == 0 or step == total
            stop_now = stop_after is not None and step >= stop_after and step < total
            if fast_step is not None and (log_now or checkpoint_now or stop_now or interrupt.requested):
                # The one read-back: metric sums into state["acc"], and a NumericalFault before any row or
                # checkpoint that would come after a fault.
                grad_norm = _settle_fast_step(fast_step, state, spec, reporter, paths)
            if log_now:
                now = time.perf_counter()
                acc = state["acc"]
                n = acc["n"] or math.nan  # nan (null in metrics.jsonl): every step since the last row skipped
                row = {
                    "step": step,
                    "epoch": step / per_epoch,
                    "train/loss": acc["loss"] / n,
                    "train/recon": acc["recon"] / n,
                    "train/kl": acc["kl"] / n,
                    "train/beta": beta,
                    "lr": lr,
                    "train/bpd_elbo": bits_per_dim((acc["recon"] + acc["kl"]) / n, dims),
                    "train/grad_norm": float(grad_norm),
                    "images_per_s": acc["n"] * spec.train.batch_size / max(now - t_log, 1e-9),
                }
                if perceptual is not None:
                    row["train/perceptual"] = acc["perceptual"] / n
                if validate_now:
                    row.update(validate(model, val_set, spec, dev, perceptual, val_batch_size))
                    if row["val/loss"] < state["best_val"]:
                        state["best_val"] = row["val/loss"]
                        state["best_step"] = step
                        checkpoint(paths.best)
                metrics.write(row)
                tracker.log(row, step)
                reporter.update(step, row)
                state["acc"] = _zero_acc()
                if fast_step is not None:
                    fast_step.reset_sums()
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
    except NumericalFault:
        tracker.finish()
        raise
    finally:
        interrupt.restore()
        reporter.finish()

    summary = finish_run(model, spec, variant, seed, paths, dev, tracker, state)
    tracker.finish()
    return RunResult(run_dir, "finished", summary, wall_s=time.perf_counter() - started)


def finish_run(
    model: VAE,
    spec: RunSpec,
    variant: Variant,
    seed: int,
    paths: RunPaths,
    dev: torch.device,
    tracker: Tracker,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Figures, the final evaluation, the summary and the done marker, once training reached its last step.

    Figures show the final (in-memory) model; the evaluation (when eval.at_end) is of checkpoints/best.pt,
    the model the run's headline numbers are about, with the spec's eval settings. It runs before the
    summary and DONE, so a finished run always has its "<split>/..." keys in summary.json, and a run
    whose evaluation failed is resumed (straight to this function) by rerunning.
    """
    # Imported here: vaebench.evaluate imports this module.
    from vaebench.evaluate import evaluate_run

    model.eval()
    test_set = datasets.build_dataset(spec.data, "test")
    images = to_float(next(eval_batches(test_set, 16)), dev)
    figures = standard_figures(model, images, paths.figures, seed=seed)
    tracker.log_images(figures, state["step"])
    if spec.eval.at_end:
        # last.pt only if no validation ever gave a finite loss (then best.pt was never written)
        which = "best" if paths.best.exists() else "last"
        evaluate_run(paths.root, checkpoint=which, device=dev, tracker=tracker, tracker_step=state["step"])
    summary = training_summary(run_document(variant, seed), state, MetricsLog.read(paths.metrics))
    update_summary(paths.summary, summary)
    tracker.summary_update(summary)
    atomic_write_text(paths.done, datetime.now(timezone.utc).isoformat())
    return read_json(paths.summary)


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


def _repair_damaged_metrics(paths: RunPaths, ckpt: dict[str, Any] | None, reporter: Reporter) -> None:
    """Rebuild metrics.jsonl from the checkpoint's record when a line in it is damaged (else do nothing).

    `ckpt` is the checkpoint being resumed from; None for a finished run, whose last.pt is used.
    """
    if not paths.metrics.exists():
        return
    try:
        read_metrics(paths.metrics)
        return
    except DamagedMetrics:
        pass
    if ckpt is None and paths.last.exists():
        try:
            ckpt = load_checkpoint(paths.last)
        except UserError:
            ckpt = None
    record = ckpt.get("metrics") if ckpt is not None else None
    step = ckpt["loop"]["step"] if ckpt is not None else 0
    message = repair_metrics(paths.metrics, record.encode() if isinstance(record, str) else None, step)
    warnings.warn(message, CheckpointWarning, stacklevel=3)
    reporter.message(message)


def _logs_row_at(step: int, spec: RunSpec, total: int) -> bool:
    """Whether the loop writes a metrics row at `step` (the loop's log_now)."""
    return step % spec.train.val_every == 0 or step == total or step % spec.train.log_every == 0


def resume_checkpoint(
    paths: RunPaths, spec: RunSpec, total: int, checkpoints: RunCheckpoints, reporter: Reporter
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
    _repair_damaged_metrics(paths, ckpt, reporter)
    if _logs_row_at(ckpt["loop"]["step"], spec, total):
        ckpt["loop"]["acc"] = _zero_acc()
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


def _zero_acc() -> dict[str, float]:
    return {"n": 0, "loss": 0.0, "recon": 0.0, "kl": 0.0, "perceptual": 0.0}


def _last_checkpoint(paths: RunPaths) -> str:
    return f"{paths.last} (step {_ckpt_step(paths.last)})" if paths.last.exists() else "none yet"


def _settle_fast_step(
    fast_step: Any, state: dict[str, Any], spec: RunSpec, reporter: Reporter, paths: RunPaths
) -> float:
    """Read the fast path's device counters into `state` (the loop's one host sync); the last grad norm.

    Raises NumericalFault when more than train.skip_bad_batches steps were non-finite: the fast path has
    skipped their updates on the device, and this read comes before the row and checkpoint of this step,
    so no metrics row or checkpoint after the first step beyond the allowance is ever written.
    """
    counts = fast_step.read()
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
