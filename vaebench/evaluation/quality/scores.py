"""One evaluation's quality scores (placeholder: implemented in the next commits)."""

from __future__ import annotations

from typing import Any, get_args

from vaebench.config.spec import QualityMetric

QUALITY_METRICS: tuple[str, ...] = get_args(QualityMetric)


def quality_scores(ctx: Any) -> dict[str, Any]:
    raise NotImplementedError("quality scores are not implemented yet")
