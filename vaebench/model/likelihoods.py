"""Log-likelihoods and KL terms of a Gaussian VAE on 8-bit images, as pure functions.

Units: every `*_log_prob` returns nats per image, shape (B,), summed over the D = C * H * W pixel
values; KL terms are nats (per latent dimension or summed per image). `bits_per_dim` turns nats
per image into bits per dimension, the number papers report.

Images are floats in [0, 1] on the k/255 grid (k = 0..255). The exact probability of an 8-bit image
under a Gaussian decoder integrates the density over 256 bins of width 1/255 centred on k/255, with
the first and last bins extended to -inf and +inf so that the 256 probabilities sum to one
(PixelCNN++, Salimans et al. 2017, did this for logistic mixtures; here it is a Gaussian).

Reference number: a "plain MSE" decoder (sigma = 1 in [0, 1] pixel units) costs, even when it
reconstructs perfectly, -log2(1/255 * N(0; 0, 1)) = log2(255 sqrt(2 pi)) = 9.32 bits/dim, because
it spreads its mass over a range 4 times wider than the data on each side.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

BIN_WIDTH = 1.0 / 255.0  # width of one 8-bit intensity level in [0, 1] pixel units
_HALF_BIN = 0.5 * BIN_WIDTH
_LOG_BIN_WIDTH = math.log(BIN_WIDTH)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Below this bin width (in standard deviations) the bin mass is taken as pdf(centre) * width: its
# relative error, ~width^2 (z^2 - 1) / 24 ~ 4e-8 (z^2 - 1), is then below the rounding error of a
# difference of two nearly equal CDFs, which underflows to 0 for still narrower bins.
_MIDPOINT_BELOW = 1e-3


# ----------------------------------------------------------------------------- KL


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each latent dimension, in nats: (B, L) -> (B, L).

    Closed form: (exp(logvar) + mu^2 - 1 - logvar) / 2. Needed per dimension by free bits and by the
    active-units / collapse diagnostics.
    """
    mu, logvar = _at_least_fp32(mu), _at_least_fp32(logvar)
    return 0.5 * (torch.exp(logvar) + mu.square() - 1.0 - logvar)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)) elementwise, in nats (broadcasting): latent densities for the objectives
    that need log q(z|x) or log p(z) of a sample (IWAE's weights, beta-TCVAE's aggregate posterior)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar) - _HALF_LOG_2PI


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, in nats per image: (B, L) -> (B,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


# ----------------------------------------------------------------------------- p(x|z)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Exact log-probability of 8-bit images under N(mean, sigma^2) integrated over each bin, nats per image.

    x: (B, C, H, W) in [0, 1] on the k/255 grid; mean: same shape; log_scale = ln sigma, in [0, 1]
    pixel units, broadcastable to x. Returns (B,) = sum over pixels of log P(bin of x).

    Numerics (all in standardised units u = (value - mean) / sigma):
    - bin 0 (x = 0) has mass Phi(u+) and bin 255 (x = 1) has 1 - Phi(u-) = Phi(-u-): both via log_ndtr,
      which stays accurate far into the tails where Phi itself underflows;
    - interior bins have mass Phi(u+) - Phi(u-), computed as log Phi(b) + log1mexp(log Phi(a) - log Phi(b))
      after reflecting the bin into the lower tail (a < b, a + b <= 0), where log_ndtr keeps its relative
      precision; so a pixel thousands of sigma from the mean still gets a finite, accurate log-probability
      (a plain log(Phi(u+) - Phi(u-)) is log 0 = -inf beyond ~9 sigma in fp32);
    - bins narrower than 1e-3 sigma (sigma > ~4) use log(pdf(centre) * width), accurate to
      ~4e-8 (z^2 - 1) there, where the difference of CDFs would lose its digits or underflow to 0.
    """
    x, mean, log_scale = _at_least_fp32(x), _at_least_fp32(mean), _at_least_fp32(log_scale)
    inv_sigma = torch.exp(-log_scale)
    centred = x - mean  # (B, C, H, W)
    u_plus = (centred + _HALF_BIN) * inv_sigma  # upper edge of x's bin, standardised
    u_minus = (centred - _HALF_BIN) * inv_sigma  # lower edge
    u_mid = centred * inv_sigma
    width = BIN_WIDTH * inv_sigma  # bin width in standard deviations, broadcastable

    log_cdf_plus = torch.special.log_ndtr(u_plus)  # bin 0: (-inf, 0.5/255]
    log_sf_minus = torch.special.log_ndtr(-u_minus)  # bin 255: [1 - 0.5/255, inf)

    # Interior bins, reflected into the lower tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b).
    reflect = u_mid > 0
    a = torch.where(reflect, -u_plus, u_minus)
    b = torch.where(reflect, -u_minus, u_plus)
    log_phi_b = torch.special.log_ndtr(b)
    use_midpoint = (width < _MIDPOINT_BELOW).expand_as(u_mid)
    # In the branch where(...) discards, feed a harmless value: a -inf there would give NaN gradients.
    d = torch.where(use_midpoint, -1.0, torch.special.log_ndtr(a) - log_phi_b).clamp(max=-1e-30)
    log_interior = log_phi_b + _log1mexp(d)
    log_midpoint = -0.5 * u_mid.square() - _HALF_LOG_2PI + torch.log(width)
    log_interior = torch.where(use_midpoint, log_midpoint, log_interior)

    log_p = torch.where(
        x < _HALF_BIN, log_cdf_plus, torch.where(x > 1.0 - _HALF_BIN, log_sf_minus, log_interior)
    )
    return log_p.flatten(1).sum(dim=1)


def continuous_gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Gaussian log-density of x plus D * ln(1/255), in nats per image: (B, C, H, W) -> (B,).

    log N(x; mean, sigma^2) + ln(1/255) per pixel value is the midpoint approximation of the bin
    probability, density at the centre times the bin width, so the number is comparable with
    `discretized_gaussian_log_prob` (and close to it when sigma >> 1/255). It is a proper lower bound
    on the discrete log-likelihood only for data dequantised with uniform noise; on the plain k/255 grid
    it can exceed the exact value: near the mean the density is concave, and for sigma < 1/(255 sqrt(2 pi))
    a pixel at the mean even gets a positive log-"probability".
    """
    x, mean, log_scale = _at_least_fp32(x), _at_least_fp32(mean), _at_least_fp32(log_scale)
    u = (x - mean) * torch.exp(-log_scale)
    log_density = -0.5 * u.square() - log_scale - _HALF_LOG_2PI  # nats per unit of [0, 1] intensity
    return (log_density + _LOG_BIN_WIDTH).flatten(1).sum(dim=1)


_LOG_PROBS = {"discretized": discretized_gaussian_log_prob, "continuous": continuous_gaussian_log_prob}


def image_log_prob(
    x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: Literal["discretized", "continuous"]
) -> Tensor:
    """log p(x|z) in nats per image, (B,), by the likelihood named in `LossSpec.likelihood`."""
    return _LOG_PROBS[likelihood](x, mean, log_scale)


def bits_per_dim(nats_per_image: Tensor | float, num_dims: int) -> Tensor | float:
    """Bits per dimension from a negative log-likelihood (or -ELBO) in nats per image: nats / (D ln 2).

    num_dims is D = C * H * W (12288 for 3 x 64 x 64). Pass the *negative* log-probability.
    """
    return nats_per_image / (num_dims * math.log(2.0))


# ----------------------------------------------------------------------------- helpers


def _at_least_fp32(t: Tensor) -> Tensor:
    """Upcast bf16/fp16 to fp32 (likelihoods of sharp decoders need it); keep fp32 and fp64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(d)) for d < 0, accurate for d near 0 and for d << 0 (Maechler 2012)."""
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))
