"""The reference ResNet-style convolutional VAE, built from a `ModelSpec`.

    x (B, 3, S, S) --encoder--> mu, logvar (B, L) --reparameterise--> z (B, L)
    z --decoder--> mean (B, 3, S, S) in [0, 1], log_scale = ln sigma (broadcastable to mean)

The encoder ends in a Flatten + Linear, not global average pooling: pooling would throw away where
things are in the image, which a 64x64 face VAE cannot afford. The decoder mirrors it.

The decoder's observation model p(x|z) is chosen by `spec.decoder.kind` once, at construction, as a
small pixel-scale head (`vaebench.model.decoders`), which also owns the log-likelihood (`VAE.log_prob`);
the rest of the code (objectives, evaluation) only ever sees (mean, log_scale) and that method.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaebench.core.errors import UserError
from vaebench.model.blocks import ConvNormAct, Downsample, ResidualBottleneck, Upsample
from vaebench.model.decoders import build_head
from vaebench.model.spec import ModelSpec


class VAEOutput(NamedTuple):
    """Everything the loss needs from one forward pass."""

    mean: Tensor  # (B, 3, H, W) decoder mean in [0, 1]
    log_scale: Tensor  # ln sigma of p(x|z), broadcastable to mean ((1, 1, 1, 1) or (B, 3, H, W))
    mu: Tensor  # (B, L) posterior mean
    logvar: Tensor  # (B, L) posterior log-variance
    z: Tensor  # (B, L) reparameterised sample from q(z|x)


# ----------------------------------------------------------------------------- encoder and decoder


class Encoder(nn.Module):
    """x (B, 3, S, S) -> mu, logvar (B, L) through len(channels) levels that each halve the resolution."""

    def __init__(self, spec: ModelSpec, image_size: int) -> None:
        super().__init__()
        g = spec.max_groups
        self.stem = ConvNormAct(3, spec.stem_channels, kernel_size=3, max_groups=g)
        levels: list[nn.Module] = []
        width = spec.stem_channels
        for out_width in spec.channels:
            blocks = [
                ResidualBottleneck(out_width, spec.bottleneck_ratio, spec.se_ratio, spec.layerscale_init, g)
                for _ in range(spec.blocks_per_level)
            ]
            levels.append(nn.Sequential(Downsample(width, out_width, g), *blocks))
            width = out_width
        self.levels = nn.Sequential(*levels)
        side = image_size // 2 ** len(spec.channels)
        features = width * side * side
        self.fc_mu = nn.Linear(features, spec.latent_dim)
        self.fc_logvar = nn.Linear(features, spec.latent_dim)
        # Start from the unit posterior variance, logvar = 0, whatever the features: a random initial
        # logvar of +-several would give the KL term a large, arbitrary starting value.
        nn.init.zeros_(self.fc_logvar.weight)
        nn.init.zeros_(self.fc_logvar.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.levels(self.stem(x))  # (B, C_last, S / 2^levels, S / 2^levels)
        h = h.flatten(1)  # (B, C_last * h * w)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, L), (B, L)


class Decoder(nn.Module):
    """z (B, L) -> (mean, log_scale): Linear to C_last x h x w, levels of blocks + Upsample, final conv."""

    def __init__(self, spec: ModelSpec, image_size: int) -> None:
        super().__init__()
        g = spec.max_groups
        self.side = image_size // 2 ** len(spec.channels)
        self.width = spec.channels[-1]
        self.fc = nn.Linear(spec.latent_dim, self.width * self.side * self.side)
        # Widths going back up: C_last -> ... -> C_1 -> stem.
        widths = [*reversed(spec.channels), spec.stem_channels]
        levels: list[nn.Module] = []
        for width, out_width in itertools.pairwise(widths):
            blocks = [
                ResidualBottleneck(width, spec.bottleneck_ratio, spec.se_ratio, spec.layerscale_init, g)
                for _ in range(spec.blocks_per_level)
            ]
            levels.append(nn.Sequential(*blocks, Upsample(width, out_width, g)))
        self.levels = nn.Sequential(*levels)
        self.head = build_head(spec.decoder)
        self.to_pixels = nn.Conv2d(spec.stem_channels, 3 + self.head.extra_channels, 3, padding=1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.fc(z).view(-1, self.width, self.side, self.side)  # (B, C_last, h, w)
        h = self.levels(h)  # (B, stem, S, S)
        # The output conv and the head run in fp32 even under bf16 autocast: bf16 spaces values near 1
        # by 2^-8, about one 8-bit intensity level, which would blur the likelihood of sharp decoders.
        with torch.autocast(device_type=h.device.type, enabled=False):
            raw = self.to_pixels(h.float())  # (B, 3 or 6, S, S)
            return self.head(raw)  # mean (B, 3, S, S), log_scale broadcastable to it


# ----------------------------------------------------------------------------- the VAE


class VAE(nn.Module):
    """Gaussian-latent VAE: prior N(0, I), posterior N(mu, diag exp(logvar)), decoder from the spec."""

    def __init__(self, spec: ModelSpec, image_size: int) -> None:
        super().__init__()
        check_image_size(spec, image_size)
        self.latent_dim = spec.latent_dim
        self.image_size = image_size
        self.encoder = Encoder(spec, image_size)
        self.decoder = Decoder(spec, image_size)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, S, S) in [0, 1] -> posterior (mu, logvar), each (B, L)."""
        if x.shape[-3:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"the model was built for images of shape (3, {self.image_size}, {self.image_size}), "
                f"got a batch of shape {tuple(x.shape)}"
            )
        return self.encoder(x)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, L) -> (mean (B, 3, S, S) in [0, 1], log_scale = ln sigma broadcastable to mean)."""
        return self.decoder(z)

    def log_prob(self, x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str = "discretized") -> Tensor:
        """log p(x|z) of 8-bit images x (B, 3, S, S) in [0, 1] under the decoder's (mean, log_scale), nats
        per image (B,): the head's own likelihood (`vaebench.model.decoders`), so a new observation model
        changes training, validation and evaluation alike."""
        return self.decoder.head.log_prob(x, mean, log_scale, likelihood)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): a sample of q(z|x) differentiable in mu, logvar."""
        eps = _randn(mu.shape, generator, mu.device, mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mu, logvar = self.encode(x)  # (B, L) each
        z = self.reparameterize(mu, logvar, generator)  # (B, L)
        mean, log_scale = self.decode(z)
        return VAEOutput(mean, log_scale, mu, logvar, z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the posterior mean: (B, 3, S, S) in [0, 1] (deterministic)."""
        return self.decode(self.encode(x)[0])[0]

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Decoder means (n, 3, S, S) for z ~ N(0, T^2 I), T = temperature (T < 1: less diverse, cleaner)."""
        param = next(self.parameters())
        z = _randn((n, self.latent_dim), generator, param.device, param.dtype) * temperature
        return self.decode(z)[0]

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int) -> Tensor:
        """Decoder means (steps, 3, S, S) along the segment from the posterior mean of x1 to that of x2.

        x1, x2: single images, (3, S, S) or (1, 3, S, S). The first and last rows are the
        reconstructions of x1 and x2.
        """
        if steps < 2:
            raise ValueError(f"interpolate needs at least 2 steps (the two end points), got {steps}")
        mu1 = self.encode(x1.reshape(1, *x1.shape[-3:]))[0]  # (1, L)
        mu2 = self.encode(x2.reshape(1, *x2.shape[-3:]))[0]  # (1, L)
        alpha = torch.linspace(0.0, 1.0, steps, device=mu1.device, dtype=mu1.dtype)[:, None]  # (steps, 1)
        z = (1 - alpha) * mu1 + alpha * mu2  # (steps, L)
        return self.decode(z)[0]


def _randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Standard normal noise; a generator may live on another device than the model (e.g. a CPU generator)."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def check_image_size(spec: ModelSpec, image_size: int) -> None:
    """Raise a UserError unless `image_size` survives len(spec.channels) halvings exactly."""
    factor = 2 ** len(spec.channels)
    if image_size < factor or image_size % factor != 0:
        raise UserError(
            f"model.channels has {len(spec.channels)} levels, each halving the resolution, so the image "
            f"size must be a positive multiple of 2**{len(spec.channels)} = {factor}; got {image_size}. "
            f"Change data.image_size to a multiple of {factor} or use fewer entries in model.channels."
        )


def build_model(spec: ModelSpec, image_size: int) -> VAE:
    """The VAE described by `spec` for square images of side `image_size` (pixels)."""
    return VAE(spec, image_size)
