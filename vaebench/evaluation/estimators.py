"""Model-agnostic estimators of a VAE's likelihood and of how much its latent code is used.

Everything here is a pure function of tensors and two callables, so it can be checked against a
model whose answers are known in closed form (the linear-Gaussian VAE in tests/test_estimators.py):

    encode(x) -> (mu, logvar)        # (B, L), (B, L): q(z|x) = N(mu, diag(exp(logvar)))
    log_px_given_z(x, z) -> (B,)     # log p(x|z) in nats per image, x (B, ...) and z (B, L)

For the vaebench VAE: ``encode=model.encode`` and
``log_px_given_z=lambda x, z: image_log_prob(x, *model.decode(z), likelihood)``.

Units: every likelihood, ELBO, KL and mutual information here is in **nats per image** (summed over
pixels or latent dimensions, one value per image); `vaebench.model.likelihoods.bits_per_dim(-nats, D)` gives
bits/dim.
The prior is p(z) = N(0, I_L) and beta = 1 throughout: these are evaluation quantities, not losses.

Sampling is reproducible and independent of batching choices: the i-th latent sample of every image
is always the i-th (B, L) slab drawn from the generator (see `_standard_normal_slabs`), so the
importance-weighted bound gives the same samples whatever its chunk size, and K=10 uses the first
10 of the samples K=1000 would use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from vaebench.model.likelihoods import gaussian_kl_per_dim

Encode = Callable[[Tensor], tuple[Tensor, Tensor]]
LogPxGivenZ = Callable[[Tensor, Tensor], Tensor]

_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- sampling helpers


class RowBlockGenerators:
    """Noise for stacked row blocks: rows[0] rows from generators[0], the next rows[1] from generators[1]...

    Why: evaluation draws each batch's noise from a generator of its own, so its numbers do not depend
    on how many batches there are. Passing one of these wherever a generator goes lets several batches
    share one forward pass while every image gets exactly the noise it gets when its batch is evaluated
    alone. `get_state`/`set_state` save and restore all the generators, like a torch.Generator's.
    """

    def __init__(self, generators: Sequence[torch.Generator], rows: Sequence[int]) -> None:
        if len(generators) != len(rows) or not generators:
            raise ValueError(f"need one row count per generator, got {len(generators)} and {len(rows)}")
        self.generators, self.rows = list(generators), list(rows)
        self.device = self.generators[0].device

    def randn(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """Standard normals of `shape` (sum(rows), ...), each block of rows from its own generator."""
        if shape[0] != sum(self.rows):
            raise ValueError(f"noise for {shape[0]} rows asked of generators for {sum(self.rows)} rows")
        return torch.cat(
            [
                torch.randn((r, *shape[1:]), generator=g, device=g.device, dtype=dtype)
                for g, r in zip(self.generators, self.rows, strict=True)
            ]
        )

    def get_state(self) -> list[Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[Tensor]) -> None:
        for g, state in zip(self.generators, states, strict=True):
            g.set_state(state)


Noise = torch.Generator | RowBlockGenerators | None


def _standard_normal_slabs(num: int, like: Tensor, generator: Noise) -> Tensor:
    """(num, *like.shape) standard normals, drawn as `num` separate slabs of like's shape, in order.

    Why slabs: torch's CPU normal sampler fills large tensors in blocks of 16 values, so one draw of
    (K, B, L) is *not* the concatenation of draws of (k1, B, L) and (k2, B, L). Drawing each sample's
    slab by itself makes sample i the same whatever chunking surrounds it. The draws happen on the
    generator's device (so a CPU generator can drive a CUDA model, with the same numbers as on CPU)
    and are then moved to like's device and dtype; from the CPU to a GPU through pinned memory,
    without waiting, so that the next draws overlap the GPU's work on these.
    """
    if isinstance(generator, RowBlockGenerators):
        slabs = [generator.randn(like.shape, like.dtype) for _ in range(num)]
    else:
        device = generator.device if generator is not None else like.device
        slabs = [
            torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype) for _ in range(num)
        ]
    stacked = torch.stack(slabs)
    if stacked.device.type == "cpu" and like.device.type == "cuda":
        return stacked.pin_memory().to(like.device, non_blocking=True)
    return stacked.to(like.device)


def _log_px_given_z_samples(x: Tensor, z: Tensor, log_px_given_z: LogPxGivenZ) -> Tensor:
    """log p(x|z_s) for S samples per image in one call: x (B, ...), z (S, B, L) -> (S, B) nats."""
    num, batch = z.shape[0], z.shape[1]
    # (S*B, ...): sample-major, so row s*B + b is image b with its s-th latent sample
    x_rep = x.unsqueeze(0).expand(num, *x.shape).reshape(num * batch, *x.shape[1:])
    out = log_px_given_z(x_rep, z.reshape(num * batch, z.shape[-1]))
    if out.shape != (num * batch,):
        raise ValueError(
            f"log_px_given_z returned shape {tuple(out.shape)} for {num * batch} images; it must return "
            "one log-probability per image, shape (B,), summed over all pixels and channels"
        )
    return out.reshape(num, batch)


def _check_posterior(mu: Tensor, logvar: Tensor, where: str) -> None:
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise ValueError(
            f"{where}: expected mu and logvar of the same shape (B, L); got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )


# ----------------------------------------------------------------------------- ELBO and the IW bound


class ElboTerms(NamedTuple):
    """The evidence lower bound and its two terms, one value per image, in nats (beta = 1)."""

    elbo: Tensor  # (B,) recon_log_prob - kl
    recon_log_prob: Tensor  # (B,) E_q(z|x)[log p(x|z)], Monte Carlo mean over n_samples samples
    kl: Tensor  # (B,) KL(q(z|x) || p(z)), closed form
    kl_per_dim: Tensor  # (B, L) the same KL per latent dimension (sums to kl)


def elbo(
    x: Tensor,
    encode: Encode,
    log_px_given_z: LogPxGivenZ,
    generator: Noise = None,
    n_samples: int = 1,
) -> ElboTerms:
    """ELBO = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)), per image, in nats (Kingma & Welling 2014).

    The reconstruction term is a Monte Carlo mean over `n_samples` reparameterised samples (all
    decoded in one call); the KL is exact (closed form for diagonal Gaussians), which has lower
    variance than the single-sample log p(z) - log q(z|x) used by `iw_log_likelihood`. The two agree
    in expectation: `iw_log_likelihood(..., num_samples=1)` is an unbiased estimate of this ELBO.
    Gradients flow (usable as a loss); wrap in `torch.no_grad()` to evaluate.

    Returns `ElboTerms` of (B,) tensors (and kl_per_dim (B, L)) in nats per image.
    """
    if n_samples < 1:
        raise ValueError(f"elbo: n_samples must be at least 1, got {n_samples}")
    mu, logvar = encode(x)  # (B, L), (B, L)
    _check_posterior(mu, logvar, "elbo: encode(x)")
    eps = _standard_normal_slabs(n_samples, mu, generator)  # (S, B, L)
    z = mu + torch.exp(0.5 * logvar) * eps  # (S, B, L)
    recon = _log_px_given_z_samples(x, z, log_px_given_z).mean(dim=0)  # (B,)
    kl_per_dim = gaussian_kl_per_dim(mu, logvar)  # (B, L)
    kl = kl_per_dim.sum(dim=-1)  # (B,)
    return ElboTerms(elbo=recon - kl, recon_log_prob=recon, kl=kl, kl_per_dim=kl_per_dim)


@torch.no_grad()
def iw_log_likelihood(
    x: Tensor,
    encode: Encode,
    log_px_given_z: LogPxGivenZ,
    num_samples: int,
    chunk_size: int,
    generator: Noise = None,
) -> Tensor:
    """Importance-weighted lower bound on log p(x), per image, in nats (Burda et al. 2015, eq. 8).

        L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x) i.i.d.

    L_1 is a single-sample ELBO, E[L_K] increases with K and tends to log p(x) as K -> infinity
    (their Theorem 1); for large K the gap is about Var[w / p(x)] / (2K). The samples are processed
    in chunks of `chunk_size` (each chunk decoded in one call of log_px_given_z on x repeated
    chunk_size times, so memory is chunk_size * B decoder passes) and the log-sum-exp over samples
    is streamed across chunks in float64. log p(z) and log q(z|x) are full diagonal-Gaussian log
    densities, also in float64.

    Deterministic given the generator; sample k is the same for every chunk_size (and the first K'
    samples of a K-sample call are those of a K'-sample call with the same generator state).

    Returns a (B,) float64 tensor of nats per image; `vaebench.model.likelihoods.bits_per_dim(-L_K, D)` is
    bits/dim.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(
            f"iw_log_likelihood: num_samples and chunk_size must be at least 1, got {num_samples} and "
            f"{chunk_size}"
        )
    mu, logvar = encode(x)  # (B, L), (B, L)
    _check_posterior(mu, logvar, "iw_log_likelihood: encode(x)")
    std = torch.exp(0.5 * logvar)
    logvar64 = logvar.double()
    log_sum_w = torch.full((mu.shape[0],), -math.inf, dtype=torch.float64, device=mu.device)  # (B,)
    for start in range(0, num_samples, chunk_size):
        num = min(chunk_size, num_samples - start)
        eps = _standard_normal_slabs(num, mu, generator)  # (c, B, L)
        z = mu + std * eps  # (c, B, L), in the model's dtype for the decoder
        log_px_z = _log_px_given_z_samples(x, z, log_px_given_z).double()  # (c, B)
        log_pz = -0.5 * (z.double().pow(2) + _LOG_2PI).sum(dim=-1)  # (c, B)
        # (z - mu)^2 / sigma^2 = eps^2 exactly, so use eps rather than re-deriving it from z
        log_qz = -0.5 * (eps.double().pow(2) + logvar64 + _LOG_2PI).sum(dim=-1)  # (c, B)
        log_w = log_px_z + log_pz - log_qz  # (c, B)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, dim=0))
    return log_sum_w - math.log(num_samples)


# ----------------------------------------------------------------------------- latent usage


@torch.no_grad()
def active_units(posterior_means: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Active latent units (Burda et al. 2015, sec. 5.2): dim d is active if Var_x E_q[z_d|x] > threshold.

    `posterior_means` is (N, L): the posterior mean mu(x) of N images (a whole split). The variance
    over images is the *unbiased* sample variance (divides by N - 1), as in the reference
    implementation of He et al. 2019 (`calc_au`), so counts match the numbers most papers report;
    with N in the thousands it differs from the population variance by a factor N / (N - 1), which
    only matters for dims within 0.1% of the threshold. The comparison is strict (>), as Burda et al.
    define it (He et al. use >=; a tie has probability zero). Variances are in squared latent units.

    Returns (count, variances (L,) float64).
    """
    if posterior_means.ndim != 2 or posterior_means.shape[0] < 2:
        raise ValueError(
            f"active_units: posterior_means must have shape (N, L) with N >= 2 images, got "
            f"{tuple(posterior_means.shape)}"
        )
    variances = posterior_means.double().var(dim=0, correction=1)  # (L,)
    return int((variances > threshold).sum()), variances


@torch.no_grad()
def mutual_information(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> float:
    """Minibatch estimate of I(x; z) under q(x, z) = p_data(x) q(z|x), in nats (He et al. 2019).

        I = E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)],
        log q(z) ~= logsumexp_n log q(z|x_n) - log N      (aggregate posterior of the minibatch)

    with one sample z_n ~ q(z|x_n) per image. `mu`, `logvar` are (N, L) posteriors of one minibatch.
    Unlike He et al.'s `calc_mi`, which uses the closed-form E_q[log q(z|x)] (negative entropy), the
    first term here is log q(z_n|x_n) at the same sample z_n used for log q(z_n): same expectation,
    lower variance, and two exact properties: an encoder that ignores x gives exactly 0, and

        I_hat <= log N  always,

    because the sum inside log q(z_n) contains q(z_n|x_n) itself. So the estimate saturates at log N
    when the true I(x; z) is larger (a near-deterministic encoder), and it is biased for small N
    (the log of a minibatch average underestimates log q(z), and the own term inflates it): compare
    only numbers computed with the same N, and keep N well above exp(I). Returns a Python float.
    """
    _check_posterior(mu, logvar, "mutual_information")
    num, dim = mu.shape
    if num < 2:
        raise ValueError(f"mutual_information: needs a minibatch of at least 2 posteriors, got {num}")
    mu64, logvar64 = mu.double(), logvar.double()
    eps = _standard_normal_slabs(1, mu, generator)[0].double()  # (N, L)
    z = mu64 + torch.exp(0.5 * logvar64) * eps  # (N, L)
    inv_var = torch.exp(-logvar64)  # (N, L)
    log_norm = -0.5 * (logvar64 + _LOG_2PI).sum(dim=-1)  # (N,)
    # log q(z_n|x_n), with the same arithmetic as the matrix below, so that its diagonal term equals it
    log_q_own = -0.5 * ((z - mu64).pow(2) * inv_var).sum(dim=-1) + log_norm  # (N,)
    rows = max(1, 2**24 // (num * dim))  # bound the (rows, N, L) intermediate to 16M float64
    log_q_agg = []
    for start in range(0, num, rows):
        dev2 = ((z[start : start + rows, None, :] - mu64[None]).pow(2) * inv_var[None]).sum(dim=-1)  # (r, N)
        log_q_agg.append(torch.logsumexp(-0.5 * dev2 + log_norm[None], dim=1) - math.log(num))  # (r,)
    return float((log_q_own - torch.cat(log_q_agg)).mean())


class MutualInformation(NamedTuple):
    """A split's mutual-information estimate and the minibatch size it depends on (record both)."""

    nats: float  # mean of the per-minibatch estimates, nats
    batch_size: int  # N of each minibatch; the estimate is bounded by log(batch_size)
    num_batches: int  # full minibatches used; the last batch_size > remainder images are dropped

    @property
    def upper_bound_nats(self) -> float:
        """log(batch_size): no estimate with this minibatch size can exceed it."""
        return math.log(self.batch_size)


@torch.no_grad()
def mutual_information_batched(
    mu: Tensor, logvar: Tensor, batch_size: int, generator: torch.Generator | None = None
) -> MutualInformation:
    """`mutual_information` averaged over consecutive minibatches of `batch_size` posteriors of a split.

    `mu`, `logvar` are (N, L) for the whole split, in a fixed order. Every minibatch has exactly
    `batch_size` rows, because the estimator's bias and its log N ceiling depend on N: a final
    partial minibatch (N mod batch_size images) is dropped rather than mixed in. He et al. 2019
    average their per-batch estimates the same way. Returns the mean in nats with the batch size.
    """
    _check_posterior(mu, logvar, "mutual_information_batched")
    if batch_size < 2:
        raise ValueError(f"mutual_information_batched: batch_size must be at least 2, got {batch_size}")
    num_batches = mu.shape[0] // batch_size
    if num_batches == 0:
        raise ValueError(
            f"mutual_information_batched: {mu.shape[0]} posteriors are fewer than one minibatch of "
            f"{batch_size}; evaluate more images or lower the MI batch size (eval.mi_batch_size)"
        )
    estimates = [
        mutual_information(
            mu[i * batch_size : (i + 1) * batch_size],
            logvar[i * batch_size : (i + 1) * batch_size],
            generator,
        )
        for i in range(num_batches)
    ]
    return MutualInformation(
        nats=sum(estimates) / num_batches, batch_size=batch_size, num_batches=num_batches
    )


def kl_statistics(kl_per_dim_mean: Tensor, threshold: float = 0.01) -> dict[str, float | int]:
    """Summary of how the KL is spread over latent dims, from the split-mean KL per dim (L,) in nats.

    - kl_total: sum over dims, nats per image (the mean KL term of the ELBO).
    - collapsed_dims: dims whose mean KL is below `threshold` nats (strictly), i.e. whose posterior
      is (almost) the prior for every image: posterior collapse of that unit.
    - kl_top5_frac: share of kl_total carried by the 5 largest dims (all dims when L < 5, so 1.0);
      near 1 means the code lives in a handful of dims. NaN when kl_total is 0 (no KL to share).
    """
    if kl_per_dim_mean.ndim != 1 or kl_per_dim_mean.numel() == 0:
        raise ValueError(
            "kl_statistics: expected the mean KL per latent dim, shape (L,), got "
            f"{tuple(kl_per_dim_mean.shape)}"
        )
    kl = kl_per_dim_mean.detach().double()
    total = float(kl.sum())
    top = float(torch.topk(kl, k=min(5, kl.numel())).values.sum())
    return {
        "kl_total": total,
        "collapsed_dims": int((kl < threshold).sum()),
        "kl_top5_frac": top / total if total > 0 else math.nan,
    }
