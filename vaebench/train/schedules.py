"""Learning rate, training length and what the loop does after a step, as pure functions of the step
(nanoGPT's `get_lr`)."""

from __future__ import annotations

import math

from vaebench.config.spec import OptimSpec, RunSpec, TrainSpec
from vaebench.data.batches import steps_per_epoch


def total_steps(train: TrainSpec, train_size: int) -> int:
    """Optimizer steps of a run: `train.steps`, or `train.epochs` full passes with drop_last batches."""
    if train.steps is not None:
        return train.steps
    assert train.epochs is not None
    return max(1, math.ceil(train.epochs * steps_per_epoch(train_size, train.batch_size)))


def lr_at(step: int, optim: OptimSpec, total: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    decay_steps = max(1, total - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / decay_steps)
    return optim.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduled(step: int, spec: RunSpec, total: int) -> tuple[bool, bool, bool]:
    """(validate, log, checkpoint) after `step` steps: the loop's schedule, also used when resuming."""
    validate_now = step % spec.train.val_every == 0 or step == total
    log_now = validate_now or step % spec.train.log_every == 0
    checkpoint_now = step % spec.train.checkpoint_every == 0 or step == total
    return validate_now, log_now, checkpoint_now
