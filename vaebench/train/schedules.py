"""Learning rate and training length as pure functions of the step (nanoGPT's `get_lr`)."""

from __future__ import annotations

import math

from vaebench.config.spec import OptimSpec, TrainSpec
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
