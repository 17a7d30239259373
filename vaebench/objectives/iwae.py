"""IWAE training (Burda et al. 2015): maximise the importance-weighted bound with k samples.

    L_k = E log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x),   loss = -L_k

L_1 is the ELBO and L_k rises towards log p(x) with k. During KL annealing the weights are
p(x|z) (p(z) / q(z|x))^w_t, which is L_k at w_t = 1. The first sample is the model's own forward
sample (the one `recon` uses); the other k - 1 are decoded in one batch of (k - 1) B images.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Int
from vaebench.model.likelihoods import gaussian_kl, gaussian_log_density
from vaebench.objectives import Batch, Objective, ObjectiveSpec, register


class IWAESpec(ObjectiveSpec):
    """IWAE: the k-sample importance-weighted bound as the training objective."""

    kind: Literal["iwae"] = "iwae"
    k: Int = Field(5, ge=1, le=1000, description="Importance samples per image (1 is the ELBO).")


def log_weights(
    log_px_given_z: Tensor, z: Tensor, mu: Tensor, logvar: Tensor, weight: Tensor | float
) -> Tensor:
    """log p(x|z) + w (log p(z) - log q(z|x)) per sample: (k, B) from (k, B) and z (k, B, L)."""
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=-1)
    log_qz = gaussian_log_density(z, mu, logvar).sum(dim=-1)
    return log_px_given_z + weight * (log_pz - log_qz)


def iwae_terms(spec: IWAESpec, batch: Batch) -> dict[str, Tensor]:
    x, out, model = batch.x, batch.out, batch.model
    mu, logvar = out.mu.float(), out.logvar.float()  # (B, L)
    log_px = [model.log_prob(x, out.mean, out.log_scale, spec.likelihood)]  # (B,) for the first sample
    zs = [out.z.float()]
    if spec.k > 1:
        eps = torch.randn((spec.k - 1, *mu.shape), device=mu.device, dtype=mu.dtype)
        z_more = mu + torch.exp(0.5 * logvar) * eps  # (k-1, B, L)
        mean, log_scale = batch.decode(z_more.flatten(0, 1).to(out.z.dtype))  # ((k-1) B, 3, H, W)
        x_rep = x.repeat(spec.k - 1, 1, 1, 1)  # sample-major, as z_more.flatten(0, 1)
        log_px.append(model.log_prob(x_rep, mean, log_scale, spec.likelihood).view(spec.k - 1, -1))
        zs.append(z_more)
    log_px_all = torch.cat([log_px[0][None], *log_px[1:]])  # (k, B)
    z_all = torch.cat([zs[0][None], *zs[1:]])  # (k, B, L)
    log_w = log_weights(log_px_all, z_all, mu, logvar, batch.weight)  # (k, B)
    bound = torch.logsumexp(log_w, dim=0) - math.log(spec.k)  # (B,) nats
    return {
        "loss": -bound.mean(),
        "recon": -log_px[0].mean(),
        "kl": gaussian_kl(out.mu, out.logvar).mean(),
        "iw_bound": -bound.mean(),
    }


register(
    Objective(
        "iwae",
        IWAESpec,
        iwae_terms,
        terms=("iw_bound",),
        summary="IWAE: the k-sample importance-weighted bound as the training loss",
    )
)
