"""Variance-predicting Gaussian decoder: p(x|z) = N(mean(z), diag sigma^2(z))."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from vaebench.core.sections import Float, Section
from vaebench.model.decoders import DecoderHead, gaussian_log_prob, register


class VarianceDecoderSpec(Section):
    """p(x|z) = N(mean(z), diag(sigma^2(z))): the decoder predicts a per-pixel log-variance."""

    kind: Literal["variance"] = "variance"
    logvar_min: Float = Field(-10.0, description="Lower bound of the predicted log-variance.")
    logvar_max: Float = Field(10.0, description="Upper bound of the predicted log-variance.")
    bound: Literal["soft", "hard"] = Field(
        "soft", description="soft: min + (max - min) * sigmoid(raw), keeps gradients; hard: clamp."
    )

    @model_validator(mode="after")
    def _ordered(self) -> VarianceDecoderSpec:
        if self.logvar_min >= self.logvar_max:
            raise ValueError(f"logvar_min ({self.logvar_min}) must be below logvar_max ({self.logvar_max})")
        return self


class VarianceHead(nn.Module):
    """p(x|z) = N(mean, diag sigma^2(z)): the decoder's 3 extra channels are a per-pixel log-variance.

    The log-variance is bounded to [logvar_min, logvar_max]: 'soft' squashes with a sigmoid (gradients
    everywhere), 'hard' clamps (zero gradient outside the bounds). An unbounded variance decoder can
    drive sigma -> 0 on a few pixels and the likelihood -> infinity.
    """

    extra_channels = 3

    def __init__(self, spec: VarianceDecoderSpec) -> None:
        super().__init__()
        self.logvar_min = spec.logvar_min
        self.logvar_max = spec.logvar_max
        self.soft = spec.bound == "soft"

    def forward(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        # raw: (B, 6, H, W) = mean logits (3) and unbounded log-variances (3)
        mean_logits, raw_logvar = raw.chunk(2, dim=1)
        if self.soft:
            logvar = self.logvar_min + (self.logvar_max - self.logvar_min) * torch.sigmoid(raw_logvar)
        else:
            logvar = raw_logvar.clamp(self.logvar_min, self.logvar_max)
        return torch.sigmoid(mean_logits), logvar / 2  # (B, 3, H, W) each; ln sigma = logvar / 2

    def log_prob(self, x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str) -> Tensor:
        return gaussian_log_prob(x, mean, log_scale, likelihood)  # (B,) nats per image


register(
    DecoderHead(
        "variance", VarianceDecoderSpec, VarianceHead, summary="Gaussian with a per-pixel predicted variance"
    )
)
