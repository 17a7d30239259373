"""IWAE training: the k-sample bound is the ELBO at k = 1, exact with the true posterior, and approaches
log p(x) with k on a linear-Gaussian model whose exact log-likelihood is known."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaebench.config.spec import RunSpec
from vaebench.model.vae import VAEOutput
from vaebench.objectives import TrainingLoss
from vaebench.objectives.iwae import IWAESpec

# p(z) = N(0, 1), p(x|z) = N(z, s2), s2 = SIGMA^2: p(x) = N(0, 1 + s2), z|x = N(x / (1 + s2), s2 / (1 + s2))
SIGMA = 0.5


class LinearGaussian(torch.nn.Module):
    """A one-dimensional linear-Gaussian VAE with a chosen posterior q(z|x) = N(a x, v)."""

    def __init__(self, a: float, v: float) -> None:
        super().__init__()
        self.a, self.v = a, v

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z.view(-1, 1, 1, 1), torch.full((1, 1, 1, 1), math.log(SIGMA), dtype=z.dtype)

    def forward(self, x: Tensor) -> VAEOutput:
        mu = self.a * x.view(-1, 1)
        logvar = torch.full_like(mu, math.log(self.v))
        z = mu + math.sqrt(self.v) * torch.randn_like(mu)
        mean, log_scale = self.decode(z)
        return VAEOutput(mean, log_scale, mu, logvar, z)

    def log_prob(self, x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str) -> Tensor:
        return torch.distributions.Normal(mean, log_scale.exp()).log_prob(x).flatten(1).sum(dim=1)


def exact_log_px(x: Tensor) -> Tensor:
    return torch.distributions.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x.flatten())


def bound(model: LinearGaussian, x: Tensor, k: int) -> Tensor:
    """-loss: the batch mean of L_k."""
    return -TrainingLoss(IWAESpec(k=k, likelihood="continuous"), dataset_size=1)(model, x, 1.0)["loss"]


X = torch.linspace(-2, 2, 64, dtype=torch.float64).view(-1, 1, 1, 1)
EXACT = TRUE_A, TRUE_V = 1 / (1 + SIGMA**2), SIGMA**2 / (1 + SIGMA**2)


def test_with_the_true_posterior_every_weight_is_p_x_so_the_bound_is_exact_for_any_k() -> None:
    torch.manual_seed(0)
    for k in (1, 7):
        assert (
            abs(bound(LinearGaussian(*EXACT), X, k).item() - exact_log_px(X).mean().item()) < 1e-6
        )  # fp32 arithmetic


def test_the_bound_rises_to_the_exact_log_likelihood_with_k() -> None:
    torch.manual_seed(0)
    model = LinearGaussian(0.5, 0.6)  # a poor posterior: the ELBO is well below log p(x)
    exact = exact_log_px(X).mean().item()
    means = {k: sum(bound(model, X, k).item() for _ in range(20)) / 20 for k in (1, 10, 300)}
    assert means[1] < means[10] < means[300] <= exact + 1e-3
    assert exact - means[300] < 0.01 < exact - means[1]


def test_k_1_is_the_elbo_with_a_sampled_kl_and_the_terms_are_logged() -> None:
    torch.manual_seed(3)
    model = LinearGaussian(0.5, 0.6)
    terms = TrainingLoss(IWAESpec(k=1, likelihood="continuous"), dataset_size=1)(model, X, 1.0)
    torch.manual_seed(3)
    out = model(X)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(out.z).sum(1)
    log_qz = torch.distributions.Normal(out.mu, (0.5 * out.logvar).exp()).log_prob(out.z).sum(1)
    elbo = model.log_prob(X, out.mean, out.log_scale, "continuous") + log_pz - log_qz
    assert torch.allclose(terms["loss"], -elbo.mean())
    assert set(terms) == {"loss", "recon", "kl", "iw_bound"}


def test_iwae_is_a_loss_kind_in_a_spec() -> None:
    spec = RunSpec.model_validate({"loss": {"kind": "iwae", "k": 8}})
    assert isinstance(spec.loss, IWAESpec) and spec.loss.k == 8
