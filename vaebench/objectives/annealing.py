"""KL annealing schedules and free bits, as pure functions of the training step.

The trainer uses beta_t = loss.beta * kl_weight(step, anneal, total_steps), so every schedule is a
fraction of `loss.beta` (dimensionless), and penalises `free_bits_kl(...)` (nats per image) with it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Float, Int, Section


class AnnealSpec(Section):
    """KL weight as a pure function of the training step (see `kl_weight` below)."""

    schedule: Literal["constant", "linear", "cosine", "cyclical"] = "linear"
    start: Float = Field(0.0, ge=0, description="Weight (fraction of loss.beta) at step 0.")
    end: Float = Field(1.0, ge=0, description="Weight (fraction of loss.beta) after warm-up.")
    warmup_steps: Int = Field(
        1000, ge=0, description="Steps to go from start to end (linear, cosine; cyclical uses ramp_fraction)."
    )
    cycles: Int = Field(4, ge=1, description="cyclical only: number of cycles over train.steps.")
    ramp_fraction: Float = Field(
        0.5, gt=0, le=1, description="cyclical only: fraction of each cycle spent ramping (Fu et al. 2019)."
    )
    free_bits: Float = Field(
        0.0, ge=0, description="Free bits: KL per latent dim below this (nats) is not penalised."
    )


def kl_weight(step: int, anneal: AnnealSpec, total_steps: int) -> float:
    """The KL weight at optimizer step `step` (0-based), as a fraction of loss.beta.

    - constant: `end` at every step.
    - linear: start -> end linearly over the first `warmup_steps` steps, then `end`.
    - cosine: start -> end along a half cosine, start + (end - start) (1 - cos(pi t)) / 2 with
      t = step / warmup_steps, then `end` (flat at both ends of the warm-up, unlike linear).
    - cyclical (Fu et al. 2019, "Cyclical annealing schedule"): the `total_steps` of training are split
      into `cycles` equal cycles; in each, the weight ramps linearly start -> end over the first
      `ramp_fraction` of the cycle and holds `end` for the rest, then drops back to `start`.
      `warmup_steps` plays no part; after `total_steps` the weight holds at `end`.

    >>> kl_weight(250, AnnealSpec(schedule="linear", start=0.0, end=1.0, warmup_steps=1000), 10_000)
    0.25
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    start, end = anneal.start, anneal.end
    if anneal.schedule == "constant":
        return end
    if anneal.schedule in ("linear", "cosine"):
        if step >= anneal.warmup_steps:
            return end
        t = step / anneal.warmup_steps
        if anneal.schedule == "cosine":
            t = 0.5 * (1.0 - math.cos(math.pi * t))
        return start + (end - start) * t
    if anneal.schedule == "cyclical":
        if total_steps < 1:
            raise ValueError(f"the cyclical schedule needs the number of training steps, got {total_steps}")
        if step >= total_steps:
            return end
        # Position within the current cycle in [0, 1), exactly, in integer arithmetic: a cycle lasts
        # total_steps / cycles steps, which need not be an integer.
        tau = (step * anneal.cycles % total_steps) / total_steps
        return start + (end - start) * min(1.0, tau / anneal.ramp_fraction)
    raise ValueError(f"unknown KL schedule {anneal.schedule!r}")  # unreachable: the spec validates it


def free_bits_kl(kl_per_dim: Tensor, free_bits: float) -> Tensor:
    """The KL that training penalises under free bits, in nats per image: (B, L) -> (B,).

    Variant (Kingma et al. 2016, IAF paper, one group per latent dimension): the minibatch objective
    charges sum_j max(free_bits, mean_over_batch KL_j). A dimension whose batch-mean KL is below
    `free_bits` nats is charged the constant `free_bits` and gets no gradient, so the optimiser has no
    incentive to push it further towards the prior; one above it is charged its KL as usual.
    Per image this is sum_j (KL_bj if mean_b KL_j >= free_bits else free_bits), whose batch mean is
    exactly the objective above. With free_bits = 0 it is the plain KL summed over dimensions.

    The result is a training objective, not a bound: report `gaussian_kl` for the ELBO.
    """
    if free_bits <= 0.0:
        return kl_per_dim.sum(dim=1)
    batch_mean = kl_per_dim.mean(dim=0, keepdim=True)  # (1, L)
    charged = torch.where(batch_mean >= free_bits, kl_per_dim, torch.full_like(kl_per_dim, free_bits))
    return charged.sum(dim=1)  # (B,)
