"""The metrics a report tabulates: the report columns of the metric registry (`vaebench.evaluation.metrics`).

Column names are the summary.json keys of the evaluated split without the split prefix
("test/bpd_elbo" -> "bpd_elbo"), so a report reads the same whichever split `eval.split` chose; the
split is kept in the runs table's `eval_split` column. A metric registered with report=True becomes a
column of the variants and effects tables and a `--rank-by` choice, with no change here.
"""

from __future__ import annotations

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

__all__ = ["ACTIVE_UNITS", "BPD_ELBO", "BPD_IW", "BY_KEY", "KL", "MUTUAL_INFO", "PSNR", "RECON_BPD",
           "REPORT_METRICS", "Metric", "metric"]  # fmt: skip
