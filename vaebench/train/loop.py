"""Training one run: a plain function of (resolved spec, seed, run folder) -> result.

`train` is wiring: open the run folder (skip a finished run, start afresh, or resume:
`vaebench.train.resume`), build the run (`build_run`: data, objective, model, optimizer), restore the
newest checkpoint (`resume_run`), then `train_loop`, which follows nanoGPT's order: learning rate and KL
weight for this step -> the step (forward, backward, finite check, clip, update) -> maybe read its
numbers, log, validate and checkpoint -> stop. Everything a later stage needs (metrics, checkpoints) is
written to the run folder; W&B only mirrors it. The end of a run (figures, the final evaluation,
summary.json, DONE) is the runner's (`vaebench.launch.runner.finish_run`): a run that trained to its
last step here comes back as "trained".

Resources have one owner each: `train` opens the metrics log and closes it on every path; the W&B
tracker belongs to whoever runs the run (`vaebench.launch.runner.run_one` holds it open around training
and the final evaluation), and `train` only starts W&B (`Tracker.open`) once it is about to train.

One step has one interface (`vaebench.train.steps.TrainStep`: step / read / reset) and two implementations:
the plain path (`vaebench.train.steps`, the default on CPU) and the fast path (`vaebench.train.fastpath`,
CUDA),
which keeps its numbers on the device until they are read. The caller picks the path (`path=`), so
this module imports neither the fast path nor evaluation.

Resumption is exact: the batch order is a pure function of (seed, epoch), the checkpoint holds the
model, optimizer, RNG states, the metric accumulators and the step (`vaebench.train.state.LoopState`),
so a run stopped at any point and resumed ends with the same parameters (bit-identical on CPU) as one
never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch.utils.data import Dataset

from vaebench import data as datasets
from vaebench.config.experiments import RunLabels
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
from vaebench.runs.checkpoint import RunCheckpoints, load_checkpoint, rng_state, set_rng_state, upgrade
from vaebench.runs.document import run_document
from vaebench.runs.environment import environment_info
from vaebench.runs.io import atomic_write_json, atomic_write_text, read_json
from vaebench.runs.metrics_log import MetricsLog
from vaebench.runs.paths import RunPaths
from vaebench.runs.tracking import Tracker
from vaebench.train.resume import open_run_folder, resume_checkpoint
from vaebench.train.schedules import lr_at, scheduled, total_steps
from vaebench.train.signals import DeferredInterrupt, StopToRequeue
from vaebench.train.state import LoopState, zero_sums
from vaebench.train.steps import PLAIN, Batches, TrainPath, TrainStep, training_loss

__all__ = ["Device", "Reporter", "SilentReporter", "train"]  # Device, Reporter: for callers' hints


class NumericalFault(UserError):
    """A non-finite loss or gradient: the run stops, and the last good checkpoint is named."""


@dataclass
class RunResult:
    """What became of one run. "trained": at its last step, its end (`finish_run`) still to do."""

    run_dir: Path
    status: Literal["finished", "trained", "skipped", "stopped", "failed"]
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0


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


# ----------------------------------------------------------------------------- the run


@dataclass
class TrainingRun:
    """What one run's loop works with, built once (`build_run`) before its first step."""

    spec: RunSpec
    paths: RunPaths
    document: dict[str, Any]  # spec.yaml's content, carried by every checkpoint
    device: torch.device
    model: VAE
    optimizer: torch.optim.Optimizer
    loss: TrainingLoss
    train_set: Dataset
    val_set: Dataset
    total: int  # optimizer steps of the run
    per_epoch: int  # steps per pass over the train split
    val_batch_size: int | None  # images per validation forward pass (None: train.batch_size)
    checkpoints: RunCheckpoints

    def save(self, where: Path, state: LoopState) -> None:
        """Checkpoint the run as it is after `state.step` steps to `where` (last.pt or best.pt)."""
        self.checkpoints.save(
            where,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                "loop": state.to_dict(),
                "spec": self.document,
                # every row so far (str: weights_only loading refuses b""), to rebuild a damaged metrics.jsonl
                "metrics": self.paths.metrics.read_bytes().decode("utf-8", errors="replace"),
            },
        )

    def train_row(self, state: LoopState, lr: float, weight: float, grad_norm: float, seconds: float) -> dict:
        """The metrics row after `state.step` steps: means of the sums since the last row, and rates.

        weight: this step's annealing fraction (train/kl_weight; train/beta is the objective's beta
        times it); seconds: since the last row (images_per_s).
        """
        acc = state.acc
        n = acc["n"] or math.nan  # nan (null in metrics.jsonl): every step since the last row skipped
        beta = getattr(self.spec.loss, "beta", 1.0)  # the annealed beta, for objectives with one
        return {
            "step": state.step,
            "epoch": state.step / self.per_epoch,
            **{f"train/{k}": acc.get(k, 0.0) / n for k in self.loss.terms},
            "train/beta": beta * weight,
            "train/kl_weight": weight,
            "lr": lr,
            "train/bpd_elbo": bits_per_dim((acc["recon"] + acc["kl"]) / n, 3 * self.spec.data.image_size**2),
            "train/grad_norm": float(grad_norm),
            "images_per_s": acc["n"] * self.spec.train.batch_size / max(seconds, 1e-9),
        }


def build_run(
    spec: RunSpec, seed: int, paths: RunPaths, document: dict[str, Any], device: Device, path: TrainPath
) -> TrainingRun:
    """The run's data, objective, model (initialised from `seed`) and optimizer; spec.yaml and env.json
    written. Fails before any work on what a person must fix: data, weights, device."""
    datasets.check_data(spec.data, run_dir=paths.root)
    dev = resolve_device(device)
    perceptual = (
        VGGPerceptual(spec.loss.perceptual_layers, spec.loss.vgg_weights).to(dev)
        if spec.loss.perceptual_weight > 0
        else None
    )
    train_set = datasets.build_dataset(spec.data, "train")
    val_set = datasets.build_dataset(spec.data, "val")
    loss = training_loss(spec, len(train_set), dev, perceptual)

    torch.manual_seed(seed)
    model = build_model(spec.model, spec.data.image_size).to(dev)
    optimizer = build_optimizer(model, spec, dev, fused=path.fused_optimizer)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.checkpoints.mkdir(exist_ok=True)
    atomic_write_text(paths.spec, yaml.safe_dump(document, sort_keys=False))
    atomic_write_json(paths.env, environment_info(dev))
    return TrainingRun(
        spec, paths, document, dev, model, optimizer, loss, train_set, val_set,
        total=total_steps(spec.train, len(train_set)),
        per_epoch=steps_per_epoch(len(train_set), spec.train.batch_size),
        val_batch_size=path.validation_batch_size(spec, dev),
        checkpoints=RunCheckpoints(paths, spec.train.keep_checkpoints),
    )  # fmt: skip


def resume_run(run: TrainingRun, reporter: Reporter) -> LoopState:
    """The loop state to start from: step 0, or the newest intact checkpoint's (`resume_checkpoint`),
    whose model, optimizer and RNG states are restored, its format upgraded (`runs.checkpoint.upgrade`)."""
    ckpt = resume_checkpoint(
        run.paths, run.spec, run.total, run.checkpoints, reporter.message, run.loss.terms
    )
    if ckpt is None:
        return LoopState.fresh(run.loss.terms)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    reporter.message(f"resuming {run.paths.root} from step {ckpt['loop']['step']}")
    return LoopState.from_dict(upgrade(ckpt, run.spec, reporter.message)["loop"])


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
    tracker: Tracker | None = None,
) -> RunResult:
    """Train (or resume, or skip when finished) one run of `spec` with `seed` in `run_dir`, to its last step.

    Returns "trained" at the last step (the caller finishes the run: `vaebench.launch.runner.finish_run`),
    "skipped" when the folder's DONE marker says it is finished, "stopped" after `stop_after` steps
    (a checkpoint is written; used to test resumption). labels: the experiment, variant and axes the
    run belongs to (spec.yaml). path: how steps run (`vaebench.train.steps.PLAIN`, or
    `vaebench.train.fastpath.FAST`); the runner picks the fast path on CUDA. tracker: the run's W&B
    tracker, owned (and finished) by the caller; started here once training begins. Without one, W&B is
    not used.
    """
    reporter = reporter or SilentReporter()
    labels = labels or RunLabels()
    tracker = tracker if tracker is not None else Tracker(run_dir)  # no tracking spec: never starts W&B
    paths = RunPaths(run_dir)
    if open_run_folder(paths, spec, force=force, say=reporter.message) == "skip":
        return RunResult(run_dir, "skipped", read_json(paths.summary) if paths.summary.exists() else {})

    run = build_run(spec, seed, paths, run_document(labels, spec, seed), device, path)
    state = resume_run(run, reporter)
    with MetricsLog(paths.metrics) as metrics:
        metrics.truncate_after(state.step)
        tracker.open()
        batches = path.batches(run.train_set, spec, seed, state.step, run.device, reporter.message)
        train_step = path.step(run.model, run.optimizer, spec, run.device, run.loss, state=state)
        reporter.start(f"{labels.variant}/seed{seed}", run.total, state.step)
        started = time.perf_counter()
        try:
            with DeferredInterrupt() as interrupt:
                status = train_loop(
                    run, state, train_step, batches, metrics, tracker, reporter, interrupt, stop_after
                )
        except KeyboardInterrupt as err:
            # No message: it came mid-step (a second Ctrl-C), nothing was saved, the last checkpoint stands.
            # A StopToRequeue is said by whoever turns it into the exit status (`vaebench run`).
            if not isinstance(err, StopToRequeue):
                last_good = _last_checkpoint(paths)
                reporter.message(
                    str(err) or f"interrupted mid-step, nothing saved; the last checkpoint is {last_good}"
                )
            raise
        finally:
            reporter.finish()
    wall_s = time.perf_counter() - started
    if status == "stopped":
        return RunResult(
            run_dir, "stopped", error=f"stopped after {state.step} steps (stop_after)", wall_s=wall_s
        )
    return RunResult(run_dir, "trained", wall_s=wall_s)


def train_loop(
    run: TrainingRun,
    state: LoopState,
    train_step: TrainStep,
    batches: Batches,
    metrics: MetricsLog,
    tracker: Tracker,
    reporter: Reporter,
    interrupt: DeferredInterrupt,
    stop_after: int | None = None,
) -> Literal["trained", "stopped"]:
    """Train from `state.step` to the run's last step: "trained"; or "stopped" after `stop_after` steps.

    Each step: its learning rate and KL weight -> the step -> when scheduled (`scheduled`), read the
    step's numbers, write a metrics row (validating on the validation steps, best.pt when val/loss
    improves), checkpoint last.pt -> stop. `state` is updated in place. A signal held by `interrupt`
    ends the step, checkpoints it, and raises KeyboardInterrupt (SIGINT) or StopToRequeue (SIGUSR2, SIGTERM).
    """
    spec, paths, total = run.spec, run.paths, run.total
    t_log = time.perf_counter()
    grad_norm = math.nan
    while state.step < total:
        step = state.step
        lr = lr_at(step, spec.optim, total)
        weight = kl_weight(step, spec.anneal, total)  # the annealing fraction, in [0, 1] mostly

        # forward, backward, finite check, clip, update and metric sums (queued on the device on the
        # fast path). A skipped non-finite batch still counts as a step, so the data order stays a
        # function of the step and the run logs, validates and checkpoints on schedule.
        train_step.step(*batches.next(), lr=lr, weight=weight)
        state.step = step = step + 1

        validate_now, log_now, checkpoint_now = scheduled(step, spec, total)
        stop_now = stop_after is not None and step >= stop_after and step < total
        if not train_step.deferred or log_now or checkpoint_now or stop_now or interrupt.requested:
            # The fast path's one read-back: metric sums into state.acc, and a NumericalFault before
            # any row or checkpoint that would come after a fault.
            grad_norm = settle(train_step, state, spec, reporter, paths)
        if log_now:
            row = run.train_row(state, lr, weight, grad_norm, seconds=time.perf_counter() - t_log)
            if validate_now:
                row.update(validate(run.model, run.val_set, spec, run.device, run.loss, run.val_batch_size))
                if row["val/loss"] < state.best_val:
                    state.best_val, state.best_step = row["val/loss"], step
                    run.save(paths.best, state)
            metrics.write(row)
            tracker.log(row, step)
            reporter.update(step, row)
            state.acc = zero_sums(run.loss.terms)
            train_step.reset()
            t_log = time.perf_counter()
        else:
            reporter.update(step, {})
        if checkpoint_now or stop_now or interrupt.requested:
            run.save(paths.last, state)
        if stop_now:
            return "stopped"
        if interrupt.requested:  # Ctrl-C, SIGUSR2 or SIGTERM during this step, which is now complete
            raise interrupt.stop(step, paths.root)
    return "trained"


def _last_checkpoint(paths: RunPaths) -> str:
    return f"{paths.last} (step {_ckpt_step(paths.last)})" if paths.last.exists() else "none yet"


def settle(
    train_step: TrainStep, state: LoopState, spec: RunSpec, reporter: Reporter, paths: RunPaths
) -> float:
    """Read the step's counters into `state` (the fast path's one host sync); the last gradient norm.

    Raises NumericalFault when more than train.skip_bad_batches steps were non-finite: their updates
    were skipped, and this read comes before the row and checkpoint of this step, so no metrics row or
    checkpoint after the first step beyond the allowance is ever written.
    """
    counts = train_step.read()
    state.acc = counts.sums
    state.skipped_batches = counts.skipped
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
