"""Sample and reconstruction quality: FID, KID, precision/recall, LPIPS, SSIM (README "Sample and
reconstruction quality").

The pipeline: `extractors` (torch-fidelity's Inception-v3 and VGG16, lpips's heads over the same VGG16,
weights from `vaebench.core.weights`), `statistics` (the estimators, float64, tested against closed
forms and torch-fidelity), `protocol` (what every score depends on, recorded with it, and the on-disk
cache of a split's reference features), `scores` (one evaluation's samples, reconstructions and scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaebench.core.errors import UserError
from vaebench.core.weights import verified_weights

WEIGHTS_FOR_METRIC: dict[str, str] = {
    "fid": "inception",
    "kid": "inception",
    "recon_fid": "inception",
    "precision_recall": "vgg16",
    "lpips": "vgg16",
}
"""The pretrained weights (`vaebench.core.weights.WEIGHTS`) each eval.metrics name needs; ssim needs none."""
PATH_FIELDS: dict[str, str] = {"inception": "inception_path", "vgg16": "vgg_path"}
"""The eval.quality field that may name each weights file instead of the torch hub cache."""


def required_weights(eval_spec: Any) -> list[tuple[str, Path | None, str]]:
    """(weights name, the spec's path or None for the hub cache, the spec fields that ask) for each weights
    file eval.metrics needs under eval.quality.weights = pretrained; [] under random weights."""
    quality = eval_spec.quality
    if quality.weights != "pretrained":
        return []
    needed: dict[str, list[str]] = {}
    for name in eval_spec.metrics:
        if name in WEIGHTS_FOR_METRIC:
            needed.setdefault(WEIGHTS_FOR_METRIC[name], []).append(name)
    required = []
    for weights, metrics in needed.items():
        path = getattr(quality, PATH_FIELDS[weights])
        purpose = f"eval.metrics = [{', '.join(metrics)}]"
        if path is not None:
            purpose += f" with eval.quality.{PATH_FIELDS[weights]} = {path}"
        required.append((weights, None if path is None else Path(path), purpose))
    return required


def check_required_weights(eval_spec: Any) -> None:
    """Check every weights file eval.metrics needs (`required_weights`) against its pinned hash: a
    UserError naming the file, where it was looked for and `vaebench weights fetch NAME` otherwise.

    Called before anything slow (the run's first training step, a model's loading); downloads nothing.
    """
    errors: list[tuple[str, UserError]] = []
    for name, path, purpose in required_weights(eval_spec):
        try:
            verified_weights(name, path, purpose)
        except UserError as error:
            errors.append((name, error))
    if len(errors) == 1:
        raise errors[0][1]
    if errors:  # one message, one command for every file that is missing or wrong
        names = " ".join(name for name, _ in errors)
        raise UserError(
            f"{errors[0][1]} The {', '.join(name for name, _ in errors[1:])} weights are missing or wrong "
            f"too: `vaebench weights fetch {names}` fetches them all (`vaebench weights list` shows each)."
        )
