"""One training step, two ways: the interface both training paths share, and the plain path.

The trainer's loop (`vaebench.train.loop`) draws a batch, calls `step.step(x_uint8, flip, lr=..., weight=...)`
and, whenever it logs, validates or checkpoints, `step.read()` for the metric sums and the count of
skipped non-finite steps, then `step.reset()` after a row. The plain path (`PlainTrainStep`, here)
reads every value back as it goes, so its `read()` costs nothing and the loop reads it every step
(`deferred = False`), stopping at a fault at once; the fast path (`vaebench.train.fastpath`) keeps
everything on the device until `read()` (`deferred = True`). Both sum whatever terms the objective
returns (`vaebench.objectives.TrainingLoss.terms`), without knowing their names.

A `TrainPath` makes the batches and the step of one path; the runner picks one
(`vaebench.launch.runner.train_path`), so this module and the trainer need no import of the fast path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaebench.config.spec import RunSpec
from vaebench.core.device import autocast_dtype
from vaebench.data.batches import flip_mask, to_float, train_batches
from vaebench.model.vae import VAE
from vaebench.objectives import TrainingLoss
from vaebench.train.state import LoopState, zero_sums

Say = Callable[[str], None]


class StepCounts(NamedTuple):
    """What a step counted since the last read (and in total), as Python numbers."""

    sums: dict[str, float]  # n (finite steps) and each loss term summed over them: the loop's state.acc
    skipped: int  # non-finite steps so far in the run (their updates skipped)
    new_skipped: int  # of which since the last read
    first_new_skipped: int | None  # the first of those (0-based step index)
    fault_step: int | None  # the first step beyond train.skip_bad_batches, if any
    fault_loss: float  # its loss (nats per image) and gradient norm
    fault_grad_norm: float
    grad_norm: float  # of the last step


class Batches(Protocol):
    def next(self) -> tuple[Tensor, Tensor | None]:
        """This step's uint8 batch (B, 3, H, W) and flip mask (B,) (None without data.flip)."""
        ...


class TrainStep(Protocol):
    deferred: bool  # True: counts are only known at read() (the loop reads when it needs them)

    def step(self, x_uint8: Tensor, flip: Tensor | None, *, lr: float, weight: float) -> None: ...
    def read(self) -> StepCounts: ...
    def reset(self) -> None: ...


@dataclass(frozen=True)
class TrainPath:
    """How a run's steps run: where its batches come from, which step, the optimizer and validation batch.

    batches(dataset, spec, seed, start_step, device, say) -> Batches;
    step(model, optimizer, spec, device, loss, state=LoopState) -> TrainStep (its counters start from state);
    validation_batch_size(spec, device) -> images per validation forward pass (None: train.batch_size).
    """

    name: str
    fused_optimizer: bool | None  # build_optimizer's `fused` (None: fused on CUDA only)
    batches: Callable[[Dataset, RunSpec, int, int, torch.device, Say], Batches]
    step: Callable[..., TrainStep]
    validation_batch_size: Callable[[RunSpec, torch.device], int | None] = lambda spec, device: None


def amp_context(dtype: torch.dtype | None, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts for the model's forward pass (nothing when dtype is None)."""
    if dtype is None:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def training_loss(
    spec: RunSpec, dataset_size: int, device: torch.device, perceptual: Any = None
) -> TrainingLoss:
    """The run's objective as both paths and validation call it: free bits, the VGG and autocast included.

    dataset_size: images in the train split; perceptual: the VGGPerceptual when loss.perceptual_weight > 0.
    """
    return TrainingLoss(
        spec.loss, dataset_size=dataset_size, free_bits=spec.anneal.free_bits, perceptual=perceptual,
        amp=amp_context(autocast_dtype(spec.train.precision, device), device),
    )  # fmt: skip


class HostBatches:
    """The plain path's batches: `train_batches` (a DataLoader for JPEGs) and `flip_mask`, step by step."""

    def __init__(self, dataset: Dataset, spec: RunSpec, seed: int, start_step: int) -> None:
        self._batches = train_batches(dataset, spec.train.batch_size, seed, start_step, spec.data.num_workers)
        self.seed, self.step, self.flip = seed, start_step, spec.data.flip

    def next(self) -> tuple[Tensor, Tensor | None]:
        x = next(self._batches)
        flip = flip_mask(len(x), self.seed, self.step) if self.flip else None
        self.step += 1
        return x, flip


class PlainTrainStep:
    """One optimizer step in eager mode, its numbers read back at once (every step syncs the device).

    Flips, uint8 -> float in [0, 1], forward under autocast (train.precision), the objective, backward,
    clipping to train.grad_clip, and the update unless the loss or the gradient norm is non-finite.
    """

    deferred = False

    def __init__(
        self,
        model: VAE,
        optimizer: torch.optim.Optimizer,
        spec: RunSpec,
        device: torch.device,
        loss: TrainingLoss,
        *,
        state: LoopState,
    ) -> None:
        self.model, self.optimizer, self.device, self.loss = model, optimizer, device, loss
        self.max_norm = spec.train.grad_clip or math.inf
        self.allowed = spec.train.skip_bad_batches
        self.sums = zero_sums(loss.terms) | {
            k: v for k, v in state.acc.items() if k == "n" or k in loss.terms
        }
        self.skipped, self.index = state.skipped_batches, state.step
        self._new: list[int] = []
        self._fault: tuple[int, float, float] | None = None
        self.grad_norm = math.nan

    def step(self, x_uint8: Tensor, flip: Tensor | None, *, lr: float, weight: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if flip is not None:
            x_uint8 = torch.where(flip[:, None, None, None], x_uint8.flip(-1), x_uint8)
        x = to_float(x_uint8, self.device)  # (B, 3, H, W) in [0, 1]
        terms = self.loss(self.model, x, weight)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.grad_norm = float(grad_norm)
        if torch.isfinite(terms["loss"]) and math.isfinite(self.grad_norm):
            self.optimizer.step()
            self.sums["n"] += 1
            for key in self.loss.terms:
                self.sums[key] += float(terms[key].detach())
        else:
            self.skipped += 1
            self._new.append(self.index)
            if self.skipped > self.allowed and self._fault is None:
                self._fault = (self.index, float(terms["loss"].detach()), self.grad_norm)
        self.index += 1

    def read(self) -> StepCounts:
        new, self._new = self._new, []
        fault = self._fault
        return StepCounts(
            sums=dict(self.sums),
            skipped=self.skipped,
            new_skipped=len(new),
            first_new_skipped=new[0] if new else None,
            fault_step=None if fault is None else fault[0],
            fault_loss=math.nan if fault is None else fault[1],
            fault_grad_norm=math.nan if fault is None else fault[2],
            grad_norm=self.grad_norm,
        )

    def reset(self) -> None:
        """Zero the metric sums (after the trainer wrote a metrics row); the skip counts go on."""
        self.sums = zero_sums(self.loss.terms)


PLAIN = TrainPath(
    "plain",  # eager steps, batches gathered on the host: the default on CPU; bit-identical when resumed
    fused_optimizer=None,
    batches=lambda dataset, spec, seed, start_step, device, say: HostBatches(dataset, spec, seed, start_step),
    step=PlainTrainStep,
)
