"""Latent traversals labelled by the factor each unit captures: which generative factor a latent unit
encodes, and the decoded images as that unit alone moves.

`unit_factor_information` scores every (unit, factor) pair by the mutual information between the unit's
posterior mean, discretised into histogram bins as disentanglement_lib does for MIG, and the factor's
level, divided by the factor's entropy (0: the unit says nothing about the factor; 1: it determines
it). Mutual information, not correlation: a circular factor (a hue, an angle) is often encoded as its
cosine or sine, which is not correlated with the level's index but is informative about it.
`traversal_grid` decodes one row per unit: the unit set to a range of values, the others held at a
reference image's posterior mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import mutual_info_score
from torch import Tensor

from vaebench.model.vae import VAE

BINS = 20  # disentanglement_lib's default histogram bins for MIG's discretisation


@torch.no_grad()
def posterior_means(model: VAE, images: Tensor, batch_size: int = 256) -> Tensor:
    """(N, L) float32 posterior means E_q[z|x] of uint8 images (N, 3, H, W), on the CPU."""
    param = next(model.parameters())
    means = []
    for batch in images.split(batch_size):
        x = batch.to(param.device).float().div_(255.0)  # the k/255 grid the model was trained on
        means.append(model.encode(x)[0].float().cpu())
    return torch.cat(means)


def discretise(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(N,) values -> (N,) bin indices of an equal-width histogram of them (disentanglement_lib's
    `_histogram_discretize`, one column)."""
    edges = np.histogram(values, bins)[1]
    return np.digitize(values, edges[:-1])


def unit_factor_information(mu: Tensor, codes: Tensor, bins: int = BINS) -> Tensor:
    """(L, K) mutual information between each unit's binned posterior mean and each factor's level,
    over the factor's entropy: in [0, 1], nats over nats.

    mu: (N, L) posterior means; codes: (N, K) int64 factor levels of the same images. A factor with one
    level only in the sample (entropy 0) scores 0 for every unit.

    >>> codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]] * 8)
    >>> mu = torch.stack([codes[:, 1].float(), torch.zeros(32)], dim=1)  # z0 = factor 1, z1 constant
    >>> unit_factor_information(mu, codes).round(decimals=3).tolist()
    [[0.0, 1.0], [0.0, 0.0]]
    """
    z, c = mu.double().numpy(), codes.numpy()
    binned = [discretise(z[:, u], bins) for u in range(z.shape[1])]
    scores = np.zeros((z.shape[1], c.shape[1]))
    for k in range(c.shape[1]):
        entropy = mutual_info_score(c[:, k], c[:, k])
        if entropy <= 0:
            continue
        for u, b in enumerate(binned):
            scores[u, k] = mutual_info_score(c[:, k], b) / entropy
    return torch.from_numpy(scores)


@torch.no_grad()
def traversal_grid(model: VAE, z_ref: Tensor, units: Sequence[int], values: Tensor) -> Tensor:
    """Decoder means, one row per unit and one column per value: z = z_ref with z[unit] = values[row, col].

    z_ref: (L,) the posterior mean held for the other units; values: (len(units), C) the traversed
    unit's values. Returns (len(units) * C, 3, H, W) float images in [0, 1], row-major.
    """
    param = next(model.parameters())
    z = z_ref.to(param.device, param.dtype).repeat(len(units), values.shape[1], 1)  # (R, C, L)
    for row, unit in enumerate(units):
        z[row, :, unit] = values[row].to(z)
    return model.decode(z.flatten(0, 1))[0].clamp(0, 1)
