"""The conv VAE: shapes, the Linear bottleneck, decoder variants, helpers, determinism, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaebench.core.errors import UserError
from vaebench.model.blocks import Downsample, ResidualBottleneck, Upsample, group_count
from vaebench.model.decoders.isotropic import IsotropicDecoderSpec
from vaebench.model.decoders.sigma_vae import SigmaVAEDecoderSpec
from vaebench.model.decoders.variance import VarianceDecoderSpec, VarianceHead
from vaebench.model.likelihoods import gaussian_kl, image_log_prob
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import VAE, build_model

DECODERS = {
    "isotropic": IsotropicDecoderSpec(sigma=0.1),
    "variance": VarianceDecoderSpec(logvar_min=-8.0, logvar_max=2.0),
    "sigma_vae": SigmaVAEDecoderSpec(init_sigma=0.2),
}


def tiny(decoder: str = "isotropic", **changes: object) -> ModelSpec:
    return ModelSpec(stem_channels=8, channels=[16, 32], latent_dim=8, decoder=DECODERS[decoder], **changes)


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


@pytest.fixture(scope="module")
def model() -> VAE:
    torch.manual_seed(0)
    return build_model(tiny(), 32)


# ----------------------------------------------------------------------------- blocks


def test_group_count_is_the_largest_divisor_up_to_max_groups() -> None:
    assert [group_count(c, 32) for c in (64, 48, 8, 96, 7)] == [32, 24, 8, 32, 7]
    assert group_count(7, 4) == 1


def test_resampling_blocks_halve_and_double_the_resolution() -> None:
    x = torch.randn(2, 8, 16, 16)
    assert Downsample(8, 12, max_groups=4)(x).shape == (2, 12, 8, 8)
    assert Upsample(8, 4, max_groups=4)(x).shape == (2, 4, 32, 32)


def test_residual_bottleneck_starts_as_nearly_the_identity() -> None:
    block = ResidualBottleneck(16, layerscale_init=1e-6, max_groups=8)
    x = torch.randn(2, 16, 8, 8)
    assert (block(x) - x).abs().max() < 1e-5
    assert not torch.equal(block(x), x)  # ... but not exactly: the branch is live


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_output_shapes_for_every_decoder_variant(decoder: str) -> None:
    torch.manual_seed(0)
    vae = build_model(tiny(decoder), 32)
    out = vae(images(2))
    assert out.mean.shape == (2, 3, 32, 32)
    assert torch.broadcast_shapes(out.log_scale.shape, out.mean.shape) == (2, 3, 32, 32)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 8)
    assert 0.0 <= out.mean.min() and out.mean.max() <= 1.0
    assert vae.latent_dim == 8


def test_encoder_ends_in_a_linear_on_all_spatial_features_not_global_pooling(model: VAE) -> None:
    # 32x32 images through 2 levels -> 8x8 positions of the last width, 32: 32 * 8 * 8 = 2048 features.
    assert model.encoder.fc_mu.in_features == 32 * 8 * 8
    assert model.encoder.fc_logvar.in_features == 32 * 8 * 8
    assert model.decoder.fc.out_features == 32 * 8 * 8
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())


def test_layerscale_starts_at_the_spec_value() -> None:
    for init in (1e-6, 0.25):
        vae = build_model(tiny(layerscale_init=init, blocks_per_level=2), 32)
        blocks = [m for m in vae.modules() if isinstance(m, ResidualBottleneck)]
        assert len(blocks) == 2 * 2 * 2  # 2 levels x 2 blocks, in the encoder and in the decoder
        assert all(torch.all(b.gamma == init) for b in blocks)


def test_isotropic_log_scale_is_a_constant_buffer() -> None:
    vae = build_model(tiny("isotropic"), 32)
    out = vae(images(2))
    assert out.log_scale.item() == pytest.approx(math.log(0.1))
    assert not any("log_sigma" in name for name, _ in vae.named_parameters())
    assert any("log_sigma" in name for name, _ in vae.named_buffers())


def test_sigma_vae_log_sigma_is_learned_and_clamped_below() -> None:
    vae = build_model(tiny("sigma_vae"), 32)
    head = vae.decoder.head
    assert isinstance(head.log_sigma, nn.Parameter)
    assert vae(images(1)).log_scale.item() == pytest.approx(math.log(0.2))
    with torch.no_grad():
        head.log_sigma.fill_(-20.0)
    assert vae(images(1)).log_scale.item() == pytest.approx(-6.0)  # SigmaVAEDecoderSpec.min_log_sigma


@pytest.mark.parametrize(("bound", "expected"), [("soft", [-8.0, -3.0, 2.0]), ("hard", [-8.0, 0.0, 2.0])])
def test_variance_head_bounds_the_log_variance(bound: str, expected: list[float]) -> None:
    head = VarianceHead(VarianceDecoderSpec(logvar_min=-8.0, logvar_max=2.0, bound=bound))
    raw = torch.zeros(1, 6, 1, 3)
    raw[0, 3:, 0] = torch.tensor([-1000.0, 0.0, 1000.0])  # logvar channels: far below, zero, far above
    mean, log_scale = head(raw)
    assert torch.allclose(mean, torch.full((1, 3, 1, 3), 0.5))
    assert torch.allclose(2 * log_scale[0, 0, 0], torch.tensor(expected))


def test_variance_decoder_log_scale_stays_within_bounds() -> None:
    vae = build_model(tiny("variance"), 32)
    with torch.no_grad():
        vae.decoder.to_pixels.bias[3:] = torch.tensor([-50.0, 0.0, 50.0])  # push the logvar channels around
    out = vae(images(2))
    assert out.log_scale.shape == (2, 3, 32, 32)
    assert out.log_scale.min() >= -4.0 and out.log_scale.max() <= 1.0  # logvar / 2 within [-8, 2] / 2
    assert out.log_scale[:, 0].max() < -3.9 and out.log_scale[:, 2].min() > 0.9


def test_sample_interpolate_reconstruct_shapes(model: VAE) -> None:
    x = images(3)
    assert model.reconstruct(x).shape == (3, 3, 32, 32)
    assert model.sample(5, temperature=0.7).shape == (5, 3, 32, 32)
    assert model.interpolate(x[0], x[1], steps=6).shape == (6, 3, 32, 32)


def test_interpolation_endpoints_are_the_decoded_posterior_means(model: VAE) -> None:
    x = images(2)
    path = model.interpolate(x[0], x[1:2], steps=5)
    with torch.no_grad():
        mu, _ = model.encode(x)
        ends = model.decode(mu)[0]
    assert torch.allclose(path[0], ends[0], atol=1e-6)
    assert torch.allclose(path[-1], ends[1], atol=1e-6)
    assert not torch.allclose(path[2], ends[0], atol=1e-3)


def test_reconstruct_is_the_decoded_posterior_mean_and_ignores_sampling(model: VAE) -> None:
    x = images(2)
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    with torch.no_grad():
        assert torch.allclose(model.reconstruct(x), model.decode(model.encode(x)[0])[0])


def test_sampling_is_deterministic_given_a_generator(model: VAE) -> None:
    def gen(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    assert torch.equal(model.sample(4, generator=gen(1)), model.sample(4, generator=gen(1)))
    assert not torch.allclose(model.sample(4, generator=gen(1)), model.sample(4, generator=gen(2)))
    x = images(2)
    assert torch.equal(model(x, generator=gen(3)).z, model(x, generator=gen(3)).z)
    # temperature scales the latent: T = 0 decodes the prior mean for every sample
    cold = model.sample(3, temperature=0.0, generator=gen(1))
    assert torch.allclose(cold, cold[:1].expand_as(cold))


def test_building_is_deterministic_given_the_global_seed() -> None:
    torch.manual_seed(5)
    a = build_model(tiny(), 32)
    torch.manual_seed(5)
    b = build_model(tiny(), 32)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_gradient_reaches_every_parameter(decoder: str) -> None:
    torch.manual_seed(0)
    vae = build_model(tiny(decoder), 32)
    x = images(2)
    out = vae(x)
    loss = (
        -image_log_prob(x, out.mean, out.log_scale, "discretized").mean()
        + gaussian_kl(out.mu, out.logvar).mean()
    )
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_image_size_must_survive_every_halving() -> None:
    with pytest.raises(UserError, match=r"multiple of 2\*\*2 = 4; got 30"):
        build_model(tiny(), 30)
    with pytest.raises(UserError, match="got 2"):
        build_model(tiny(), 2)
    assert build_model(tiny(), 4).encoder.fc_mu.in_features == 32  # 1x1 at the bottom is fine


def test_encode_rejects_images_of_another_size(model: VAE) -> None:
    with pytest.raises(ValueError, match=r"built for images of shape \(3, 32, 32\)"):
        model.encode(images(1, size=64))


def test_default_spec_is_the_reference_architecture() -> None:
    torch.manual_seed(0)
    vae = build_model(ModelSpec(), 64)
    assert vae.encoder.fc_mu.in_features == 512 * 8 * 8
    # Three 32768 x 256 Linears hold 25.2M parameters; the convolutions add a few million.
    n_params = sum(p.numel() for p in vae.parameters())
    assert 27e6 < n_params < 35e6
    out = vae(images(2, size=64))
    assert out.mean.shape == (2, 3, 64, 64) and out.mu.shape == (2, 256)


def test_decoder_output_is_fp32_under_bf16_autocast(model: VAE) -> None:
    """bf16 spaces values near 1 by 2^-8 (one 8-bit level): the mean must not be rounded to it."""
    x = images(2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.mean.dtype == torch.float32 and out.log_scale.dtype == torch.float32
