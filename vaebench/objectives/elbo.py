"""The ELBO with a KL weight (beta-VAE, Higgins et al. 2017) and free bits (Kingma et al. 2016).

loss = -log p(x|z) + beta * w_t * KL_free_bits, w_t the annealing schedule's fraction at step t.
beta = 1 with no annealing and no free bits is the plain negative ELBO.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Float
from vaebench.model.likelihoods import gaussian_kl_per_dim
from vaebench.objectives import Batch, Objective, ObjectiveSpec, register
from vaebench.objectives.annealing import free_bits_kl


class ElboSpec(ObjectiveSpec):
    """-ELBO with a KL weight beta (annealed by `anneal`) and anneal.free_bits."""

    kind: Literal["elbo"] = "elbo"
    beta: Float = Field(1.0, ge=0, description="Final KL weight (the annealing schedule scales it).")


def elbo_terms(spec: ElboSpec, batch: Batch) -> dict[str, Tensor]:
    recon = batch.recon(spec.likelihood)
    kl_per_dim = gaussian_kl_per_dim(batch.out.mu, batch.out.logvar)  # (B, L) nats
    kl = kl_per_dim.sum(dim=1).mean()
    kl_penalised = free_bits_kl(kl_per_dim, batch.free_bits).mean()
    beta = spec.beta * batch.weight
    return {"loss": recon + beta * kl_penalised, "recon": recon, "kl": kl}


register(
    Objective("elbo", ElboSpec, elbo_terms, summary="negative ELBO, KL weight beta (beta-VAE) and free bits")
)
