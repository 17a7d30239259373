"""InfoVAE: the unbiased MMD estimate against the closed form for two Gaussians, and the loss's weights."""

from __future__ import annotations

import math

import torch

from vaebench.config.spec import RunSpec
from vaebench.model.likelihoods import gaussian_kl
from vaebench.model.vae import VAEOutput
from vaebench.objectives import TrainingLoss
from vaebench.objectives.infovae import InfoVAESpec, mmd_squared


def expected_rbf(mean_gap: float, var: float, dims: int, c: float) -> float:
    """E exp(-|u|^2 / c) for u ~ N(delta, var I) in `dims` dims, |delta| = mean_gap."""
    return (c / (c + 2 * var)) ** (dims / 2) * math.exp(-(mean_gap**2) / (c + 2 * var))


def test_mmd_equals_the_closed_form_between_two_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    d, n, c = 4, 3000, 8.0
    shift = torch.tensor([0.6, 0.0, 0.0, 0.0])
    a = torch.randn(n, d, generator=g, dtype=torch.float64)  # N(0, I)
    b = shift + 1.5 * torch.randn(n, d, generator=g, dtype=torch.float64)  # N(shift, 2.25 I)
    want = (
        expected_rbf(0.0, 2.0, d, c) + expected_rbf(0.0, 2 * 2.25, d, c) - 2 * expected_rbf(0.6, 3.25, d, c)
    )
    assert abs(mmd_squared(a, b, "rbf", c).item() - want) < 0.004
    assert want > 0.05  # the test can tell the two apart


def test_mmd_of_two_samples_of_one_distribution_is_zero_up_to_noise() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    for kernel in ("imq", "rbf"):
        assert abs(mmd_squared(a, b, kernel).item()) < 2e-3


class Fixed(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mu, self.logvar = torch.randn(8, 3, generator=g), 0.3 * torch.randn(8, 3, generator=g)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        return VAEOutput(x, torch.zeros(1, 1, 1, 1), self.mu, self.logvar, self.mu)

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, likelihood: str):  # type: ignore[no-untyped-def]
        return torch.full((len(x),), -3.0)


def test_alpha_0_lambda_1_is_the_elbo_and_the_weights_follow_the_paper() -> None:
    model, x = Fixed(0), torch.zeros(8, 3, 2, 2)
    kl = gaussian_kl(model.mu, model.logvar).mean()
    elbo_like = TrainingLoss(InfoVAESpec(alpha=0.0, mmd_lambda=1.0), dataset_size=1)(model, x, 0.5)
    assert torch.allclose(elbo_like["loss"], 3.0 + 0.5 * kl)
    torch.manual_seed(0)
    terms = TrainingLoss(InfoVAESpec(alpha=0.25, mmd_lambda=100.0), dataset_size=1)(model, x, 0.5)
    assert terms["mmd"].item() != 0.0
    want = 3.0 + 0.5 * 0.75 * kl + (0.25 + 100.0 - 1.0) * terms["mmd"]
    assert torch.allclose(terms["loss"], want)
    assert set(terms) == {"loss", "recon", "kl", "mmd"}


def test_infovae_is_a_loss_kind_in_a_spec() -> None:
    spec = RunSpec.model_validate({"loss": {"kind": "infovae", "mmd_lambda": 10}})
    assert isinstance(spec.loss, InfoVAESpec) and spec.loss.mmd_lambda == 10.0
