"""Known-answer tests of the estimators, on models whose log p(x), posterior and I(x; z) are exact.

The main model is probabilistic PCA, a linear-Gaussian VAE: z ~ N(0, I_L), x = W z + b + eps,
eps ~ N(0, s^2 I_D). Its marginal p(x) = N(b, W W^T + s^2 I) is exact, and with orthogonal columns
of W (W^T W = diag(|w_j|^2)) its posterior is exactly the diagonal Gaussian

    p(z|x) = N(v * W^T (x - b) / s^2, diag(v)),   v_j = 1 / (1 + |w_j|^2 / s^2),

so an encoder can be exactly right, or wrong by a known amount. One column of W is zero: that latent
dim is ignored by the decoder, its exact posterior is the prior (a collapsed unit, KL exactly 0).
Everything runs in float64 so exact identities hold to 1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

from vaebench.evaluation.estimators import (
    active_units,
    elbo,
    iw_log_likelihood,
    kl_statistics,
    mutual_information,
    mutual_information_batched,
)

F64 = torch.float64


class LinearGaussianVAE:
    """Probabilistic PCA with L=4 latent dims (|w| = 2, 1, 0.5, 0) in D=6, noise s = 0.5."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.s = 0.5
        self.col_norms = torch.tensor([2.0, 1.0, 0.5, 0.0], dtype=F64)
        q, _ = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=F64))  # orthonormal columns
        self.W = torch.cat([q, torch.zeros(6, 1, dtype=F64)], dim=1) * self.col_norms  # (D, L)
        self.b = 0.3 * torch.randn(6, generator=g, dtype=F64)
        self.post_var = 1.0 / (1.0 + self.col_norms**2 / self.s**2)  # (L,) = 1/17, 1/5, 1/2, 1
        self.marginal = MultivariateNormal(self.b, self.W @ self.W.T + self.s**2 * torch.eye(6, dtype=F64))

    def sample_x(self, n: int, seed: int) -> Tensor:
        eps = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)
        return self.b + eps @ self.marginal.scale_tril.T  # (n, D) ~ p(x)

    def log_px(self, x: Tensor) -> Tensor:
        return self.marginal.log_prob(x)  # (B,) exact log p(x), nats

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        return Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(dim=-1)  # (B,)

    def exact_encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = (x - self.b) @ self.W / self.s**2 * self.post_var  # (B, L)
        return mu, self.post_var.log().expand_as(mu)

    def expected_log_px_given_z(self, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """E_{N(mu, diag(exp(logvar)))}[log p(x|z)] exactly: minus trace term sum_j |w_j|^2 var_j / 2s^2."""
        trace = (self.col_norms**2 * logvar.exp()).sum(dim=-1) / (2 * self.s**2)
        return self.log_px_given_z(x, mu) - trace


MODEL = LinearGaussianVAE()
# The wrong encoder: every posterior mean shifted by one posterior std, every variance doubled.
SHIFT, INFLATE = 1.0, 2.0


def wrong_encode(x: Tensor) -> tuple[Tensor, Tensor]:
    mu, logvar = MODEL.exact_encode(x)
    return mu + SHIFT * MODEL.post_var.sqrt(), logvar + math.log(INFLATE)


# The mismatch is the same in every dim in units of the true posterior std, so the gaps are too:
# KL(q || p(z|x)) per dim = (INFLATE + SHIFT^2 - 1 - ln INFLATE) / 2, the same for every x.
WRONG_KL_TO_POSTERIOR = 4 * 0.5 * (INFLATE + SHIFT**2 - 1 - math.log(INFLATE))  # 2.614 nats


def wrong_chi2() -> float:
    """Var_q[w / p(x)] = E_q[(p(z|x)/q(z|x))^2] - 1 for the wrong encoder, in closed form.

    Per dim, with p = N(m, 1) and q = N(m + d, r) (true posterior std as the unit):
    E_q[(p/q)^2] = int p^2/q = sqrt(r) / sqrt(2 pi) * sqrt(pi / (1 - c)) * exp(c d^2 / (1 - c)), c = 1/(2r).
    It sets the large-K gap of the IW bound: log p(x) - E[L_K] ~ chi2 / (2K) (Maddison et al. 2017).
    """
    c = 1.0 / (2 * INFLATE)
    per_dim = (
        math.sqrt(INFLATE / (2 * math.pi)) * math.sqrt(math.pi / (1 - c)) * math.exp(c * SHIFT**2 / (1 - c))
    )
    return per_dim**4 - 1.0  # 5.74


def recording(fn: Callable[[Tensor, Tensor], Tensor], calls: list[tuple[Tensor, Tensor, Tensor]]):
    """Wrap log_px_given_z so each call's (x, z, output) is kept."""

    def wrapped(x: Tensor, z: Tensor) -> Tensor:
        out = fn(x, z)
        calls.append((x.clone(), z.clone(), out.clone()))
        return out

    return wrapped


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- exact posterior: no gap


@pytest.mark.parametrize("num_samples, chunk_size", [(1, 1), (5, 2)])
def test_log_weight_of_exact_posterior_is_exact_loglik_for_every_sample(
    num_samples: int, chunk_size: int
) -> None:
    # p(x|z) p(z) / p(z|x) = p(x) for every z: each importance weight, hence the bound, is exact.
    x = MODEL.sample_x(64, seed=1)
    iw = iw_log_likelihood(x, MODEL.exact_encode, MODEL.log_px_given_z, num_samples, chunk_size, gen(0))
    assert iw.dtype == F64 and iw.shape == (64,)
    torch.testing.assert_close(iw, MODEL.log_px(x), rtol=0, atol=1e-8)


def test_elbo_of_exact_posterior_equals_exact_loglik_in_closed_form() -> None:
    # E_q[log p(x|z)] (closed form) - KL (from elbo) = log p(x): checks the KL term to 1e-8.
    x = MODEL.sample_x(64, seed=2)
    terms = elbo(x, MODEL.exact_encode, MODEL.log_px_given_z, gen(0))
    mu, logvar = MODEL.exact_encode(x)
    torch.testing.assert_close(
        MODEL.expected_log_px_given_z(x, mu, logvar) - terms.kl, MODEL.log_px(x), rtol=0, atol=1e-8
    )
    torch.testing.assert_close(terms.elbo, terms.recon_log_prob - terms.kl, rtol=0, atol=0)
    torch.testing.assert_close(terms.kl, terms.kl_per_dim.sum(dim=-1), rtol=0, atol=1e-12)
    assert (terms.kl_per_dim[:, 3] == 0).all()  # the unused dim's posterior is exactly the prior


def test_elbo_gap_of_wrong_encoder_is_its_kl_to_the_true_posterior() -> None:
    # log p(x) - ELBO = KL(q(z|x) || p(z|x)), here 2.614 nats for every x.
    x = MODEL.sample_x(64, seed=3)
    terms = elbo(x, wrong_encode, MODEL.log_px_given_z, gen(0))
    mu, logvar = wrong_encode(x)
    exact_elbo = MODEL.expected_log_px_given_z(x, mu, logvar) - terms.kl
    torch.testing.assert_close(
        MODEL.log_px(x) - exact_elbo, torch.full((64,), WRONG_KL_TO_POSTERIOR, dtype=F64)
    )


def test_elbo_reconstruction_is_the_monte_carlo_mean_over_samples() -> None:
    x = MODEL.sample_x(4, seed=4)
    calls: list[tuple[Tensor, Tensor, Tensor]] = []
    terms = elbo(x, wrong_encode, recording(MODEL.log_px_given_z, calls), gen(0), n_samples=3)
    assert len(calls) == 1 and calls[0][0].shape == (12, 6)  # one batched call: 3 samples x 4 images
    torch.testing.assert_close(
        terms.recon_log_prob, calls[0][2].reshape(3, 4).mean(dim=0), rtol=0, atol=1e-12
    )

    calls.clear()
    many = elbo(x, wrong_encode, recording(MODEL.log_px_given_z, calls), gen(1), n_samples=4000)
    per_sample = calls[0][2].reshape(4000, 4)
    se = per_sample.std(dim=0) / math.sqrt(4000)
    exact = MODEL.expected_log_px_given_z(x, *wrong_encode(x))
    assert ((many.recon_log_prob - exact).abs() < 4 * se).all()


def test_kl_matches_hand_computation_and_sums_over_dims() -> None:
    # KL(N(mu, v) || N(0, 1)) = (mu^2 + v - 1 - ln v) / 2
    mu = torch.tensor([[1.0, 0.0, 0.5]], dtype=F64)
    logvar = torch.tensor([[0.0, math.log(2.0), math.log(0.5)]], dtype=F64)
    terms = elbo(
        torch.zeros(1, 2, dtype=F64), lambda x: (mu, logvar), lambda x, z: torch.zeros(len(x), dtype=F64)
    )
    expected = torch.tensor([[0.5, 0.5 - 0.5 * math.log(2), 0.5 * (0.25 + 0.5 - 1 + math.log(2))]], dtype=F64)
    torch.testing.assert_close(terms.kl_per_dim, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(terms.kl, torch.tensor([0.875], dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(terms.elbo, -terms.kl)


def test_mean_kl_per_dim_of_pca_is_the_information_each_dim_carries() -> None:
    # Exact posterior: E_x KL_j = -ln(v_j) / 2 = ln(1 + |w_j|^2 / s^2) / 2: ln(17)/2, ln(5)/2, ln(2)/2, 0.
    x = MODEL.sample_x(20000, seed=5)
    kl_per_dim = elbo(x, MODEL.exact_encode, MODEL.log_px_given_z, gen(0)).kl_per_dim  # (N, L)
    expected = -0.5 * MODEL.post_var.log()
    se = kl_per_dim.std(dim=0) / math.sqrt(len(x))
    assert ((kl_per_dim.mean(dim=0) - expected).abs() <= 4 * se + 1e-12).all()
    stats = kl_statistics(kl_per_dim.mean(dim=0))
    assert stats["collapsed_dims"] == 1
    assert stats["kl_top5_frac"] == pytest.approx(1.0)  # L = 4 < 5: the 5 largest are all of them
    assert stats["kl_total"] == pytest.approx(0.5 * math.log(17 * 5 * 2), abs=0.03)


# ----------------------------------------------------------------------------- importance-weighted bound


def test_iw_bound_of_wrong_encoder_increases_with_k_towards_exact_loglik() -> None:
    x = MODEL.sample_x(3000, seed=6)
    log_px = MODEL.log_px(x)
    # The same seed for every K: K=10 uses the first 10 of the samples K=1000 uses, so the
    # differences between Ks are measured on shared samples (much less noise than fresh draws).
    bounds = {
        k: iw_log_likelihood(x, wrong_encode, MODEL.log_px_given_z, k, 250, gen(7))
        for k in (1, 10, 100, 1000)
    }
    gaps = {k: log_px - b for k, b in bounds.items()}

    def se(t: Tensor) -> float:
        return float(t.std() / math.sqrt(len(t)))

    # K=1 is a single-sample ELBO: its mean gap is KL(q || p(z|x)) = 2.614 nats.
    assert abs(float(gaps[1].mean()) - WRONG_KL_TO_POSTERIOR) < 4 * se(gaps[1])
    # E[L_K] increases with K (Burda et al. 2015, Theorem 1); every step here is > 6 standard errors.
    for small, large in [(1, 10), (10, 100), (100, 1000)]:
        assert float((bounds[large] - bounds[small]).mean()) > 3 * se(bounds[large] - bounds[small])
    # K=1000: the remaining gap is about chi2 / 2K = 0.0029 nats (vs 2.6 at K=1); each x's estimate
    # scatters around log p(x) with sd sqrt(chi2 / K) = 0.076, so no x may exceed log p(x) by 6 sd.
    chi2 = wrong_chi2()
    assert abs(float(gaps[1000].mean()) - chi2 / 2000) < 4 * se(gaps[1000])
    assert abs(float(gaps[1000].mean())) < 0.01
    assert float((-gaps[1000]).max()) < 6 * math.sqrt(chi2 / 1000)


def test_iw_single_sample_is_the_elbo_in_expectation() -> None:
    # Same generator seed: the same z for both, so they differ only by log p(z) - log q(z|x) + KL,
    # which has mean zero (the closed-form KL is the expectation of the Monte Carlo one).
    x = MODEL.sample_x(3000, seed=8)
    iw1 = iw_log_likelihood(x, wrong_encode, MODEL.log_px_given_z, 1, 1, gen(9))
    terms = elbo(x, wrong_encode, MODEL.log_px_given_z, gen(9))
    diff = iw1 - terms.elbo
    assert diff.std() > 0.1  # they are different estimators ...
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(x))  # ... of the same number


def test_chunking_changes_neither_the_samples_nor_the_bound() -> None:
    x = MODEL.sample_x(5, seed=10)
    results, samples = {}, {}
    for chunk in (1, 7, 23, 100):
        calls: list[tuple[Tensor, Tensor, Tensor]] = []
        results[chunk] = iw_log_likelihood(
            x, wrong_encode, recording(MODEL.log_px_given_z, calls), 23, chunk, gen(11)
        )
        assert len(calls) == math.ceil(23 / min(chunk, 23))  # one batched decoder call per chunk
        assert calls[0][0].shape == (min(chunk, 23) * 5, 6)
        samples[chunk] = torch.cat([z.reshape(-1, 5, 4) for _, z, _ in calls])  # (K, B, L)
    for chunk in (7, 23, 100):
        assert torch.equal(samples[chunk], samples[1])  # bit-identical draws
        torch.testing.assert_close(results[chunk], results[1], rtol=0, atol=1e-12)
    # A smaller K uses a prefix of the same samples.
    calls = []
    iw_log_likelihood(x, wrong_encode, recording(MODEL.log_px_given_z, calls), 10, 4, gen(11))
    assert torch.equal(torch.cat([z.reshape(-1, 5, 4) for _, z, _ in calls]), samples[1][:10])
    # The chunked result is the log-mean-exp of all 23 log weights, computed here in one go.
    z = samples[1]
    log_w = (
        MODEL.log_px_given_z(x.expand(23, 5, 6).reshape(-1, 6), z.reshape(-1, 4)).reshape(23, 5)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(wrong_encode(x)[0], math.sqrt(INFLATE) * MODEL.post_var.sqrt()).log_prob(z).sum(-1)
    )
    torch.testing.assert_close(results[7], torch.logsumexp(log_w, dim=0) - math.log(23), rtol=0, atol=1e-10)


def test_iw_bound_is_deterministic_given_the_seed() -> None:
    x = MODEL.sample_x(8, seed=12)
    a = iw_log_likelihood(x, wrong_encode, MODEL.log_px_given_z, 50, 16, gen(3))
    b = iw_log_likelihood(x, wrong_encode, MODEL.log_px_given_z, 50, 16, gen(3))
    c = iw_log_likelihood(x, wrong_encode, MODEL.log_px_given_z, 50, 16, gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_decoder_must_return_one_log_prob_per_image() -> None:
    x = MODEL.sample_x(3, seed=13)

    def per_pixel(x: Tensor, z: Tensor) -> Tensor:
        return Normal(z @ MODEL.W.T + MODEL.b, MODEL.s).log_prob(x)  # (B, D): forgot to sum over pixels

    with pytest.raises(ValueError, match=r"one log-probability per image, shape \(B,\)"):
        iw_log_likelihood(x, MODEL.exact_encode, per_pixel, 4, 2, gen(0))


# ----------------------------------------------------------------------------- active units


def column_with_variance(n: int, variance: float, seed: int) -> Tensor:
    """n values whose unbiased sample variance is exactly `variance` (up to rounding)."""
    c = torch.randn(n, generator=gen(seed), dtype=F64)
    return (c - c.mean()) / c.std() * math.sqrt(variance) + 0.7


def test_active_units_counts_dims_whose_posterior_mean_varies_above_threshold() -> None:
    n = 1000
    means = torch.stack(
        [
            torch.full((n,), 0.3, dtype=F64),  # constant over x: inactive
            column_with_variance(n, 1.0, 1),  # informative
            torch.zeros(n, dtype=F64),  # constant: inactive
            column_with_variance(n, 0.0102, 2),  # just above 0.01
            column_with_variance(n, 0.0098, 3),  # just below 0.01
            column_with_variance(n, 2.0, 4),  # informative
        ],
        dim=1,
    )  # (N, L)
    count, variances = active_units(means, threshold=0.01)
    assert count == 3
    torch.testing.assert_close(
        variances, torch.tensor([0, 1, 0, 0.0102, 0.0098, 2], dtype=F64), rtol=0, atol=1e-12
    )


def test_active_units_uses_the_unbiased_variance() -> None:
    # Two images, means 0 and 0.2: unbiased variance 0.02 (population variance would be 0.01).
    count, variances = active_units(torch.tensor([[0.0], [0.2]], dtype=F64), threshold=0.015)
    assert variances.item() == pytest.approx(0.02)
    assert count == 1


def test_active_units_of_pca_are_its_used_dims() -> None:
    # Var_x E[z_j|x] = 1 - v_j (law of total variance, Var z_j = 1): 16/17, 4/5, 1/2 and 0 for the unused dim.
    mu, _ = MODEL.exact_encode(MODEL.sample_x(20000, seed=14))
    count, variances = active_units(mu)
    assert count == 3
    torch.testing.assert_close(variances, 1 - MODEL.post_var, rtol=0.03, atol=1e-12)


# ----------------------------------------------------------------------------- KL statistics


def test_kl_statistics_by_hand() -> None:
    kl = torch.tensor([0.0, 0.005, 2.0, 1.0, 0.5, 3.0, 0.25, 0.001], dtype=F64)
    stats = kl_statistics(kl, threshold=0.01)
    assert stats["kl_total"] == pytest.approx(6.756)
    assert stats["collapsed_dims"] == 3  # 0, 0.005 and 0.001 nats
    assert stats["kl_top5_frac"] == pytest.approx((3.0 + 2.0 + 1.0 + 0.5 + 0.25) / 6.756)


def test_kl_statistics_with_fewer_than_five_dims_or_no_kl() -> None:
    assert kl_statistics(torch.tensor([1.0, 3.0]))["kl_top5_frac"] == 1.0
    stats = kl_statistics(torch.zeros(8))
    assert stats["kl_total"] == 0 and stats["collapsed_dims"] == 8 and math.isnan(stats["kl_top5_frac"])


# ----------------------------------------------------------------------------- mutual information


def gaussian_channel(
    n: int, dims: int, a: float, s: float, seed: int
) -> tuple[Tensor, Tensor, torch.Generator]:
    """x ~ N(0, I), q(z|x) = N(a x, s^2) per dim: q(z) = N(0, a^2 + s^2), I = dims * ln(1 + a^2/s^2) / 2."""
    g = gen(seed)
    x = torch.randn(n, dims, generator=g, dtype=F64)
    return a * x, torch.full((n, dims), 2 * math.log(s), dtype=F64), g


def test_mutual_information_of_a_gaussian_channel() -> None:
    n, dims, a, s = 4096, 2, 1.0, 0.5
    mu, logvar, g = gaussian_channel(n, dims, a, s, seed=0)
    true_mi = dims * 0.5 * math.log(1 + a**2 / s**2)  # 1.609 nats
    # Noise: the pointwise log q(z|x) - log q(z) has variance a^2 / (a^2 + s^2) per dim, so the
    # standard error is sqrt(1.6 / 4096) = 0.020. Bias: O(e^I / N) (the log of a minibatch average
    # and the image's own term in it); at N = 4096, I = 1.6 it measures about -0.005 over seeds.
    se = math.sqrt(dims * a**2 / (a**2 + s**2) / n)
    assert mutual_information(mu, logvar, g) == pytest.approx(true_mi, abs=4 * se + 0.02)


def test_mutual_information_of_pca_is_the_models_information() -> None:
    # Exact posterior: I(x; z) = sum_j ln(1 + |w_j|^2 / s^2) / 2 = ln(170) / 2 = 2.568 nats.
    # Standard error as above: sum_j (1 - v_j) = 2.24 is the pointwise variance, sqrt(2.24 / 4096) = 0.023.
    mu, logvar = MODEL.exact_encode(MODEL.sample_x(4096, seed=15))
    se = math.sqrt(float((1 - MODEL.post_var).sum()) / 4096)
    assert mutual_information(mu, logvar, gen(0)) == pytest.approx(0.5 * math.log(170), abs=4 * se + 0.02)


def test_mutual_information_never_exceeds_log_batch_size() -> None:
    # Near-deterministic encoder: true I = 2 * ln(1 + 1e8) / 2 = 18.4 nats, far above ln 256 = 5.55.
    mu, logvar, g = gaussian_channel(256, 2, 1.0, 1e-4, seed=1)
    estimate = mutual_information(mu, logvar, g)
    assert estimate <= math.log(256) + 1e-9
    assert estimate > math.log(256) - 1e-3  # saturated at the bound
    # and a smaller minibatch saturates lower: the estimate is only comparable at equal N
    assert mutual_information(mu[:16], logvar[:16], g) <= math.log(16) + 1e-9


def test_mutual_information_batched_averages_full_minibatches_and_records_their_size() -> None:
    mu, logvar, _ = gaussian_channel(10, 3, 1.0, 0.5, seed=2)
    result = mutual_information_batched(mu, logvar, batch_size=4, generator=gen(5))
    assert (result.batch_size, result.num_batches) == (4, 2)  # the last 2 images are dropped
    assert result.upper_bound_nats == pytest.approx(math.log(4))
    g = gen(5)
    by_hand = [mutual_information(mu[:4], logvar[:4], g), mutual_information(mu[4:8], logvar[4:8], g)]
    assert result.nats == pytest.approx(sum(by_hand) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="fewer than one minibatch"):
        mutual_information_batched(mu, logvar, batch_size=16)


# ----------------------------------------------------------------------------- an encoder that ignores x


def test_uninformative_encoder_has_no_information_no_active_units_and_no_kl() -> None:
    x = MODEL.sample_x(512, seed=16)

    def prior_encode(x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(len(x), 4, dtype=F64), torch.zeros(len(x), 4, dtype=F64)  # q(z|x) = N(0, I)

    mu, logvar = prior_encode(x)
    assert mutual_information(mu, logvar, gen(0)) == pytest.approx(0.0, abs=1e-12)
    count, variances = active_units(mu)
    assert count == 0 and (variances == 0).all()
    terms = elbo(x, prior_encode, MODEL.log_px_given_z, gen(0))
    assert (terms.kl == 0).all() and (terms.kl_per_dim == 0).all()
    stats = kl_statistics(terms.kl_per_dim.mean(dim=0))
    assert stats["kl_total"] == 0 and stats["collapsed_dims"] == 4
