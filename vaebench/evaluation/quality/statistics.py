"""The estimators behind the quality scores: Fréchet distance, KID, precision/recall, SSIM.

Pure functions of features (or images), all computed in float64 whatever the input dtype, so that a score
does not depend on the precision the extractor ran in. Each matches its peer implementation on the same
inputs (torch-fidelity 0.4 for FID, KID and precision/recall; torchmetrics for SSIM), and
tests/test_quality_statistics.py checks that, and checks each against a closed form or a brute force.

Units: feature-space scores (FID, KID) are in squared feature units, the feature vector being whatever the
extractor returns (Inception-v3 pool3, 2048-d, for the standard FID/KID); precision, recall and SSIM are
dimensionless. None of these is per image or per dim unless its docstring says so.

>>> g = torch.Generator().manual_seed(0)
>>> real = torch.randn(200, 8, generator=g)
>>> mu, sigma = feature_statistics(real)
>>> round(frechet_distance(mu, sigma, mu + 1.0, sigma), 9)  # a pure mean shift costs ||dmu||^2 = 8
8.0
>>> precision_recall(real, real)  # every point lies in its own ball
(1.0, 1.0)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

KID_DEFAULT_SUBSET_SIZE = 1000
KID_DEFAULT_SUBSETS = 100
KID_DEFAULT_SEED = 2020
"""torch-fidelity's defaults (kid_subset_size, kid_subsets, rng_seed)."""


def _as_float64_features(features: Tensor, name: str, min_rows: int = 1) -> Tensor:
    if not isinstance(features, Tensor) or features.ndim != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name}: expected a tensor of features, shape (N, d), got {shape}")
    if features.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} feature vectors, got {features.shape[0]}")
    return features.detach().to(dtype=torch.float64)


def _check_same_dim(real: Tensor, fake: Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features have different dimensions ({real.shape[1]} vs {fake.shape[1]}): "
            "were they extracted by the same network and layer?"
        )


# ---------------------------------------------------------------------------------------------- FID


@torch.no_grad()
def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a set of feature vectors, the Gaussian that FID fits to it.

    features: (N, d), any float dtype, N >= 2. Returns mu (d,) and sigma (d, d), both float64, sigma
    divided by N - 1 as numpy.cov(rowvar=False) and torch-fidelity's fid_features_to_statistics do.
    Units: feature units and squared feature units.
    """
    x = _as_float64_features(features, "feature_statistics", min_rows=2)  # (N, d)
    mu = x.mean(dim=0)  # (d,)
    centred = x - mu
    sigma = centred.T @ centred / (x.shape[0] - 1)  # (d, d)
    return mu, sigma


def _psd_eigenvalues_roots(eigenvalues: Tensor) -> Tensor:
    # The matrices here are PSD, so an eigenvalue within rounding of 0 (numpy.linalg.matrix_rank's
    # tolerance, d * eps * the largest) is 0: a rank-deficient covariance's null space otherwise leaves
    # eigenvalues of +-1e-16 whose square roots (1e-8 each) add up to a visibly negative distance.
    tolerance = eigenvalues.shape[0] * torch.finfo(torch.float64).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tolerance, eigenvalues, 0.0).sqrt()


def _psd_sqrt(sigma: Tensor) -> Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh(sigma)
    return (eigenvectors * _psd_eigenvalues_roots(eigenvalues)) @ eigenvectors.T


@torch.no_grad()
def frechet_distance(
    mu1: Tensor | np.ndarray,
    sigma1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    sigma2: Tensor | np.ndarray,
) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2) (Dowson & Landau 1982;
    FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule"), in squared feature units;
    FID is this on Inception-v3 pool3 statistics (`feature_statistics`).

    tr sqrt(sigma1 sigma2) is computed as the sum of the square roots of the eigenvalues of
    M = sqrt(sigma1) sigma2 sqrt(sigma1), clipped at 0. AB and BA share their non-zero eigenvalues, so M has
    those of sigma1 sigma2, but M is symmetric PSD: a symmetric eigensolver gives real eigenvalues with a
    backward-stable error, where the eigenvalues of the non-symmetric product (torch-fidelity's
    np.linalg.eigvals) or an iterative sqrtm (scipy.linalg.sqrtm, the original TTUR code) can come out
    complex or inaccurate for the rank-deficient covariances of N < d samples. Eigenvalues within rounding
    of 0 count as 0, so a set's distance to itself is 0 to ~1e-13 even when N < d (clipping at 0 alone,
    as torch-fidelity effectively does, leaves about -3e-8 x tr(sigma)). The two agree to ~1e-14 relative
    on full-rank covariances and ~1e-7 on rank-deficient ones (the peer's rounding; see the tests).
    """
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(a, dtype=torch.float64) for a in (mu1, sigma1, mu2, sigma2))
    d = mu1.shape[0]
    for name, mu, sigma in (("1", mu1, sigma1), ("2", mu2, sigma2)):
        if mu.shape != (d,) or sigma.shape != (d, d):
            raise ValueError(
                f"frechet_distance: statistics {name} have shapes mu {tuple(mu.shape)}, sigma "
                f"{tuple(sigma.shape)}; expected ({d},) and ({d}, {d}) like feature_statistics returns"
            )
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    m = (m + m.T) / 2  # exactly symmetric for eigvalsh; the asymmetry is rounding only
    tr_covmean = _psd_eigenvalues_roots(torch.linalg.eigvalsh(m)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_covmean)


# ---------------------------------------------------------------------------------------------- KID


def kid_subset_size(n_real: int, n_fake: int, subset_size: int = KID_DEFAULT_SUBSET_SIZE) -> int:
    """The subset size `kid` actually uses: subset_size capped at the smaller set, so that a small
    evaluation still gets a score (torch-fidelity refuses instead). Record it with the score: KID's
    estimator is unbiased, but its spread across subsets depends on the size."""
    used = min(subset_size, n_real, n_fake)
    if used < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 samples (the unbiased MMD^2 divides by m(m - 1)); got "
            f"subset_size={subset_size}, {n_real} real and {n_fake} fake samples"
        )
    return used


def _polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3  # (m, m)


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    # The cross term keeps its diagonal: x_i and y_i are independent, so k(x_i, y_i) is unbiased too.
    return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


@torch.no_grad()
def kid(
    real: Tensor,
    fake: Tensor,
    subset_size: int = KID_DEFAULT_SUBSET_SIZE,
    subsets: int = KID_DEFAULT_SUBSETS,
    seed: int = KID_DEFAULT_SEED,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs"): mean and std over
    `subsets` random subsets of the unbiased MMD^2 between real and fake features, in squared kernel units
    (dimensionless for the cubic kernel on features, but it scales with the features' norm).

    Kernel k(x, y) = (x.y / d + 1)^3. Per subset, m = kid_subset_size(...) rows of each set drawn without
    replacement, and MMD^2 = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m(m - 1)) - 2 sum_{i, j} k(x_i, y_j)
    / m^2 (torch-fidelity's mmd_est="unbiased": the cross term keeps i = j). std is the population std
    (ddof 0) of the per-subset values: the spread of one subset's estimate, not the standard error of the
    mean. Can be slightly negative when the distributions are close.

    Indices come from numpy.random.RandomState(seed), drawn per subset for the fake set then the real set:
    the order of torch-fidelity's kid_features_to_metric(fake, real, rng_seed=seed) (its input 1 is the
    generated set), so with the same seed the two use the same subsets and agree.
    """
    x_real = _as_float64_features(real, "kid: real")
    x_fake = _as_float64_features(fake, "kid: fake")
    _check_same_dim(x_real, x_fake)
    m = kid_subset_size(x_real.shape[0], x_fake.shape[0], subset_size)
    if subsets < 1:
        raise ValueError(f"kid: subsets must be at least 1, got {subsets}")
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        fake_rows = torch.from_numpy(rng.choice(x_fake.shape[0], m, replace=False))
        real_rows = torch.from_numpy(rng.choice(x_real.shape[0], m, replace=False))
        mmds[i] = _mmd2_unbiased(x_fake[fake_rows], x_real[real_rows])
    return float(mmds.mean()), float(mmds.std())


# ---------------------------------------------------------------------------------- precision/recall


def _kth_neighbour_radii(points: Tensor, k: int, batch_size: int) -> Tensor:
    radii = []
    for batch in points.split(batch_size):  # (B, d)
        distances = torch.cdist(batch, points)  # (B, N), the point itself at distance 0 included
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # so the (k+1)-th is the k-th other one
    return torch.cat(radii)  # (N,)


def _share_inside_any_ball(points: Tensor, centres: Tensor, radii: Tensor, batch_size: int) -> float:
    inside = []
    for batch in points.split(batch_size):  # (B, d)
        inside.append((torch.cdist(batch, centres) <= radii).any(dim=1))  # (B,), closed balls
    return torch.cat(inside).double().mean().item()


@torch.no_grad()
def precision_recall(real: Tensor, fake: Tensor, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), both in [0, 1].

    The real manifold is the union of closed balls around the real features, each of radius the Euclidean
    distance to its k-th nearest other real feature; precision is the share of fake features inside at
    least one of them (are samples realistic?). Recall swaps the roles: the share of real features inside
    the fake manifold (is the data's variety covered?). As torch-fidelity's metric_prc (and the paper's
    code), the radius is the (k+1)-th smallest distance counting the point itself at distance 0, so an
    exact duplicate counts as a neighbour, and a point on a ball's boundary is inside (<=).

    Distances are computed `batch_size` rows at a time, so memory is batch_size x N float64 rather than
    N x N (10k x 10k is 800 MB).
    """
    x_real = _as_float64_features(real, "precision_recall: real", min_rows=k + 1)
    x_fake = _as_float64_features(fake, "precision_recall: fake", min_rows=k + 1)
    _check_same_dim(x_real, x_fake)
    if k < 1 or batch_size < 1:
        raise ValueError(f"precision_recall: k and batch_size must be at least 1, got {k} and {batch_size}")
    real_radii = _kth_neighbour_radii(x_real, k, batch_size)
    fake_radii = _kth_neighbour_radii(x_fake, k, batch_size)
    precision = _share_inside_any_ball(x_fake, x_real, real_radii, batch_size)
    recall = _share_inside_any_ball(x_real, x_fake, fake_radii, batch_size)
    return precision, recall


# --------------------------------------------------------------------------------------------- SSIM

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _gaussian_window(channels: int) -> Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-((offsets / SSIM_SIGMA) ** 2) / 2)
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)  # (C, 1, 11, 11)


@torch.no_grad()
def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), shape (N,), float64, 1 for identical images.

    x, y: (N, C, H, W) images in [0, 1] (data range 1), H and W > 5. Local means, variances and covariance
    under an 11x11 Gaussian window (sigma 1.5), SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 +
    C1)(var_x + var_y + C2)) with C1 = 0.01^2, C2 = 0.03^2, averaged over channels and positions.

    Border handling is torchmetrics' (>= the fix of its PR #2721, 2024): the images are reflect-padded by 5
    so every one of the H x W positions gets a value, and the mean is over all of them. Wang et al.'s MATLAB
    code, skimage and older torchmetrics average only the (H - 10) x (W - 10) positions where the window
    fits, which gives a slightly different number for the same images.
    """
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"ssim: expected two images batches of the same shape (N, C, H, W), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    pad = (SSIM_WINDOW - 1) // 2
    if min(x.shape[-2:]) <= pad:
        raise ValueError(f"ssim: images must be larger than {pad} pixels a side, got {tuple(x.shape[-2:])}")
    x, y = x.detach().to(torch.float64), y.detach().to(torch.float64)
    for name, images in (("x", x), ("y", y)):
        if images.min() < 0 or images.max() > 1:
            raise ValueError(
                f"ssim: {name} has values in [{images.min():.4g}, {images.max():.4g}]; SSIM here assumes "
                "images in [0, 1] (data range 1): clamp them or map them there first"
            )
    n, channels = x.shape[:2]
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (N, C, H + 10, W + 10)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    moments = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), _gaussian_window(channels), groups=channels)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(n)  # each (N, C, H, W)
    var_x = (e_xx - mu_x**2).clamp(min=0.0)
    var_y = (e_yy - mu_y**2).clamp(min=0.0)
    cov = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(start_dim=1).mean(dim=1)  # (N,)
