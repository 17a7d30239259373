"""compute_loss: the terms add up, units are nats per image, and it works for every decoder variant."""

from __future__ import annotations

import math

import pytest
import torch

from vaebench.likelihoods import discretized_gaussian_log_prob, gaussian_kl
from vaebench.losses import compute_loss
from vaebench.perceptual import VGGPerceptual
from vaebench.spec import LossSpec, ModelSpec, SigmaVAEDecoderSpec, VarianceDecoderSpec
from vaebench.vae import VAEOutput, build_model


def fake_output(seed: int = 0) -> tuple[VAEOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=g).float() / 255
    mean = torch.rand(4, 3, 16, 16, generator=g)
    mu, logvar = torch.randn(4, 6, generator=g), 0.5 * torch.randn(4, 6, generator=g)
    log_scale = torch.full((1, 1, 1, 1), math.log(0.1))
    return VAEOutput(mean, log_scale, mu, logvar, mu), x


def test_loss_is_recon_plus_beta_kl_without_free_bits_or_perceptual() -> None:
    out, x = fake_output()
    terms = compute_loss(out, x, LossSpec(), beta=0.3, free_bits=0.0, perceptual=None)
    recon = -discretized_gaussian_log_prob(x, out.mean, out.log_scale).mean()
    kl = gaussian_kl(out.mu, out.logvar).mean()
    assert torch.allclose(terms.recon, recon)
    assert torch.allclose(terms.kl, kl) and torch.equal(terms.kl_penalised, terms.kl)
    assert torch.allclose(terms.loss, recon + 0.3 * kl)
    assert terms.perceptual.item() == 0.0
    assert all(t.shape == () for t in terms)


def test_recon_is_in_nats_per_image() -> None:
    # Every pixel exactly at the mean with sigma = 1/255: each bin holds Phi(0.5) - Phi(-0.5) = 0.3829.
    x = torch.randint(1, 255, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 255
    out = VAEOutput(x, torch.full((1, 1, 1, 1), math.log(1 / 255)), torch.zeros(2, 5), torch.zeros(2, 5), x)
    terms = compute_loss(out, x, LossSpec(), beta=1.0, free_bits=0.0, perceptual=None)
    per_pixel = -math.log(math.erf(0.5 / math.sqrt(2)))
    assert terms.recon.item() == pytest.approx(3 * 4 * 4 * per_pixel, rel=1e-5)
    assert terms.kl.item() == 0.0


def test_continuous_likelihood_is_selected_by_the_spec() -> None:
    out, x = fake_output()
    discrete = compute_loss(out, x, LossSpec(likelihood="discretized"), 1.0, 0.0, None).recon
    continuous = compute_loss(out, x, LossSpec(likelihood="continuous"), 1.0, 0.0, None).recon
    assert not torch.allclose(discrete, continuous)
    assert continuous.item() == pytest.approx(discrete.item(), rel=0.05)  # sigma = 0.1 >> 1/255


def test_free_bits_change_the_penalty_but_not_the_reported_kl() -> None:
    out, x = fake_output()
    plain = compute_loss(out, x, LossSpec(), beta=1.0, free_bits=0.0, perceptual=None)
    freed = compute_loss(out, x, LossSpec(), beta=1.0, free_bits=5.0, perceptual=None)
    assert torch.equal(freed.kl, plain.kl)
    assert freed.kl_penalised > plain.kl_penalised  # some dims have batch-mean KL below 5 nats
    assert torch.allclose(freed.loss, freed.recon + freed.kl_penalised)


def test_perceptual_term_is_weighted_into_the_loss() -> None:
    torch.manual_seed(0)
    vgg = VGGPerceptual(["relu1_2"], weights="random")
    out, x = fake_output()
    spec = LossSpec(perceptual_weight=0.5, perceptual_layers=["relu1_2"], vgg_weights="random")
    terms = compute_loss(out, x, spec, beta=2.0, free_bits=0.0, perceptual=vgg)
    assert terms.perceptual > 0
    assert torch.allclose(terms.perceptual, vgg(out.mean, x).mean())
    assert torch.allclose(terms.loss, terms.recon + 2.0 * terms.kl + 0.5 * terms.perceptual)


def test_perceptual_weight_without_a_vgg_is_an_error() -> None:
    out, x = fake_output()
    with pytest.raises(ValueError, match="no VGGPerceptual"):
        compute_loss(out, x, LossSpec(perceptual_weight=0.1), 1.0, 0.0, None)


@pytest.mark.parametrize(
    "decoder",
    [None, VarianceDecoderSpec(), VarianceDecoderSpec(bound="hard"), SigmaVAEDecoderSpec()],
    ids=["isotropic", "variance-soft", "variance-hard", "sigma_vae"],
)
def test_one_loss_trains_every_decoder_variant(decoder: object) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(stem_channels=8, channels=[16, 32], latent_dim=8, blocks_per_level=0)
    if decoder is not None:
        spec = spec.model_copy(update={"decoder": decoder})
    model = build_model(spec, 32)
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float() / 255
    terms = compute_loss(model(x), x, LossSpec(), beta=1.0, free_bits=0.1, perceptual=None)
    assert all(torch.isfinite(t) for t in terms)
    terms.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
