"""The metrics a report tabulates: the report columns of the metric registry (`vaebench.evaluation.metrics`).

Column names are the summary.json keys of the evaluated split without the split prefix
("test/bpd_elbo" -> "bpd_elbo"), so a report reads the same whichever split `eval.split` chose; the
split is kept in the runs table's `eval_split` column. A metric registered with report=True becomes a
column of the variants and effects tables and a `--rank-by` choice, with no change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import get_args

from vaebench.config.spec import QualityMetric
from vaebench.evaluation.metrics import METRICS, Metric, metric, report_metrics

BPD_ELBO, BPD_IW, RECON_BPD = METRICS["bpd_elbo"], METRICS["bpd_iw"], METRICS["recon_bpd"]
KL, ACTIVE_UNITS, MUTUAL_INFO, PSNR = (
    METRICS["kl"],
    METRICS["active_units"],
    METRICS["mutual_info"],
    METRICS["psnr"],
)

# The columns of the per-variant table and the axis-effect table, in reading order.
REPORT_METRICS: tuple[Metric, ...] = report_metrics()
BY_KEY: dict[str, Metric] = {m.key: m for m in REPORT_METRICS}

# Sample/reconstruction quality: the report columns computed only when eval.metrics names them (FID,
# KID, ...). Their scores depend on a protocol (extractor, resize, crop, sample counts; the run's
# "quality_protocol" id), so the report shows them only for the runs of one protocol.
QUALITY_KEYS: frozenset[str] = frozenset(
    m.key for m in REPORT_METRICS if set(m.requires) & set(get_args(QualityMetric))
)
PROTOCOL, COMPARABLE = "quality_protocol", "quality_comparable"  # runs-table columns, not report metrics
NOT_COMPARABLE = "not comparable (random weights)"


def not_comparable_labels(metrics: Sequence[Metric]) -> list[Metric]:
    """`metrics` with each quality metric's label marked "(not comparable)" (the table's note says why: random
    weights; a short mark, since seven quality columns carry it): the scores
    of random Inception/VGG weights (eval.quality.weights: random) must never read as published ones."""
    return [replace(m, label=f"{m.label} (not comparable)") if m.key in QUALITY_KEYS else m for m in metrics]


__all__ = ["ACTIVE_UNITS", "BPD_ELBO", "BPD_IW", "BY_KEY", "COMPARABLE", "KL", "MUTUAL_INFO",
           "NOT_COMPARABLE", "PROTOCOL", "PSNR", "QUALITY_KEYS", "RECON_BPD", "REPORT_METRICS", "Metric",
           "metric", "not_comparable_labels"]  # fmt: skip
