"""Likelihood bounds of 8-bit images in bits per dimension (see `vaebench.evaluation.evaluate`'s
docstring)."""

from __future__ import annotations

from vaebench.evaluation.metrics import EvalContext, Metric, register

register(Metric(
    "bpd_iw", "bits/dim (IW)", ".4f", False, lambda c: -c.mean("iw") * c.to_bpd,
    "importance-weighted bound -L_K with K = iw_samples (Burda et al. 2015)", "bits/dim",
    row="bits/dim, IW bound", order=2, report=True,
))  # fmt: skip
register(Metric(
    "bpd_elbo", "bits/dim (−ELBO)", ".4f", False, lambda c: -c.mean("elbo") * c.to_bpd,
    "−ELBO at beta = 1 in bits per dimension, whatever beta or objective trained", "bits/dim",
    row="bits/dim, -ELBO", order=1, report=True,
))  # fmt: skip
register(Metric(
    "iw_samples", "IW samples K", "d", None, lambda c: c.iw_samples,
    "K of the importance-weighted bound", row="IW samples K", order=10,
))  # fmt: skip


def _recon_bpd(ctx: EvalContext) -> float:
    return -ctx.mean("recon_log_prob") * ctx.to_bpd


register(Metric(
    "recon_bpd", "recon bits/dim", ".4f", False, _recon_bpd,
    "−E_q log p(x|z) in bits per dimension (the ELBO's sample)", "bits/dim",
    row="reconstruction (bits/dim)", order=6, report=True,
))  # fmt: skip
