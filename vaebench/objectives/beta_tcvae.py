"""beta-TCVAE (Chen et al. 2018): the KL term split into index-code MI, total correlation and
dimension-wise KL, with the total correlation weighted apart.

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + TC(q(z)) + sum_d KL(q(z_d) || p(z_d))
    loss = -log p(x|z) + w_t * (alpha * MI + beta * TC + gamma * dwKL)

The aggregate posterior q(z) = (1/N) sum_n q(z|x_n), N the train split's size, is estimated from the
batch, for a sample z_i of image i in a batch of M, by one of the paper's two estimators (`estimator`):

- mws, minibatch-weighted sampling (the paper's eq. 9, the default):
  log q(z_i) ~ logsumexp_j log q(z_i|x_j) - log(N M). Biased: log q(z) and each log q(z_d) are
  underestimated by between log M (posteriors that do not overlap) and log N (posteriors that overlap
  broadly), so MI reads high, TC high by up to (L - 1) log N and dimension-wise KL low (it can be
  negative). The gradients do not see the constant; the values are not estimates of the terms.
- mss, minibatch-stratified sampling (the paper's appendix C.2): the same logsumexp with importance
  weights, 1/N for the sample's own image, (N - M + 1) / (N (M - 1)) for one other image of the batch
  and 1/(M - 1) for the rest (`log_importance_weight_matrix`): log q(z) is then nearly unbiased (only the
  log of an unbiased estimate), and so are the three terms.

The same per dimension gives the marginals q(z_id). All three terms are in nats per image, batch means;
with either estimator their sum is exactly the batch's sampled KL, log q(z|x) - log p(z), whatever N
(log q(z) and log prod q(z_d) cancel in the sum). The weights, not the terms' sizes, are what
beta-TCVAE compares.
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
    estimator: Literal["mws", "mss"] = Field(
        "mws",
        description="How q(z) is estimated from the batch: mws, minibatch-weighted sampling (the paper's "
        "eq. 9; its terms are biased by about log N each); mss, minibatch-stratified sampling (appendix C.2; "
        "nearly unbiased terms).",
    )


def log_importance_weight_matrix(batch_size: int, dataset_size: int) -> Tensor:
    """(M, M) log importance weights of minibatch-stratified sampling: row i weighs q(z_i|x_j) over j.

    Row i: 1/N at j = i (z_i's own image), (N - M + 1) / (N (M - 1)) at j = i + 1 (mod M) and 1/(M - 1)
    elsewhere; each row's weights sum to 1. These are the official implementation's weights
    (rtqichen/beta-tcvae, `_log_importance_weight_matrix`) placed as it intends: its strides put 1/N
    in column 0 and the stratified weight in column 1 of every row instead (its open pull request #1).
    A batch of one has only its own image: weight 1/N.
    """
    n, m = dataset_size, batch_size
    if m == 1:
        return torch.full((1, 1), -math.log(n))
    others = m - 1
    weights = torch.full((m, m), 1.0 / others, dtype=torch.float64)
    rows = torch.arange(m)
    weights[rows, (rows + 1) % m] = (n - others) / (n * others)
    weights[rows, rows] = 1.0 / n
    return weights.log().float()


def tc_decomposition(
    z: Tensor, mu: Tensor, logvar: Tensor, dataset_size: int, estimator: str = "mws"
) -> dict[str, Tensor]:
    """Estimates of MI, TC and dimension-wise KL, nats per image (batch means), by mws or mss.

    z, mu, logvar: (M, L), z_i a sample of q(z|x_i). log q(z_i|x_j) for every pair is (M, M, L).
    """
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    m = z.shape[0]
    pairs = gaussian_log_density(
        z[:, None, :], mu[None, :, :], logvar[None, :, :]
    )  # (M, M, L): z_i under q(.|x_j)
    log_q_z_given_x = pairs.diagonal(dim1=0, dim2=1).sum(dim=0)  # (M,): log q(z_i|x_i)
    if estimator == "mss":
        log_w = log_importance_weight_matrix(m, dataset_size).to(z.device)  # (M, M)
        log_q_z = torch.logsumexp(pairs.sum(dim=2) + log_w, dim=1)  # (M,)
        log_prod_q_zd = torch.logsumexp(pairs + log_w[:, :, None], dim=1).sum(dim=1)  # (M,)
    elif estimator == "mws":
        log_nm = math.log(dataset_size * m)
        log_q_z = torch.logsumexp(pairs.sum(dim=2), dim=1) - log_nm  # (M,)
        log_prod_q_zd = (torch.logsumexp(pairs, dim=1) - log_nm).sum(dim=1)  # (M,)
    else:
        raise ValueError(f"unknown estimator {estimator!r}: mws or mss")
    log_p_z = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=1)  # (M,)
    return {
        "mi": (log_q_z_given_x - log_q_z).mean(),
        "tc": (log_q_z - log_prod_q_zd).mean(),
        "dwkl": (log_prod_q_zd - log_p_z).mean(),
    }


def beta_tcvae_terms(spec: BetaTCVAESpec, batch: Batch) -> dict[str, Tensor]:
    out = batch.out
    recon = batch.recon(spec.likelihood)
    parts = tc_decomposition(out.z, out.mu, out.logvar, batch.dataset_size, spec.estimator)
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
