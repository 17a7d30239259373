"""Datasets whose images are rendered from known discrete factors: what the disentanglement metrics need.

disentanglement_lib's metrics (MIG, DCI, SAP, FactorVAE) draw fresh observations from the ground-truth
process: factor codes sampled uniformly, the images rendered from them, and (FactorVAE) images with one
factor held fixed. A `FactorSource` is that process; `factor_source(spec)` gives one for the data a spec
describes, or None when its factors are unknown or continuous (CelebA; the synthetic set's default mode).
A new factor dataset plugs in by returning its own source here.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from vaebench.data.spec import DataSpec, SyntheticDataSpec
from vaebench.data.synthetic import DiscreteFaces


class FactorSource(Protocol):
    factor_names: tuple[str, ...]  # the factors the scores use, in column order
    factor_sizes: tuple[int, ...]  # the number of discrete values of each

    def sample_codes(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, K) int64: each factor uniform over its values, independently."""
        ...

    def render_codes(self, codes: Tensor) -> Tensor:
        """(n, 3, S, S) uint8 images of the codes (n, K) int64."""
        ...


def factor_source(spec: DataSpec) -> FactorSource | None:
    """The factor process of the data `spec` describes; None when it has no discrete factors.

    Synthetic faces with data.factor_levels set: `DiscreteFaces` (11 factors of factor_levels values
    each, rendered at data.image_size). Continuous synthetic faces and CelebA: None.
    """
    if isinstance(spec, SyntheticDataSpec) and spec.factor_levels is not None:
        return DiscreteFaces(spec.factor_levels, spec.image_size)
    return None
