"""beta-TCVAE (Chen et al. 2018): the KL term split into index-code MI, total correlation and
dimension-wise KL, with the total correlation weighted apart.

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + TC(q(z)) + sum_d KL(q(z_d) || p(z_d))
    loss = -log p(x|z) + w_t * (alpha * MI + beta * TC + gamma * dwKL)

The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) is estimated by minibatch-weighted sampling
(the paper's eq. 9): for a sample z_i of image i in a batch of M,
log q(z_i) ~ logsumexp_j log q(z_i|x_j) - log(N M), N the train split's size, and the same per
dimension for the marginals q(z_id). All three terms are in nats per image, batch means; their
sum is exactly the batch's sampled KL, log q(z|x) - log p(z), whatever N. Each term alone is biased
by the sampling: with M << N, log q(z) and each log q(z_d) are underestimated by about log(N / M), so
MI reads high and dimension-wise KL low (it can be negative on a short run). The weights, not the
terms' sizes, are what beta-TCVAE compares.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Float
from vaebench.model.likelihoods import gaussian_kl, gaussian_log_density
from vaebench.objectives import Batch, Objective, ObjectiveSpec, register


class BetaTCVAESpec(ObjectiveSpec):
    """beta-TCVAE: weights of the mutual information, total correlation and dimension-wise KL."""

    kind: Literal["beta_tcvae"] = "beta_tcvae"
    alpha: Float = Field(1.0, ge=0, description="Weight of the index-code mutual information I(x; z).")
    beta: Float = Field(6.0, ge=0, description="Weight of the total correlation (the paper's beta).")
    gamma: Float = Field(1.0, ge=0, description="Weight of the dimension-wise KL to the prior.")


def tc_decomposition(z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int) -> dict[str, Tensor]:
    """Minibatch-weighted estimates of MI, TC and dimension-wise KL, nats per image (batch means).

    z, mu, logvar: (M, L), z_i a sample of q(z|x_i). log q(z_i|x_j) for every pair is (M, M, L).
    """
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    m = z.shape[0]
    pairs = gaussian_log_density(
        z[:, None, :], mu[None, :, :], logvar[None, :, :]
    )  # (M, M, L): z_i under q(.|x_j)
    log_q_z_given_x = pairs.diagonal(dim1=0, dim2=1).sum(dim=0)  # (M,): log q(z_i|x_i)
    log_nm = math.log(dataset_size * m)
    log_q_z = torch.logsumexp(pairs.sum(dim=2), dim=1) - log_nm  # (M,)
    log_prod_q_zd = (torch.logsumexp(pairs, dim=1) - log_nm).sum(dim=1)  # (M,)
    log_p_z = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=1)  # (M,)
    return {
        "mi": (log_q_z_given_x - log_q_z).mean(),
        "tc": (log_q_z - log_prod_q_zd).mean(),
        "dwkl": (log_prod_q_zd - log_p_z).mean(),
    }


def beta_tcvae_terms(spec: BetaTCVAESpec, batch: Batch) -> dict[str, Tensor]:
    out = batch.out
    recon = batch.recon(spec.likelihood)
    parts = tc_decomposition(out.z, out.mu, out.logvar, batch.dataset_size)
    penalty = spec.alpha * parts["mi"] + spec.beta * parts["tc"] + spec.gamma * parts["dwkl"]
    kl = gaussian_kl(out.mu, out.logvar).mean()  # closed form: the ELBO's KL, for bpd_elbo
    return {"loss": recon + batch.weight * penalty, "recon": recon, "kl": kl, **parts}


register(
    Objective(
        "beta_tcvae",
        BetaTCVAESpec,
        beta_tcvae_terms,
        terms=("mi", "tc", "dwkl"),
        summary="beta-TCVAE: KL split into MI, total correlation (weighted by beta) and dim-wise KL",
    )
)
