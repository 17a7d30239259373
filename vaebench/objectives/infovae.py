"""InfoVAE / MMD-VAE (Zhao et al. 2019): the ELBO with the aggregate posterior pulled to the prior
by a maximum mean discrepancy.

    loss = -log p(x|z) + w_t (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD^2(q(z), p(z))

(the paper's eq. 6, negated; alpha = 0, lambda = 1 is the ELBO, alpha = 1 drops the KL term). MMD^2 is
the unbiased estimate between the batch's posterior samples z_i and as many prior samples, with the
inverse multiquadratic kernel C / (C + |a - b|^2), C = 2 L (Tolstikhin et al. 2018), or a Gaussian
kernel exp(-|a - b|^2 / C). The annealing schedule scales the KL term only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Float
from vaebench.model.likelihoods import gaussian_kl
from vaebench.objectives import Batch, Objective, ObjectiveSpec, register


class InfoVAESpec(ObjectiveSpec):
    """InfoVAE with an MMD divergence between q(z) and p(z)."""

    kind: Literal["infovae"] = "infovae"
    alpha: Float = Field(0.0, le=1, description="The paper's alpha: the KL term is weighted by 1 - alpha.")
    mmd_lambda: Float = Field(
        1000.0, ge=0, description="The paper's lambda: MMD^2 is weighted by alpha + lambda - 1."
    )
    kernel: Literal["imq", "rbf"] = Field("imq", description="MMD kernel, scale C = 2 * latent_dim.")


def mmd_squared(a: Tensor, b: Tensor, kernel: str = "imq", scale: float | None = None) -> Tensor:
    """Unbiased MMD^2 between samples a (n, L) and b (m, L) (Gretton et al. 2012, eq. 3), a scalar.

    scale: C of the kernel, default 2 L (the variance of |a - b|^2 / L for unit Gaussians, times L).
    """
    a, b = a.float(), b.float()
    c = 2.0 * a.shape[1] if scale is None else scale

    def k(u: Tensor, v: Tensor) -> Tensor:
        d2 = torch.cdist(u, v).square()
        return c / (c + d2) if kernel == "imq" else torch.exp(-d2 / c)

    n, m = a.shape[0], b.shape[0]
    kaa, kbb = k(a, a), k(b, b)
    within_a = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    within_b = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return within_a + within_b - 2.0 * k(a, b).mean()


def infovae_terms(spec: InfoVAESpec, batch: Batch) -> dict[str, Tensor]:
    out = batch.out
    recon = batch.recon(spec.likelihood)
    kl = gaussian_kl(out.mu, out.logvar).mean()
    z = out.z.float()
    mmd = mmd_squared(z, torch.randn_like(z), spec.kernel)
    loss = recon + batch.weight * (1.0 - spec.alpha) * kl + (spec.alpha + spec.mmd_lambda - 1.0) * mmd
    return {"loss": loss, "recon": recon, "kl": kl, "mmd": mmd}


register(
    Objective(
        "infovae",
        InfoVAESpec,
        infovae_terms,
        terms=("mmd",),
        summary="InfoVAE: ELBO plus an MMD between the aggregate posterior and the prior",
    )
)
