"""Linear probes of CelebA's attributes (eval.probes): balanced accuracy of a logistic regression per
attribute on posterior means, and the same probe on a random projection of the pixels as the baseline.

Computed only when eval.probes.enabled and the data is CelebA (`applies_to`); all of them come from one pass
of `vaebench.evaluation.probes` per evaluation, cached in the context. Its settings go to the evaluation's
record (eval/<split>.json, settings.probes).
"""

from __future__ import annotations

from typing import Any

from vaebench.evaluation.metrics import Metric, register
from vaebench.evaluation.probes import probe_scores, probes_apply


def _score(key: str) -> Any:
    return lambda ctx: probe_scores(ctx)[key]


register(Metric(
    "probe_balanced_accuracy", "probe bal. acc.", ".3f", True, _score("probe_balanced_accuracy"),
    "balanced accuracy of a logistic-regression probe on posterior means, mean over CelebA's attributes "
    "(0.5 is chance)", row="attribute probes, balanced accuracy", order=40, report=True,
    applies_to=probes_apply,
))  # fmt: skip
register(Metric(
    "probe_baseline_balanced_accuracy", "baseline bal. acc.", ".3f", True,
    _score("probe_baseline_balanced_accuracy"),
    "the same probes on a seeded Gaussian random projection of the pixels to as many dims as the code",
    row="  random-projection baseline", order=41, applies_to=probes_apply,
))  # fmt: skip
for _key, _label, _fmt in (
    ("probe_attribute_accuracy", "probe bal. acc. per attribute", ""),  # fmt "": a dict, no table row
    ("probe_baseline_attribute_accuracy", "baseline bal. acc. per attribute", ""),
    ("probe_train_images", "probe train images", "d"),
    ("probe_test_images", "probe test images", "d"),
):
    register(Metric(
        _key, _label, _fmt, None, _score(_key), "see vaebench.evaluation.probes", order=42,
        applies_to=probes_apply,
    ))  # fmt: skip
