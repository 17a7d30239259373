"""Known answers for the KL, the discretized and continuous Gaussian likelihoods and bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from vaebench.model.likelihoods import (
    bits_per_dim,
    continuous_gaussian_log_prob,
    discretized_gaussian_log_prob,
    gaussian_kl,
    gaussian_kl_per_dim,
    gaussian_log_density,
    image_log_prob,
)


def _phi(t: float) -> float:
    """Standard normal CDF by hand: (1 + erf(t / sqrt 2)) / 2, written with erfc to keep the lower tail."""
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def _all_bins(mean: float, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Log-probabilities of the 256 possible values of one pixel, (256,)."""
    x = (torch.arange(256, dtype=dtype) / 255).view(256, 1, 1, 1)
    return discretized_gaussian_log_prob(
        x, torch.full_like(x, mean), torch.full((1, 1, 1, 1), math.log(sigma), dtype=dtype)
    )


# ----------------------------------------------------------------------------- KL


def test_kl_of_the_prior_to_itself_is_zero() -> None:
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert torch.equal(gaussian_kl(mu, logvar), torch.zeros(3))


def test_kl_of_unit_shifted_gaussian_is_half_a_nat_per_dim() -> None:
    kl = gaussian_kl_per_dim(torch.ones(2, 4), torch.zeros(2, 4))
    assert torch.allclose(kl, torch.full((2, 4), 0.5))
    assert torch.allclose(gaussian_kl(torch.ones(2, 4), torch.zeros(2, 4)), torch.full((2,), 2.0))


def test_kl_matches_torch_distributions_and_per_dim_sums_to_total() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p)  # (6, 7)
    assert torch.allclose(gaussian_kl_per_dim(mu, logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl(mu, logvar), gaussian_kl_per_dim(mu, logvar).sum(1))
    assert gaussian_kl(mu, logvar).shape == (6,)


# ----------------------------------------------------------------------------- discretized Gaussian


@pytest.mark.parametrize(
    ("mean", "sigma"),
    [
        (0.5, 0.1),
        (0.3, 1e-4),
        (0.4, math.exp(-10)),
        (0.5, 1.0),
        (0.5, 1e4),
        (1.7, 0.01),
        (-0.5, 0.02),
        (0.0, 0.3),
    ],
)
def test_discretized_bin_probabilities_sum_to_one(mean: float, sigma: float) -> None:
    assert _all_bins(mean, sigma).exp().sum().item() == pytest.approx(1.0, abs=1e-7)
    assert _all_bins(mean, sigma, torch.float32).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 3.0, 5.0, 100.0, 1e4])
def test_every_bin_matches_a_hand_computed_cdf_difference(sigma: float) -> None:
    """Checks each bin, not just the total: edge bins can hide errors in the interior ones."""
    mean = 0.4
    h = 0.5 / 255
    expected = [math.log(_phi((h - mean) / sigma))]
    for k in range(1, 255):
        lo, hi = (k / 255 - h - mean) / sigma, (k / 255 + h - mean) / sigma
        if lo > 0:  # upper tail by symmetry, where double-precision CDFs near 1 would cancel
            lo, hi = -hi, -lo
        expected.append(math.log(_phi(hi) - _phi(lo)))
    expected.append(math.log(_phi(-(1.0 - h - mean) / sigma)))  # 1 - Phi(u) = Phi(-u)
    got = _all_bins(mean, sigma, torch.float32)
    assert torch.allclose(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=2e-4)


def test_discretized_matches_hand_computation_with_both_edge_bins() -> None:
    # Three pixel values: 0 (bin extended to -inf), 100/255 (interior), 1 (bin extended to +inf).
    x = torch.tensor([0.0, 100 / 255, 1.0], dtype=torch.float64).view(1, 1, 1, 3)
    mean = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64).view(1, 1, 1, 3)
    sigma = torch.tensor([0.2, 0.05, 0.3], dtype=torch.float64).view(1, 1, 1, 3)
    h = 0.5 / 255
    p0 = _phi((0.0 + h - 0.1) / 0.2)
    p1 = _phi((100 / 255 + h - 0.4) / 0.05) - _phi((100 / 255 - h - 0.4) / 0.05)
    p2 = 1.0 - _phi((1.0 - h - 0.8) / 0.3)
    expected = math.log(p0) + math.log(p1) + math.log(p2)
    got = discretized_gaussian_log_prob(x, mean, sigma.log())
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    got32 = discretized_gaussian_log_prob(x.float(), mean.float(), sigma.log().float())
    assert got32.item() == pytest.approx(expected, rel=1e-5)


def test_discretized_is_finite_and_accurate_far_in_the_tails() -> None:
    """sigma = e^-10: a pixel 0.5 away sits ~11000 sigma out, where a naive CDF difference is log(0)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    sigma = math.exp(-10)
    mean = torch.tensor([0.1, 0.9]).view(1, 1, 1, 2)
    x = torch.tensor([153 / 255, 102 / 255]).view(1, 1, 1, 2)  # interior bins 11000 sigma away, both sides
    log_scale = torch.full((1, 1, 1, 1), -10.0, requires_grad=True)
    mean.requires_grad_(True)
    got = discretized_gaussian_log_prob(x, mean, log_scale)
    got.sum().backward()
    assert torch.isfinite(got).all()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()

    def exact(xv: float, m: float) -> float:
        # Use the float32 values the function actually sees.
        xv, m = float(torch.tensor(xv)), float(torch.tensor(m))
        lo = (mpmath.mpf(xv) - mpmath.mpf(0.5) / 255 - m) / mpmath.mpf(sigma)
        hi = (mpmath.mpf(xv) + mpmath.mpf(0.5) / 255 - m) / mpmath.mpf(sigma)
        if lo > 0:  # the upper tail, by symmetry: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
            lo, hi = -hi, -lo
        return float(mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo)))

    expected = exact(153 / 255, 0.1) + exact(102 / 255, 0.9)
    assert expected < -1e7  # really far out: about -(11000)^2 / 2 nats per pixel
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_discretized_keeps_gradients_finite_in_every_branch() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 3, 6, 6), generator=g).float() / 255  # includes edges and interiors
    for log_sigma in (-10.0, -3.0, 0.0, 5.0):  # tail, normal, wide and midpoint regimes
        mean = torch.rand(4, 3, 6, 6, generator=g).requires_grad_(True)
        log_scale = torch.full((4, 3, 6, 6), log_sigma, requires_grad=True)
        discretized_gaussian_log_prob(x, mean, log_scale).sum().backward()
        assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


# ----------------------------------------------------------------------------- continuous, bits/dim


def test_continuous_matches_hand_computation() -> None:
    x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2)
    mean = torch.tensor([0.25, 0.5]).view(1, 1, 1, 2)
    sigma = 0.1
    expected = sum(
        -0.5 * ((xv - m) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi) + math.log(1 / 255)
        for xv, m in [(0.2, 0.25), (0.7, 0.5)]
    )
    got = continuous_gaussian_log_prob(x, mean, torch.full((1, 1, 1, 1), math.log(sigma)))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_continuous_approximates_discretized_when_sigma_is_much_wider_than_a_bin() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 255, (3, 3, 8, 8), generator=g).double() / 255  # interior bins only
    mean = 0.2 + 0.6 * torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    log_scale = torch.full((1, 1, 1, 1), math.log(0.2), dtype=torch.float64)
    discrete = discretized_gaussian_log_prob(x, mean, log_scale)
    continuous = continuous_gaussian_log_prob(x, mean, log_scale)
    assert torch.allclose(continuous, discrete, rtol=1e-5)
    # ... but not when sigma is about a bin: then the midpoint rule is visibly off.
    narrow = torch.full((1, 1, 1, 1), math.log(1 / 255), dtype=torch.float64)
    assert (
        continuous_gaussian_log_prob(x, mean, narrow) - discretized_gaussian_log_prob(x, mean, narrow)
    ).abs().min() > 1


def test_image_log_prob_dispatches_on_the_likelihood_name() -> None:
    x = torch.full((2, 3, 4, 4), 0.5)
    mean, log_scale = torch.full_like(x, 0.45), torch.full((1, 1, 1, 1), -2.0)
    assert torch.equal(
        image_log_prob(x, mean, log_scale, "discretized"), discretized_gaussian_log_prob(x, mean, log_scale)
    )
    assert torch.equal(
        image_log_prob(x, mean, log_scale, "continuous"), continuous_gaussian_log_prob(x, mean, log_scale)
    )


def test_bits_per_dim_divides_nats_by_d_ln2() -> None:
    assert bits_per_dim(3 * 12288 * math.log(2), 12288) == pytest.approx(3.0)
    assert torch.allclose(bits_per_dim(torch.tensor([math.log(2) * 10]), 10), torch.tensor([1.0]))


def test_plain_mse_decoder_costs_about_9_3_bits_per_dim_even_on_perfect_reconstructions() -> None:
    """sigma = 1 on [0, 1] data: bin mass ~ pdf(0) / 255, so -log2 of it is log2(255 sqrt(2 pi)) = 9.32."""
    x = torch.randint(1, 255, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 255
    log_scale = torch.zeros(1, 1, 1, 1)
    bpd = bits_per_dim(-discretized_gaussian_log_prob(x, x, log_scale), 3 * 8 * 8)
    exact = -math.log2(_phi(0.5 / 255) - _phi(-0.5 / 255))  # the exact bin mass, by hand
    assert exact == pytest.approx(9.3201, abs=1e-4)
    assert torch.allclose(bpd, torch.full((2,), exact), atol=1e-4)
    # A residual of 0.1 on every pixel adds only 0.1^2 / 2 nats = 0.0072 bits: the cost is the width.
    bpd_off = bits_per_dim(-discretized_gaussian_log_prob(x, x + 0.1, log_scale), 3 * 8 * 8)
    assert bpd_off.mean().item() == pytest.approx(exact + 0.01 / (2 * math.log(2)), abs=1e-4)


def test_gaussian_log_density_is_the_normal_log_pdf() -> None:
    g = torch.Generator().manual_seed(0)
    z, mu = (
        torch.randn(5, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    logvar = torch.randn(5, 3, generator=g, dtype=torch.float64)
    want = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z)
    assert torch.allclose(gaussian_log_density(z, mu, logvar), want, atol=1e-12)
