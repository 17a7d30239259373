"""The quality estimators: closed forms, brute forces, hand-computed cases, and the peers (torch-fidelity
for FID/KID/precision-recall, torchmetrics for SSIM) on the same inputs.

The peers are given float64 features, so that a disagreement is about the estimator and not about the
precision of the input.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from vaebench.evaluation.quality.statistics import (
    feature_statistics,
    frechet_distance,
    kid,
    kid_subset_size,
    precision_recall,
    ssim,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inception_like(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """Correlated, non-negative features with a few large directions, like pool3 activations."""
    g = gen(seed)
    mixing = torch.randn(d, d, generator=gen(1000 + d)) / math.sqrt(d)  # the same "network" for both sets
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.1, d, dtype=torch.float64)
    return F.relu(z @ mixing.double() + 0.3 + shift)


# ---------------------------------------------------------------------------------------------- FID


S1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
S2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)


def test_frechet_distance_of_2d_gaussians_matches_the_closed_form() -> None:
    assert not torch.allclose(S1 @ S2, S2 @ S1)  # non-commuting: tr sqrt(S1 S2) != tr(S1^1/2 S2^1/2)
    mu1, mu2 = torch.tensor([0.0, 1.0]), torch.tensor([2.0, -1.0])
    m = S1 @ S2
    # For 2x2 M with real positive eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    tr_sqrt = math.sqrt(float(torch.trace(m)) + 2 * math.sqrt(float(torch.det(m))))
    expected = 8.0 + float(torch.trace(S1) + torch.trace(S2)) - 2 * tr_sqrt
    assert frechet_distance(mu1, S1, mu2, S2) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_is_zero_to_itself_symmetric_and_a_mean_shift_adds_its_squared_norm() -> None:
    for n, d in ((200, 64), (50, 128)):  # full rank, and rank-deficient (N < d)
        mu1, sigma1 = feature_statistics(inception_like(n, d, seed=1))
        mu2, sigma2 = feature_statistics(inception_like(n, d, seed=2, shift=0.1))
        scale = float(torch.trace(sigma1))
        # Not just 1e-6: the null space of a rank-deficient covariance must not leave sqrt(rounding) terms.
        assert abs(frechet_distance(mu1, sigma1, mu1, sigma1)) < 1e-10 * scale
        fd = frechet_distance(mu1, sigma1, mu2, sigma2)
        assert fd > 1e-3 * scale
        assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(fd, rel=1e-9)
        delta = torch.linspace(-1.0, 1.0, d, dtype=torch.float64)
        shifted = frechet_distance(mu1 + delta, sigma1, mu1, sigma2) - frechet_distance(
            mu1, sigma1, mu1, sigma2
        )
        assert shifted == pytest.approx(float(delta @ delta), rel=1e-9)


def test_feature_statistics_are_the_mean_and_unbiased_covariance_in_float64() -> None:
    features = inception_like(30, 5, seed=3).float()
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == torch.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    x = features.double().numpy()
    np.testing.assert_allclose(mu.numpy(), x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-12)


@pytest.mark.parametrize(("n", "d"), [(200, 64), (50, 128)], ids=["full-rank", "rank-deficient"])
def test_fid_matches_torch_fidelity_on_the_same_features(n: int, d: int) -> None:
    metric_fid = pytest.importorskip("torch_fidelity.metric_fid")
    real, fake = inception_like(n, d, seed=4), inception_like(n, d, seed=5, shift=0.05)
    peer = metric_fid.fid_statistics_to_metric(
        metric_fid.fid_features_to_statistics(real),
        metric_fid.fid_features_to_statistics(fake),
        verbose=False,
    )[metric_fid.KEY_METRIC_FID]
    ours = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    assert ours == pytest.approx(peer, rel=1e-5)


# ---------------------------------------------------------------------------------------------- KID


def brute_force_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    m, d = x.shape

    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), repeat=2)) / m**2
    return within - 2 * cross


def test_kid_is_the_unbiased_mmd2_of_the_cubic_kernel_by_brute_force() -> None:
    real = torch.randn(7, 3, generator=gen(6), dtype=torch.float64)
    fake = torch.randn(7, 3, generator=gen(7), dtype=torch.float64) * 1.5 + 0.5
    # One subset of the whole set: every subset is a permutation of it, and MMD^2 is permutation-invariant.
    mean, std = kid(real, fake, subset_size=7, subsets=3, seed=0)
    assert mean == pytest.approx(brute_force_mmd2(fake, real), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("subset_size", [40, 100], ids=["subsets-of-40", "all-fake-some-real"])
def test_kid_matches_torch_fidelity_with_the_same_seed(subset_size: int) -> None:
    metric_kid = pytest.importorskip("torch_fidelity.metric_kid")
    real, fake = inception_like(120, 16, seed=8), inception_like(100, 16, seed=9, shift=0.1)
    # torch-fidelity's input 1 is the generated set; kid draws its subsets in that order.
    peer = metric_kid.kid_features_to_metric(
        fake, real, kid_subsets=8, kid_subset_size=subset_size, rng_seed=123, verbose=False
    )
    mean, std = kid(real, fake, subset_size=subset_size, subsets=8, seed=123)
    assert mean == pytest.approx(peer[metric_kid.KEY_METRIC_KID_MEAN], rel=1e-9)
    assert std == pytest.approx(peer[metric_kid.KEY_METRIC_KID_STD], rel=1e-9)
    # Another seed draws other subsets and gives another estimate: agreeing means drawing the same subsets.
    assert kid(real, fake, subset_size=subset_size, subsets=8, seed=124)[0] != pytest.approx(mean, rel=1e-3)


def test_kid_caps_the_subset_size_at_the_smaller_set() -> None:
    real, fake = inception_like(30, 8, seed=10), inception_like(50, 8, seed=11)
    assert kid_subset_size(30, 50, 1000) == 30
    assert kid(real, fake, subset_size=1000, subsets=2, seed=0) == kid(
        real, fake, subset_size=30, subsets=2, seed=0
    )
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid_subset_size(1, 50, 1000)


# ---------------------------------------------------------------------------------- precision/recall


def test_precision_recall_of_a_set_with_itself_is_one_one() -> None:
    real = torch.randn(60, 5, generator=gen(12))
    assert precision_recall(real, real.clone()) == (1.0, 1.0)


def test_precision_recall_of_far_apart_clusters_is_zero_zero() -> None:
    real = torch.randn(40, 5, generator=gen(13))
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_precision_recall_by_hand_in_one_dimension() -> None:
    # k = 2, the point itself not counting:
    #   real radii: 0 -> 2 (others at 1, 2, 10), 1 -> 1, 2 -> 2, 10 -> 9: manifold [-2, 19]
    #   fake radii: -3 -> 3.1, -2 -> 2.1, 0.1 -> 0.2, 0.2 -> 0.1, 0.3 -> 0.2: manifold [-6.1, 0.5]
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    fake = torch.tensor([[-3.0], [-2.0], [0.1], [0.2], [0.3]])
    precision, recall = precision_recall(real, fake, k=2)
    assert precision == pytest.approx(4 / 5)  # all but -3; -2 on the boundary of 0's ball counts
    assert recall == pytest.approx(1 / 4)  # only 0


def test_precision_recall_matches_torch_fidelity_and_does_not_depend_on_the_batch_size() -> None:
    metric_prc = pytest.importorskip("torch_fidelity.metric_prc")
    real = torch.randn(300, 16, generator=gen(14), dtype=torch.float64)
    fake = torch.randn(250, 16, generator=gen(15), dtype=torch.float64) * 0.8 + 0.3
    peer = metric_prc.prc_features_to_metric(
        fake, real, prc_neighborhood=3, save_cpu_ram=False, verbose=False
    )
    ours = precision_recall(real, fake, k=3)
    # The peer averages its 0/1 indicators in float32, hence approx: the counts are the same.
    assert ours == pytest.approx(
        (peer[metric_prc.KEY_METRIC_PRECISION], peer[metric_prc.KEY_METRIC_RECALL]), abs=1e-6
    )
    assert 0.05 < ours[0] < 0.95 and 0.05 < ours[1] < 0.95  # not a trivial case
    assert precision_recall(real, fake, k=3, batch_size=37) == ours


# --------------------------------------------------------------------------------------------- SSIM


def structured_images(n: int, seed: int) -> torch.Tensor:
    """Smooth images (blurred noise) in [0, 1], 64x64, with edges from a step."""
    noise = torch.rand(n, 3, 64, 64, generator=gen(seed))
    smooth = F.avg_pool2d(noise, 9, stride=1, padding=4, count_include_pad=False)
    step = (torch.arange(64) > 32).float().view(1, 1, 1, 64) * 0.3
    return ((smooth - 0.5) * 2 + 0.35 + step).clamp(0.0, 1.0)


def test_ssim_of_identical_images_is_one_per_image() -> None:
    x = torch.rand(3, 3, 32, 32, generator=gen(16))
    s = ssim(x, x)
    assert s.shape == (3,) and s.dtype == torch.float64
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_matches_torchmetrics_per_image_on_random_and_structured_pairs() -> None:
    functional = pytest.importorskip("torchmetrics.functional.image")
    x = structured_images(4, seed=17)
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    noised = (x + 0.1 * torch.randn(x.shape, generator=gen(18))).clamp(0.0, 1.0)
    pairs = {
        "random": (torch.rand(4, 3, 64, 64, generator=gen(19)), torch.rand(4, 3, 64, 64, generator=gen(20))),
        "blurred": (x, blurred),
        "noised": (x, noised),
    }
    for name, (a, b) in pairs.items():
        ours = ssim(a, b)
        assert ours.shape == (4,)
        for dtype, atol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            peer = functional.structural_similarity_index_measure(
                a.to(dtype), b.to(dtype), data_range=1.0, reduction="none"
            )
            torch.testing.assert_close(ours, peer.double(), rtol=0, atol=atol, msg=f"{name}, {dtype}")
    assert ssim(x, blurred).min() > ssim(x, noised).max()  # blur keeps more structure than this much noise


def test_ssim_counts_the_border_pixels() -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen(21))
    y = x.clone()
    y[..., 0, :] = 0.0  # only the first row differs, outside the positions where the window fits
    assert torch.all(ssim(x, y) < 0.99)


def test_ssim_refuses_images_outside_the_unit_range() -> None:
    x = torch.rand(1, 3, 16, 16, generator=gen(22))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ssim(x * 2 - 1, x)
