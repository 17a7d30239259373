"""sigma-VAE decoder (Rybkin et al. 2021): one learned sigma for all pixels."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from vaebench.core.sections import Float, Section
from vaebench.model.decoders import DecoderHead, gaussian_log_prob, register


class SigmaVAEDecoderSpec(Section):
    """sigma-VAE (Rybkin et al. 2021): one learned sigma for all pixels, calibrated by the likelihood."""

    kind: Literal["sigma_vae"] = "sigma_vae"
    init_sigma: Float = Field(
        0.1, gt=0, description="Initial value of the learned sigma, [0, 1] pixel units."
    )
    min_log_sigma: Float = Field(-6.0, description="Lower bound of log sigma, for numerical safety.")


class SigmaVAEHead(nn.Module):
    """sigma-VAE (Rybkin et al. 2021): one learned ln sigma shared by all pixels, clamped below.

    The clamp at `min_log_sigma` keeps the likelihood finite if reconstructions become (nearly)
    perfect on a batch; below it the parameter gets no gradient.
    """

    extra_channels = 0

    def __init__(self, spec: SigmaVAEDecoderSpec) -> None:
        super().__init__()
        self.log_sigma = nn.Parameter(torch.tensor(math.log(spec.init_sigma)))
        self.min_log_sigma = spec.min_log_sigma

    def forward(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        # raw: (B, 3, H, W) logits of the mean
        return torch.sigmoid(raw), self.log_sigma.clamp(min=self.min_log_sigma).view(1, 1, 1, 1)

    def log_prob(self, x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str) -> Tensor:
        return gaussian_log_prob(x, mean, log_scale, likelihood)  # (B,) nats per image


register(
    DecoderHead("sigma_vae", SigmaVAEDecoderSpec, SigmaVAEHead, summary="Gaussian with one learned sigma")
)
