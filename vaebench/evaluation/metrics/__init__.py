"""Evaluation metrics as a registry: a function of the evaluation's per-image numbers plus metadata.

Everything about a metric lives in its registry entry: how it is computed from one evaluation pass
(`EvalContext`), its label and units, which way is better, and whether it is a report column. From
the registry derive: the keys `vaebench.evaluation.evaluate` writes ("<split>/<key>" in summary.json and
eval/<split>.json), the rows of `vaebench evaluate`'s table, the choices of `vaebench report
--rank-by` and the report's columns (`vaebench.report.columns`). Every module here is imported with
the package, so a new metric (FID, say, computed from `ctx.model` and `ctx.dataset`) is one new file.

Import rule for entries: torch, `vaebench.evaluation.estimators`, `vaebench.model.likelihoods` and this
package.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from vaebench.core.sections import import_entries, register_entry
from vaebench.evaluation.estimators import MutualInformation, active_units, mutual_information_batched

SPLITS = ("train", "val", "test")


@dataclass
class EvalContext:
    """One evaluation pass over a split, what every metric is computed from.

    per_image: (N,) float64 tensors, nats unless said: "elbo", "recon_log_prob" (log p(x|z) of the ELBO's
    sample), "kl", "iw" (log of the K-sample IW estimate) and "mse" (of the posterior-mean reconstruction,
    [0, 1] pixels). mu, logvar: (N, L) fp32 posteriors; kl_per_dim: (L,) mean KL per dimension, nats.
    """

    split: str
    per_image: dict[str, Tensor]
    mu: Tensor
    logvar: Tensor
    kl_per_dim: Tensor
    num_dims: int  # D = 3 * H * W
    iw_samples: int
    active_threshold: float
    mi_batch_size: int  # requested; the estimator uses min(this, N)
    mi_generator: torch.Generator
    model: Any = (
        None  # the evaluated model, its dataset and device: for metrics that need a pass of their own
    )
    dataset: Any = None
    device: torch.device | None = None
    eval_spec: Any = None  # the run's EvalSpec: eval.metrics turns optional metrics on, eval.quality
    data_spec: Any = None  # the run's data section (the quality protocol records its crop and size)
    progress: Any = None  # a core.progress.Reporter, for metrics with a long pass of their own
    extra: dict[str, Any] = field(default_factory=dict)  # what one metric computes for another

    @property
    def requested(self) -> tuple[str, ...]:
        """The optional metrics eval.metrics asks for (fid, kid, ...)."""
        return tuple(self.eval_spec.metrics) if self.eval_spec is not None else ()

    @property
    def num_images(self) -> int:
        return int(self.mu.shape[0])

    @property
    def to_bpd(self) -> float:
        """Nats per image -> bits per dimension."""
        return 1.0 / (self.num_dims * math.log(2.0))

    def mean(self, key: str) -> float:
        return float(self.per_image[key].mean())

    @cached_property
    def active(self) -> tuple[int, Tensor]:
        """(active dims, Var_x E_q[z_d|x] (L,)) at the active threshold."""
        return active_units(self.mu, self.active_threshold)

    @cached_property
    def mutual_information(self) -> MutualInformation:
        batch = min(self.mi_batch_size, self.num_images)
        return mutual_information_batched(self.mu, self.logvar, batch, self.mi_generator)


@dataclass(frozen=True)
class Metric:
    key: str  # "<split>/<key>" in summary.json; the report's column
    label: str  # short header with the unit, for the report's tables and plot axes
    fmt: str  # format spec of one value
    higher_is_better: bool | None  # None: neither (latent usage describes, it does not score)
    compute: Callable[[EvalContext], Any] | None = None  # None: recorded by `evaluate_run` itself
    description: str = ""
    units: str = ""
    row: str = ""  # the label in `vaebench evaluate`'s table (default: label)
    order: float = 100.0  # reading order in tables
    report: bool = False  # a column of the report's tables and a `--rank-by` choice
    splits: tuple[str, ...] = SPLITS  # the evaluation splits it is computed for
    requires: tuple[str, ...] = ()  # computed only when eval.metrics lists one of these (costly metrics)
    # computed only for runs this holds of, from their data and eval sections (e.g. data with factors,
    # eval.probes.enabled on CelebA): decidable from the spec alone, so a sweep knows the keys a run writes
    applies_to: Callable[[Any, Any], bool] | None = None

    @property
    def row_label(self) -> str:
        return self.row or self.label


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric to the registry (called by its module at import time)."""
    return register_entry(METRICS, metric.key, metric, "the metric key")


def ordered() -> list[Metric]:
    return sorted(METRICS.values(), key=lambda m: m.order)


def report_metrics() -> tuple[Metric, ...]:
    """The report's columns and the `--rank-by` choices, in reading order."""
    return tuple(m for m in ordered() if m.report)


def metric(key: str) -> Metric:
    """The Metric of a key; unknown keys get a plain description (lower is better)."""
    return METRICS.get(key, Metric(key, key, ".4g", False))


def compute_metrics(ctx: EvalContext) -> dict[str, Any]:
    """Every registered metric for the split of `ctx`: {"<split>/<key>": value}, in reading order."""
    return {
        f"{ctx.split}/{m.key}": m.compute(ctx)
        for m in ordered()
        if m.compute is not None
        and ctx.split in m.splits
        and (not m.requires or not set(m.requires).isdisjoint(ctx.requested))
        and (m.applies_to is None or m.applies_to(ctx.data_spec, ctx.eval_spec))
    }


import_entries(__name__, __path__)
