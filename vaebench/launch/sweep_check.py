"""What a sweep's runs train and log, checked against what the sweep records and optimises.

Two checks keep a sweep honest:

- `check_trains_sweep_params`: `vaebench run` under a sweep (`vaebench sweep` or `wandb agent`) trains
  exactly the parameters the sweep recorded for it, or stops before training: a command without ${args},
  or one that sets a parameter again after it, would otherwise train the experiment's own values while
  state.json and the W&B run show the sweep's.
- `check_metric`: the sweep's `metric` is a key its runs write to summary.json (`summary_metrics`,
  derived from the objective and metric registries and the run's spec), and an adaptive search does not
  select on the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaebench.config.experiments import apply_overrides, validate_run_spec
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.evaluation.metrics import ordered as ordered_metrics
from vaebench.launch.sweep_file import sweep_run_params, sweep_run_suffix
from vaebench.objectives import loss_terms

# summary.json's train/ keys besides the objective's terms (train.py's rows)
SCHEDULE_KEYS = ("train/beta", "train/kl_weight", "train/bpd_elbo", "train/grad_norm")
COMMAND_HINT = (
    "the sweep's command must pass the parameters with ${args} (e.g. `command: [${env}, vaebench, run, "
    "EXPERIMENT, ${args}]`) and not set them again after it (--set, --seed, --key=value)"
)


def summary_metrics(spec: RunSpec) -> list[str]:
    """The metric keys a finished run of `spec` writes to summary.json: what a sweep's metric can name.

    Validation first (what a search should select on), then best/val_loss, the final evaluation's
    "<eval.split>/<key>" for every scalar metric of the registry computed for that split (when
    eval.at_end), then the last training row. Mirrors `train.validate`, the trainer's rows,
    `runfolder.training_summary` and `evaluate.evaluate_run`; a test pins it against a real run.
    """
    terms = loss_terms(spec.loss)
    val = ["val/loss", *(f"val/{t}" for t in terms if t != "loss"), "val/bpd_elbo"]
    split = spec.eval.split
    evaluation = [
        f"{split}/{m.key}"
        for m in ordered_metrics()
        if m.fmt
        and split in m.splits  # fmt "": a list (kl_per_dim), not a number to optimise
        and (not m.requires or not set(m.requires).isdisjoint(spec.eval.metrics))  # eval.metrics asks
        and (
            m.applies_to is None or m.applies_to(spec.data, spec.eval)
        )  # the data has what it needs (factors)
    ]
    train = [*(f"train/{t}" for t in terms), *SCHEDULE_KEYS]
    return [*val, "best/val_loss", *(evaluation if spec.eval.at_end else []), *train]


# ----------------------------------------------------------------------------- one run of a sweep


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_sweep_run(runs: Sequence[tuple[str, RunSpec, int]], experiment: Path, named: bool) -> None:
    """`vaebench run` as one run of a sweep (`sweep_run_suffix`): stop (UserError) unless it trains one run
    (`named`: --suffix was given, so the folders are not named for this sweep run) with the parameters the
    sweep recorded for it (`check_trains_sweep_params`). Nothing to check outside a sweep.

    runs: (variant, spec, seed) of each run the command resolved; checked before anything is written.
    """
    in_sweep = sweep_run_suffix()
    if in_sweep and not named and len(runs) != 1:
        raise UserError(
            f"This is run {in_sweep} of a sweep, which is one run, but {experiment} gives {len(runs)} "
            "(variants x seeds): select one in the sweep's command with --variant NAME --seed K, or "
            "set a single seed with the seeds parameter (seeds: {values: [[0], [1]]})."
        )
    recorded = sweep_run_params()
    if recorded is not None:
        check_trains_sweep_params(*recorded, runs, in_sweep or "")


def check_trains_sweep_params(
    params: Mapping[str, Any], where: str, runs: Sequence[tuple[str, RunSpec, int]], sweep_run: str
) -> None:
    """Stop (UserError) unless each run of `runs` ((variant, spec, seed), what `vaebench run` resolved)
    has the value the sweep recorded for every parameter in `params` (`sweep_run_params`).

    A recorded value is compared after the spec's own validation (the sweep's 2 is the spec's 2.0), and
    `seeds` against the seed that actually trains (a --seed in the command would replace it).
    """
    for variant, spec, seed in runs:
        have = spec.model_dump(mode="json")
        wanted = validate_run_spec(
            apply_overrides(have, params), f"the parameters of sweep run {sweep_run} ({where})"
        ).model_dump(mode="json")
        wrong = []
        for key, value in params.items():
            resolved, expected = (
                ([seed], wanted["seeds"]) if key == "seeds" else (_lookup(have, key), _lookup(wanted, key))
            )
            if resolved != expected:
                wrong.append(f"{key} = {value!r} recorded, {resolved!r} resolved")
        if wrong:
            raise UserError(
                f"This is run {sweep_run} of a sweep, but `vaebench run` resolved other values for "
                f"{variant}/seed{seed} than the sweep recorded for it ({where}): {'; '.join(wrong)}. "
                f"Training it would mislabel the run, so nothing was trained: {COMMAND_HINT}."
            )


# ----------------------------------------------------------------------------- the sweep's metric


def check_metric(
    path: Any, config: Mapping[str, Any], points: Sequence[tuple[Mapping[str, Any], Sequence[RunSpec]]]
) -> list[str]:
    """Check the sweep's metric against what its runs log; return warnings (UserError for errors).

    points: (parameters, the specs `vaebench run` resolves for them) for parameter sets that span the
    sweep. The metric must be a summary.json key of every run (`summary_metrics`). On a test/ metric a
    bayes search or hyperband (`early_terminate`) picks runs by test data: an error. A random search
    only ranks its runs by it: a warning (README, Sweeps).
    """
    metric = (config.get("metric") or {}).get("name")
    if metric is None or not points:
        return []
    logged = [(point, [summary_metrics(s) for s in specs]) for point, specs in points]
    every = [keys for _, per_spec in logged for keys in per_spec]
    common = [k for k in every[0] if all(k in keys for keys in every)]
    if metric not in common:
        missing = [dict(point) for point, per_spec in logged if any(metric not in k for k in per_spec)]
        why = (
            "which `vaebench run` never logs for this sweep's runs"
            if len(missing) == len(logged)
            else f"which runs with the parameters {missing[0]} do not log"
        )
        raise UserError(
            f"{path}: `metric.name` is {metric!r}, {why}, so the sweep would have nothing to compare. "
            f"Name one of the keys every run writes to summary.json: {', '.join(common)}."
        )
    if not metric.startswith("test/"):
        return []
    val = "val/" + metric.removeprefix("test/")
    use = val if val in common else "val/bpd_elbo"
    goal = (config.get("metric") or {}).get("goal", "minimize")
    method = config.get("method")
    if method == "bayes" or "early_terminate" in config:
        how = "a bayes search proposes its runs" if method == "bayes" else "hyperband stops runs"
        raise UserError(
            f"{path}: `metric.name` is {metric!r}, and {how} by it, so the search selects on the test "
            "split and the test numbers of the runs it finds are optimistically biased. Select on validation "
            f"data, e.g. `metric: {{name: {use}, goal: {goal}}}`, and read the test numbers afterwards."
        )
    if method == "random":
        return [
            f"{path}: `metric.name` is {metric!r}: picking the best of a random search by it selects on "
            f"the test split, which biases that run's test numbers. Rank by {use} instead and read the "
            "test numbers of the run it picks."
        ]
    return []
