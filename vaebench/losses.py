"""The training objective, one function for every decoder variant.

loss = -log p(x|z) + beta_t * KL_free_bits + perceptual_weight * perceptual, averaged over the batch.
The decoder variant only changes (mean, log_scale) in `VAEOutput`, so nothing here knows about it.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from vaebench.annealing import free_bits_kl
from vaebench.likelihoods import gaussian_kl_per_dim, image_log_prob
from vaebench.perceptual import VGGPerceptual
from vaebench.spec import LossSpec
from vaebench.vae import VAEOutput


class LossTerms(NamedTuple):
    """Scalar tensors, batch means; recon, kl, kl_penalised in nats per image; -(recon + kl) is the ELBO."""

    loss: Tensor  # what is minimised: recon + beta * kl_penalised + perceptual_weight * perceptual
    recon: Tensor  # -log p(x|z), nats per image (single-sample estimate)
    kl: Tensor  # KL(q(z|x) || p(z)), nats per image: the ELBO's KL, whatever free bits does
    kl_penalised: Tensor  # the KL after free bits, nats per image (= kl when free_bits = 0)
    perceptual: Tensor  # VGG feature distance (VGG activation units squared); 0 without a VGG


def compute_loss(
    out: VAEOutput,
    x: Tensor,
    loss_spec: LossSpec,
    beta: float,
    free_bits: float,
    perceptual: VGGPerceptual | None,
) -> LossTerms:
    """The loss and its terms for one batch x (B, 3, H, W) in [0, 1] and the model's output on it.

    beta is the annealed KL weight for this step (loss.beta * kl_weight(step, ...)); free_bits is in nats
    per latent dimension (see `free_bits_kl`). The perceptual distance is computed whenever a VGG is
    given (so it can be logged) and weighted by loss_spec.perceptual_weight; build the VGG only when that
    weight is positive to save the compute.
    """
    if perceptual is None and loss_spec.perceptual_weight > 0:
        raise ValueError(
            f"loss.perceptual_weight is {loss_spec.perceptual_weight} but no VGGPerceptual was passed to "
            "compute_loss; build one with VGGPerceptual(loss.perceptual_layers, loss.vgg_weights)"
        )
    recon = -image_log_prob(x, out.mean, out.log_scale, loss_spec.likelihood).mean()
    kl_per_dim = gaussian_kl_per_dim(out.mu, out.logvar)  # (B, L) nats
    kl = kl_per_dim.sum(dim=1).mean()
    kl_penalised = free_bits_kl(kl_per_dim, free_bits).mean()
    if perceptual is None:
        perceptual_term = recon.new_zeros(())
    else:
        perceptual_term = perceptual(out.mean, x).mean()
    loss = recon + beta * kl_penalised + loss_spec.perceptual_weight * perceptual_term
    return LossTerms(loss, recon, kl, kl_penalised, perceptual_term)
