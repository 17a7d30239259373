"""The queue of variant x seed runs of an experiment, trained one after the other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vaebench.errors import UserError
from vaebench.experiments import Variant
from vaebench.runfolder import run_dir
from vaebench.train import Device, Reporter, RunResult, train


@dataclass(frozen=True)
class PlannedRun:
    variant: Variant
    seed: int
    run_dir: Path


def plan_runs(variants: Sequence[Variant], runs_dir: Path, seeds: Sequence[int] = ()) -> list[PlannedRun]:
    """Every variant x seed: the variant's own seeds, or `seeds` when given (--seed)."""
    return [
        PlannedRun(v, seed, run_dir(runs_dir, v.experiment, v.name, seed))
        for v in variants
        for seed in (seeds or v.spec.seeds)
    ]


def preflight(plan: Sequence[PlannedRun]) -> None:
    """Check, before the first step of the first run, what a person must fix: data and VGG weights."""
    from vaebench.data import check_data
    from vaebench.perceptual import check_vgg_weights_available

    checked: set[str] = set()
    for item in plan:
        spec = item.variant.spec
        key = spec.data.model_dump_json()
        if key not in checked:
            check_data(spec.data)
            checked.add(key)
        if spec.loss.perceptual_weight > 0 and spec.loss.vgg_weights == "imagenet":
            check_vgg_weights_available()


def run_queue(
    plan: Sequence[PlannedRun], *, device: Device, force: bool, reporter: Reporter
) -> list[RunResult]:
    """Train each planned run in turn; a run that fails is recorded and the others still run.

    Expected failures (bad data, missing weights, non-finite loss) become `failed` results with their
    message. Ctrl-C stops the queue (the trainer has checkpointed the current run first).
    """
    results = []
    for item in plan:
        try:
            result = train(
                item.variant, item.seed, item.run_dir, device=device, force=force, reporter=reporter
            )
        except UserError as err:
            reporter.message(f"{item.run_dir}: failed: {err}")
            result = RunResult(item.run_dir, "failed", error=str(err))
        results.append(result)
        run_done = getattr(reporter, "run_done", None)
        if run_done is not None:
            run_done()
    return results
