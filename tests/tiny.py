"""The tiny real run that the trainer tests share: experiments/quickstart.yaml shrunk to about a second.

Test modules import it as `tiny` (pytest's default import mode puts tests/ on sys.path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor

from vaebench.config.experiments import Variant, load_experiment, select
from vaebench.config.spec import RunSpec
from vaebench.objectives import TrainingLoss

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
# The quickstart experiment shrunk to 16x16 images, a one-level model and 12 steps (about a second).
TINY: dict[str, Any] = {
    "data.image_size": 16,
    "data.train_size": 64,  # 8 batches of 8: one epoch is 8 steps
    "data.val_size": 16,
    "data.test_size": 16,
    "model.stem_channels": 4,
    "model.channels": [8],
    "model.latent_dim": 4,
    "train.steps": 12,
    "train.batch_size": 8,
    "train.log_every": 2,
    "train.val_every": 4,
    "train.checkpoint_every": 4,
    "train.val_batches": 1,
    "eval.at_end": False,
    "tracking.mode": "disabled",
}


def tiny_variant(**overrides: Any) -> Variant:
    """The quickstart's isotropic variant with TINY and `overrides` (dotted keys, '__' for '.') applied."""
    extra = {k.replace("__", "."): v for k, v in overrides.items()}
    return select(load_experiment(QUICKSTART, {**TINY, **extra}), ["isotropic"])[0]


def set_args(overrides: dict[str, Any]) -> list[str]:
    """--set key=value for each override, values written as YAML literals ([8], false)."""
    args = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        args += ["--set", f"{key}={text}"]
    return args


def loss_for(spec: RunSpec) -> TrainingLoss:
    """The run's objective, as the trainer builds it (no VGG: the tiny spec has no perceptual term)."""
    return TrainingLoss(spec.loss, dataset_size=spec.data.train_size, free_bits=spec.anneal.free_bits)


Fault = Callable[[dict[str, Tensor], Any], dict[str, Tensor]]


def on_training_calls(monkeypatch: pytest.MonkeyPatch, calls: set[int], fault: Fault) -> list[int]:
    """Replace the loss terms of the given training calls of the objective (1-based) by fault(terms, model).

    Both training paths and validation call `TrainingLoss`; validation runs under no_grad and is not
    counted. Returns the running count of training calls.
    """
    real = TrainingLoss.__call__
    count = [0]

    def wrapped(self: TrainingLoss, model: Any, x: Tensor, weight: Any) -> dict[str, Tensor]:
        terms = real(self, model, x, weight)
        if not torch.is_grad_enabled():
            return terms
        count[0] += 1
        return fault(terms, model) if count[0] in calls else terms

    monkeypatch.setattr(TrainingLoss, "__call__", wrapped)
    return count


def nan_loss(terms: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
    return terms | {"loss": terms["loss"] * math.nan}


def inf_gradient(terms: dict[str, Tensor], model: Any) -> dict[str, Tensor]:
    """A finite loss whose gradient is infinite: d sqrt(u)/du at u = 0."""
    s = next(model.parameters()).sum()
    return terms | {"loss": terms["loss"] + torch.sqrt(s - s.detach())}
