"""How close the posterior-mean reconstruction decode(mu) is to the image, on [0, 1] pixels."""

from __future__ import annotations

import math

from vaebench.evaluation.metrics import EvalContext, Metric, register


def _psnr(ctx: EvalContext) -> float:
    """10 log10(1 / MSE) of the split's mean MSE (torchmetrics' default reduction)."""
    mse = ctx.mean("mse")
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf


register(Metric(
    "recon_mse", "MSE", ".5f", False, lambda c: c.mean("mse"),
    "mean squared error of the posterior-mean reconstruction, [0, 1] pixels",
    row="MSE of mean reconstruction", order=12,
))  # fmt: skip
register(Metric(
    "psnr", "PSNR (dB)", ".2f", True, _psnr, "PSNR of the posterior-mean reconstruction", "dB",
    order=7, report=True,
))  # fmt: skip
