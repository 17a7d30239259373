"""Sample and reconstruction quality (eval.metrics): FID, KID, precision/recall, LPIPS, SSIM.

Each entry is computed only when eval.metrics names it (`requires`); all of them come from one pass of
`vaebench.evaluation.quality.scores` per evaluation (prior samples and posterior-mean reconstructions,
quantised to uint8, through the feature extractors), cached in the context. `quality_protocol` is the id
of everything the scores depend on (README "Sample and reconstruction quality"): scores with different
ids are not comparable, and the report never puts them in one column.
"""

from __future__ import annotations

from typing import Any

from vaebench.evaluation.metrics import Metric, register
from vaebench.evaluation.quality.scores import QUALITY_METRICS, quality_scores


def _score(key: str) -> Any:
    return lambda ctx: quality_scores(ctx)[key]


register(Metric(
    "fid", "FID", ".2f", False, _score("fid"),
    "Frechet Inception distance of prior samples to the evaluation split (Heusel et al. 2017)",
    row="FID (prior samples)", order=30, report=True, requires=("fid",),
))  # fmt: skip
register(Metric(
    "kid_mean", "KID", ".4f", False, _score("kid_mean"),
    "kernel Inception distance of prior samples (Binkowski et al. 2018): the mean over subsets",
    row="KID, mean over subsets", order=31, report=True, requires=("kid",),
))  # fmt: skip
register(Metric(
    "kid_std", "KID std", ".4f", None, _score("kid_std"),
    "standard deviation of KID over its subsets (not a standard error of the mean)",
    row="KID, std over subsets", order=32, requires=("kid",),
))  # fmt: skip
register(Metric(
    "recon_fid", "recon FID", ".2f", False, _score("recon_fid"),
    "FID of posterior-mean reconstructions to their inputs", row="FID (reconstructions)", order=33,
    report=True, requires=("recon_fid",),
))  # fmt: skip
register(Metric(
    "precision", "precision", ".3f", True, _score("precision"),
    "improved precision (Kynkaanniemi et al. 2019, k = 3, VGG16 fc2): share of samples on the data "
    "manifold (fidelity)", order=34, report=True, requires=("precision_recall",),
))  # fmt: skip
register(Metric(
    "recall", "recall", ".3f", True, _score("recall"),
    "improved recall (k = 3, VGG16 fc2): share of the data inside the samples' manifold (diversity)",
    order=35, report=True, requires=("precision_recall",),
))  # fmt: skip
register(Metric(
    "lpips", "LPIPS", ".4f", False, _score("lpips"),
    "LPIPS (VGG, lin heads v0.1) of posterior-mean reconstructions to their inputs, mean over images",
    order=36, report=True, requires=("lpips",),
))  # fmt: skip
register(Metric(
    "ssim", "SSIM", ".4f", True, _score("ssim"),
    "SSIM (Gaussian window 11, sigma 1.5) of posterior-mean reconstructions, mean over images",
    order=37, report=True, requires=("ssim",),
))  # fmt: skip
for _key, _label, _fmt in (
    ("quality_protocol", "quality protocol", ""),  # fmt "": not a number (a sweep cannot optimise it)
    ("quality_comparable", "pretrained weights", ""),
    ("quality_samples", "prior samples", "d"),
    ("quality_reference_images", "reference images", "d"),
):
    register(Metric(
        _key, _label, _fmt, None, _score(_key), "see vaebench.evaluation.quality.protocol", order=38,
        requires=QUALITY_METRICS,
    ))  # fmt: skip
