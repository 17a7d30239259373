"""beta-TCVAE: the minibatch-weighted estimates of MI, total correlation and dimension-wise KL."""

from __future__ import annotations

import math

import torch

from vaebench.config.spec import RunSpec
from vaebench.model.likelihoods import gaussian_kl, gaussian_log_density
from vaebench.model.vae import VAEOutput
from vaebench.objectives import TrainingLoss
from vaebench.objectives.beta_tcvae import BetaTCVAESpec, tc_decomposition


def posterior(m: int = 5, latent: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(m, latent, generator=g, dtype=torch.float64)
    logvar = 0.5 * torch.randn(m, latent, generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(m, latent, generator=g, dtype=torch.float64)
    return z, mu, logvar


def test_the_three_terms_add_up_to_the_sampled_kl_whatever_the_dataset_size() -> None:
    z, mu, logvar = posterior()
    want = (gaussian_log_density(z, mu, logvar) - gaussian_log_density(z, 0 * z, 0 * z)).sum(dim=1).mean()
    for n in (5, 1000):
        parts = tc_decomposition(z, mu, logvar, n)
        assert torch.allclose(parts["mi"] + parts["tc"] + parts["dwkl"], want.float(), atol=1e-5)


def test_the_estimates_equal_a_brute_force_computation_of_the_papers_equation_9() -> None:
    z, mu, logvar = posterior(m=4, latent=2)
    n, m, latent = 50, 4, 2

    def log_q(i: int, j: int, dims: list[int]) -> float:  # log q(z_i[dims] | x_j)
        return sum(
            -0.5 * ((z[i, d] - mu[j, d]) ** 2 / math.exp(logvar[j, d]) + logvar[j, d] + math.log(2 * math.pi))
            for d in dims
        ).item()

    def log_mean_exp_over_j(i: int, dims: list[int]) -> float:
        return math.log(sum(math.exp(log_q(i, j, dims)) for j in range(m)) / (n * m))

    everything = list(range(latent))
    mi = tc = dwkl = 0.0
    for i in range(m):
        own = log_q(i, i, everything)
        agg = log_mean_exp_over_j(i, everything)
        marginals = sum(log_mean_exp_over_j(i, [d]) for d in everything)
        prior = sum(-0.5 * (z[i, d].item() ** 2 + math.log(2 * math.pi)) for d in everything)
        mi, tc, dwkl = mi + (own - agg) / m, tc + (agg - marginals) / m, dwkl + (marginals - prior) / m
    parts = tc_decomposition(z, mu, logvar, n)
    assert abs(parts["mi"].item() - mi) < 1e-4
    assert abs(parts["tc"].item() - tc) < 1e-4
    assert abs(parts["dwkl"].item() - dwkl) < 1e-4


def test_the_dataset_size_shifts_each_term_by_a_known_multiple_of_its_log() -> None:
    """log q(z) and each log q(z_d) carry -log(N M): N x 10 moves MI by +log 10, TC by (L - 1) log 10."""
    z, mu, logvar = posterior(latent=3)
    small, large = tc_decomposition(z, mu, logvar, 100), tc_decomposition(z, mu, logvar, 1000)
    step = math.log(10)
    assert abs((large["mi"] - small["mi"]).item() - step) < 1e-4
    assert abs((large["tc"] - small["tc"]).item() - 2 * step) < 1e-4
    assert abs((large["dwkl"] - small["dwkl"]).item() + 3 * step) < 1e-4


def test_the_loss_weights_the_terms_and_keeps_the_closed_form_kl_for_bits_per_dim() -> None:
    z, mu, logvar = (t.float() for t in posterior(m=4, latent=3))
    x = torch.full((4, 3, 4, 4), 0.5)

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> VAEOutput:
            return VAEOutput(x, torch.zeros(1, 1, 1, 1), mu, logvar, z)

        def log_prob(self, x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, likelihood: str):  # type: ignore[no-untyped-def]
            return torch.full((len(x),), -7.0)

    spec = BetaTCVAESpec(alpha=0.5, beta=6.0, gamma=2.0)
    terms = TrainingLoss(spec, dataset_size=200)(Fixed(), x, 0.25)
    parts = tc_decomposition(z, mu, logvar, 200)
    penalty = 0.5 * parts["mi"] + 6.0 * parts["tc"] + 2.0 * parts["dwkl"]
    assert torch.allclose(terms["loss"], 7.0 + 0.25 * penalty)
    assert torch.allclose(terms["kl"], gaussian_kl(mu, logvar).mean())
    assert set(terms) == {"loss", "recon", "kl", "mi", "tc", "dwkl"}


def test_beta_tcvae_is_a_loss_kind_in_a_spec() -> None:
    spec = RunSpec.model_validate({"loss": {"kind": "beta_tcvae", "beta": 4}})
    assert isinstance(spec.loss, BetaTCVAESpec) and spec.loss.beta == 4.0 and spec.loss.alpha == 1.0
