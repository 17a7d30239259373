"""spec.yaml and summary.json: what a run is (its labels and resolved spec) and what it ended with."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vaebench.config.experiments import RunLabels
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.runs.io import (
    atomic_write_json,
    read_json,
    to_jsonable,
)


def run_document(labels: RunLabels, spec: RunSpec, seed: int) -> dict[str, Any]:
    """What spec.yaml holds: enough to rebuild the run (and the report's axes) without the experiment file."""
    return {
        "experiment": labels.experiment,
        "variant": labels.variant,
        "seed": seed,
        "axes": labels.axes,
        "overrides": labels.overrides,
        "spec": spec.model_dump(mode="json"),
    }


def training_summary(
    document: dict[str, Any], loop: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """summary.json's training keys: the run's names, last and best step, the last train/ and val/ values.

    document: spec.yaml's (`run_document`); loop: the trainer's state at the last step; rows: metrics.jsonl.
    """
    last_val = next((r for r in reversed(rows) if "val/loss" in r), {})
    return {
        "experiment": document["experiment"],
        "variant": document["variant"],
        "seed": document["seed"],
        "step": loop["step"],
        "best_step": loop.get("best_step"),
        "best/val_loss": loop["best_val"],
        **{k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("train/")},
        **{k: v for k, v in last_val.items() if k.startswith("val/")},
    }


def read_run_document(path: Path) -> dict[str, Any]:
    """The document of a run's spec.yaml (what `run_document` wrote): experiment, variant,
    seed, axes, overrides and the resolved `spec` mapping, unvalidated.

    Callers check that the file exists (what to advise when it does not depends on the command); an
    unreadable file, or one without a `spec` mapping, is a UserError naming it.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid YAML ({type(e).__name__}: {e}).") from None
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        raise UserError(f"{path} is not a spec.yaml written by `vaebench run` (no `spec` mapping).")
    return document


def update_summary(path: Path, new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `new` into the flat summary.json at `path` (created if missing) and return the result.

    Keys of `new` overwrite existing ones; all other keys survive, so an evaluation with other
    settings adds its keys without erasing earlier ones. The write is atomic. Not safe against two
    processes updating the same summary at the same instant (one of the two updates would be lost).
    """
    path = Path(path)
    current: dict[str, Any] = read_json(path) if path.exists() else {}
    if not isinstance(current, dict):
        raise UserError(f"{path} should hold a JSON object, found {type(current).__name__}; delete it.")
    current.update(to_jsonable(dict(new)))
    atomic_write_json(path, current)
    return current
