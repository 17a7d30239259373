"""The metrics a report tabulates: their column names, labels, units, formats and which way is better.

Column names are the summary.json keys of the evaluated split without the split prefix
("test/bpd_elbo" -> "bpd_elbo"), so a report reads the same whichever split `eval.split` chose; the
split is kept in the runs table's `eval_split` column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # column of the runs table
    label: str  # short header for tables and plot axes, with the unit
    fmt: str  # format spec of one value
    higher_is_better: bool | None  # None: neither (latent usage is descriptive, not a score)
    description: str = ""


BPD_ELBO = Metric("bpd_elbo", "bits/dim (−ELBO)", ".4f", False, "−ELBO at beta = 1 in bits per dimension")
BPD_IW = Metric("bpd_iw", "bits/dim (IW)", ".4f", False, "importance-weighted bound with K samples")
RECON_BPD = Metric("recon_bpd", "recon bits/dim", ".4f", False, "−E_q log p(x|z) in bits per dimension")
KL = Metric("kl", "KL (nats)", ".2f", None, "KL(q(z|x) || p(z)) in nats per image")
ACTIVE_UNITS = Metric("active_units", "active units", ".1f", None, "dims with Var_x E_q[z|x] > threshold")
MUTUAL_INFO = Metric("mutual_info", "MI (nats)", ".3f", None, "minibatch estimate of I(x; z) in nats")
PSNR = Metric("psnr", "PSNR (dB)", ".2f", True, "PSNR of the posterior-mean reconstruction")

# The columns of the per-variant table and the axis-effect table, in reading order.
REPORT_METRICS: tuple[Metric, ...] = (BPD_ELBO, BPD_IW, KL, ACTIVE_UNITS, MUTUAL_INFO, RECON_BPD, PSNR)
BY_KEY: dict[str, Metric] = {m.key: m for m in REPORT_METRICS}


def metric(key: str) -> Metric:
    """The Metric for a runs-table column; unknown columns get a plain description (lower is better)."""
    return BY_KEY.get(key, Metric(key, key, ".4g", False))
