"""Run folders -> tidy tables: one row per run (axes as columns) and a long table of training curves.

Every folder that looks like a run (it holds spec.yaml, metrics.jsonl, summary.json, DONE, env.json or
checkpoints/, or is named seed<k>) becomes a `RunRecord` with a status, so that nothing is dropped
silently and nothing crashes the report:

    finished    DONE marker present and the files readable (metrics may still be missing: not evaluated)
    evaluating  no DONE marker, but training logged its last step: the final evaluation is running, or
                was interrupted (rerunning `vaebench run` goes straight to it)
    unfinished  no DONE marker: training stopped (Ctrl-C, a crash, a non-finite loss) or is still going
    diverged    a logged loss or evaluated bound is non-finite (null in the JSON files)
    broken      spec.yaml missing or unreadable, or a JSON file corrupt
    replaced    a `seed<k>.replaced-<time>` folder kept by `vaebench run --force`

Only finished runs enter the tables and plots; the others are listed in the report with their reason.
The W&B loader (`vaebench.report.wandb_api`) builds the same records from the W&B public API.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from rich.console import Console
from rich.progress import track

from vaebench.config.experiments import load_experiment
from vaebench.core.errors import UserError
from vaebench.report.columns import COMPARABLE, PROTOCOL
from vaebench.runs.document import read_run_document
from vaebench.runs.io import read_json
from vaebench.runs.metrics_log import read_metrics
from vaebench.runs.paths import RunPaths

Status = Literal["finished", "evaluating", "unfinished", "diverged", "broken", "replaced"]

# Columns of the runs table that are not axes; an axis with one of these names gets " (axis)" appended.
RUN_COLUMNS = ("run", "label", "experiment", "variant", "seed", "status", "reason")
_RUN_FILES = ("spec.yaml", "metrics.jsonl", "summary.json", "DONE", "env.json", "checkpoints")
_SEED_DIR = re.compile(r"^seed(\d+)$")
_REPLACED_DIR = re.compile(r"^seed(\d+)\.replaced-.+$")
_LOSS_KEYS = ("train/loss", "val/loss")


@dataclass
class RunRecord:
    """Everything the report knows about one run, whatever its status."""

    run: str  # the run folder (or W&B run path): the key of the run in every table
    experiment: str | None
    variant: str | None
    seed: int | None
    status: Status = "finished"
    reason: str = ""
    axes: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] | None = None  # the resolved spec tree of spec.yaml
    summary: dict[str, Any] = field(default_factory=dict)  # flat summary.json
    curves: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl rows
    per_dim: dict[str, list[Any]] = field(default_factory=dict)  # eval/<split>.json: kl_per_dim, ...
    eval_settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None  # env.json
    temperature: dict[str, Any] | None = None  # figures/temperature.json; None: not measured (older runs)
    local_dir: Path | None = None  # the folder on disk (write-up figures need its checkpoints)
    label: str = ""  # short name for tables: <experiment>/<variant>/seed<k> or the W&B run path

    @property
    def eval_split(self) -> str:
        return str(((self.spec or {}).get("eval") or {}).get("split", "test"))


@dataclass
class RunSet:
    """The loaded runs of one experiment as tables, with the order of variants and axis levels."""

    experiment: str
    source: str  # where the runs came from, for the report's first line
    records: list[RunRecord]
    runs: pd.DataFrame  # one row per run (every status); axes and metrics as columns
    curves: pd.DataFrame  # long: run, variant, seed, <axes>, step, metric, value (every run with a log)
    axes: list[str]  # axis columns of `runs`, in the experiment's order
    levels: dict[str, list[str]]  # axis column -> levels, the first being the reference of axis effects
    variants: list[str]  # variant names in the experiment's order

    @property
    def finished(self) -> pd.DataFrame:
        """The runs that enter tables and plots."""
        return self.runs[self.runs["status"] == "finished"]

    def record(self, run: str) -> RunRecord:
        return next(r for r in self.records if r.run == run)


# ----------------------------------------------------------------------------- finding run folders


def is_run_folder(path: Path) -> bool:
    """A folder `vaebench run` made (or started to make): it holds one of its files, or is named seed<k>."""
    return path.is_dir() and (
        bool(_SEED_DIR.match(path.name) or _REPLACED_DIR.match(path.name))
        or any((path / name).exists() for name in _RUN_FILES)
    )


def find_run_folders(roots: Sequence[Path]) -> list[Path]:
    """Every run folder under `roots` (a root may itself be a run folder), sorted, without duplicates.

    The search does not descend into run folders, so a run's own wandb/ or eval/ folders are not runs.
    """
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise UserError(
                f"{root} is not a folder. Pass the runs folder `vaebench run` wrote (default: runs/) "
                "or one run folder (runs/<experiment>/<variant>/seed<k>)."
            )
        for folder, subdirs, _ in os.walk(root):
            here = Path(folder)
            if is_run_folder(here):
                found.add(here.resolve())
                subdirs.clear()
            else:
                subdirs.sort()
    return sorted(found)


# ----------------------------------------------------------------------------- one run folder


def _from_path(path: Path) -> tuple[str | None, str | None, int | None]:
    """(experiment, variant, seed) from the layout runs/<experiment>/<variant>/seed<k> (spec unreadable)."""
    match = _SEED_DIR.match(path.name) or _REPLACED_DIR.match(path.name)
    if match is None:
        return None, None, None
    return path.parent.parent.name or None, path.parent.name or None, int(match.group(1))


def read_run_folder(path: Path) -> RunRecord:
    """Read one run folder into a RunRecord; a damaged folder gives status "broken" and the reason."""
    paths = RunPaths(Path(path))
    experiment, variant, seed = _from_path(paths.root)
    label = "/".join(paths.root.parts[-3:])
    record = RunRecord(str(paths.root), experiment, variant, seed, local_dir=paths.root, label=label)
    if _REPLACED_DIR.match(paths.root.name):
        record.status = "replaced"
        record.reason = f"kept by `vaebench run --force`; superseded by {paths.root.name.split('.')[0]}"
        return record
    try:
        _read_files(paths, record)
    except UserError as err:
        record.status, record.reason = "broken", str(err)
        return record
    classify(record, done=paths.done.exists())
    return record


def _read_files(paths: RunPaths, record: RunRecord) -> None:
    """Fill `record` from spec.yaml, metrics.jsonl, summary.json, eval/<split>.json and env.json."""
    if not paths.spec.is_file():
        raise UserError(
            f"no spec.yaml in {paths.root}: the run never started, or the file was deleted. Rerun "
            "`vaebench run` for this variant and seed: it restores spec.yaml from the run's checkpoint "
            "(a finished run is not retrained) or, without one, trains the run."
        )
    document = read_run_document(paths.spec)
    record.experiment = str(document.get("experiment", record.experiment))
    record.variant = str(document.get("variant", record.variant))
    seed = document.get("seed", record.seed)
    record.seed = int(seed) if isinstance(seed, int) else record.seed
    record.axes = {str(k): str(v) for k, v in (document.get("axes") or {}).items()}
    record.overrides = dict(document.get("overrides") or {})
    record.spec = document["spec"]

    record.curves = read_metrics(paths.metrics) if paths.metrics.exists() else []
    if paths.summary.exists():
        summary = read_json(paths.summary)
        if not isinstance(summary, dict):
            raise UserError(f"{paths.summary} should hold a JSON object, found {type(summary).__name__}.")
        record.summary = summary
    notes = []
    eval_file = paths.eval / f"{record.eval_split}.json"
    if eval_file.exists():
        try:
            document = read_json(eval_file)
            latest = document["results"][document["latest"]]
            record.per_dim = dict(latest.get("per_dim") or {})
            record.eval_settings = dict(latest.get("settings") or {})
        except (UserError, KeyError, TypeError) as err:
            notes.append(f"{eval_file.name} unreadable ({type(err).__name__}); no per-dimension statistics")
    record.temperature = _temperature_record(paths.figures / "temperature.json")
    if paths.env.exists():
        try:
            env = read_json(paths.env)
            record.env = env if isinstance(env, dict) else None
        except UserError:
            notes.append("env.json unreadable")
    record.reason = "; ".join(notes)


def _temperature_record(path: Path) -> dict[str, Any] | None:
    """The run's temperature-grid measurement (`vaebench.evaluation.figures.measure_temperature`), or None
    when the
    run folder has none (made before vaebench measured it) or it cannot be read: a figure's note, not a
    reason to list the run as broken."""
    try:
        record = read_json(path) if path.is_file() else None
    except UserError:
        return None
    return record if isinstance(record, dict) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def training_complete(record: RunRecord) -> bool:
    """Whether the metrics log reached the run's last step (train.steps, or train.epochs passes).

    Training logs a row at its last step before it checkpoints and evaluates, so a run without DONE
    whose log reached that step is in (or was stopped in) its final evaluation, not half trained.
    """
    if not record.curves:
        return False
    last = record.curves[-1]
    train = (record.spec or {}).get("train") or {}
    steps, epochs = train.get("steps"), train.get("epochs")
    if isinstance(steps, int) and isinstance(last.get("step"), int):
        return last["step"] >= steps
    if _finite(epochs) and _finite(last.get("epoch")):
        return last["epoch"] >= epochs * (1 - 1e-9)
    return False


def classify(record: RunRecord, done: bool) -> None:
    """Set the status of a readable run: diverged, unfinished or finished (with a note when not evaluated).

    Non-finite numbers are written as null by the run folder's JSON writer, so a null (or NaN) loss in
    metrics.jsonl, or a null bound in summary.json, means the run diverged.
    """
    notes = [record.reason] if record.reason else []
    for row in record.curves:
        bad = [k for k in _LOSS_KEYS if k in row and not _finite(row[k])]
        if bad:
            record.status = "diverged"
            record.reason = "; ".join([f"non-finite {bad[0]} at step {row.get('step')}", *notes])
            return
    split = record.eval_split
    bad_bounds = [k for k in (f"{split}/bpd_elbo", f"{split}/bpd_iw") if k in record.summary]
    bad_bounds = [k for k in bad_bounds if not _finite(record.summary[k])]
    if bad_bounds:
        record.status = "diverged"
        record.reason = "; ".join([f"non-finite {bad_bounds[0]} in summary.json", *notes])
        return
    if not done:
        step = record.curves[-1].get("step", 0) if record.curves else 0
        total = ((record.spec or {}).get("train") or {}).get("steps")
        of = f" of {total}" if total else ""
        if training_complete(record):
            record.status = "evaluating"
            record.reason = "; ".join(
                [
                    f"trained to its last step ({step}{of}), no DONE marker yet: evaluating (or the "
                    "evaluation was interrupted: rerun `vaebench run` to finish it)",
                    *notes,
                ]
            )
            return
        record.status = "unfinished"
        record.reason = "; ".join(
            [f"no DONE marker: stopped at step {step}{of} (rerun `vaebench run` to resume)", *notes]
        )
        return
    record.status = "finished"
    if not _finite(record.summary.get(f"{split}/bpd_elbo")):
        notes.append(f"not evaluated: no {split}/bpd_elbo in summary.json (run `vaebench evaluate`)")
    record.reason = "; ".join(notes)


# ----------------------------------------------------------------------------- tables


def _natural_key(level: str) -> tuple[int, float, str]:
    """Numbers by value, then names alphabetically: beta 0.5 < 1 < 4, batch 16 < 32."""
    try:
        return (0, float(level), "")
    except ValueError:
        return (1, 0.0, level)


def experiment_file_order(records: Iterable[RunRecord]) -> list[tuple[str, dict[str, str]]] | None:
    """Variants (name, axes) in the order of the experiment file the runs came from, if it still exists.

    env.json records the command line and folder of `vaebench run`; the file gives the order of variants
    and of each axis's levels (the first level is the reference of the axis effects). None when no run
    names a readable file of the same experiment: then levels are sorted naturally instead.
    """
    for rec in records:
        argv, cwd = (rec.env or {}).get("argv") or [], (rec.env or {}).get("cwd") or "."
        for arg in argv[1:]:
            if not str(arg).endswith((".yaml", ".yml")):
                continue
            path = Path(cwd) / str(arg)
            try:
                variants = load_experiment(path)
            except (UserError, OSError):
                continue
            if variants and variants[0].experiment == rec.experiment:
                return [(v.name, dict(v.axes)) for v in variants]
    return None


def _axis_column(axis: str) -> str:
    """The runs-table column of an axis; the axis "variant" (explicit variant lists) is the variant column."""
    if axis == "variant":
        return axis
    taken = (*RUN_COLUMNS, "eval_split", "step", "metric", "value")  # columns of runs.csv and curves.csv
    return f"{axis} (axis)" if axis in taken else axis


def run_row(rec: RunRecord, axis_columns: dict[str, str]) -> dict[str, Any]:
    """One row of the runs table: identity, status, axis levels, scalar metrics of the evaluated split."""
    row: dict[str, Any] = {
        "run": rec.run,
        "label": rec.label or rec.run,
        "experiment": rec.experiment,
        "variant": rec.variant,
        "seed": rec.seed,
        "status": rec.status,
        "reason": rec.reason,
    }
    for axis, column in axis_columns.items():
        row[column] = rec.variant if axis == "variant" else rec.axes.get(axis)
    split = rec.eval_split
    row["eval_split"] = split
    s = rec.summary
    row["step"] = s.get("step", rec.curves[-1].get("step") if rec.curves else None)
    for key, value in s.items():
        if key.startswith(f"{split}/") and (value is None or _finite(value)):
            row[key.removeprefix(f"{split}/")] = value
    # the quality scores' protocol id and whether they are comparable (not numbers, kept all the same)
    for key, kind in ((PROTOCOL, str), (COMPARABLE, bool)):
        if isinstance(s.get(f"{split}/{key}"), kind):
            row[key] = s[f"{split}/{key}"]
    if split != "val" and "val/bpd_elbo" in s:
        row["val_bpd_elbo"] = s["val/bpd_elbo"]
    if "best/val_loss" in s:
        row["best_val_loss"] = s["best/val_loss"]
    spec = rec.spec or {}
    row["loss.beta"] = (spec.get("loss") or {}).get("beta")
    row["model.latent_dim"] = (spec.get("model") or {}).get("latent_dim")
    weight = (spec.get("loss") or {}).get("perceptual_weight") or 0.0
    row["loss.perceptual_weight"] = weight
    row["perceptual_share"] = perceptual_share(rec.curves, weight)
    return row


def perceptual_share(curves: Sequence[dict[str, Any]], weight: float) -> float:
    """The perceptual term's share of the training loss at the last logged training row, in percent:
    100 * perceptual_weight * train/perceptual / train/loss (0 without the term; NaN when not logged).

    The report's bits/dim leave the perceptual term out, so a variant whose loss is mostly perceptual
    optimised something the likelihood columns do not show; this says how much.
    """
    if not weight:
        return 0.0
    for row in reversed(curves):
        term, loss = row.get("train/perceptual"), row.get("train/loss")
        if _finite(term) and _finite(loss) and loss != 0:
            return 100.0 * float(weight) * float(term) / float(loss)
    return math.nan


def curves_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Long table of every logged number: run, variant, seed, step, metric, value (null -> NaN)."""
    rows = []
    for rec in records:
        for logged in rec.curves:
            step = logged.get("step")
            if not isinstance(step, int):
                continue
            for key, value in logged.items():
                numeric = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                if key == "step" or not numeric:
                    continue
                value = math.nan if value is None else float(value)
                rows.append((rec.run, rec.variant, rec.seed, step, key, value))
    return pd.DataFrame(rows, columns=["run", "variant", "seed", "step", "metric", "value"])


def with_axis_columns(curves: pd.DataFrame, runs: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """`curves` with one column per axis (the run's level) after run, variant and seed, as in runs.csv,
    so that tables/curves.csv can be filtered and grouped by axis level without joining runs.csv."""
    extra = [a for a in axes if a not in curves.columns]
    if not extra:
        return curves
    levels = runs.drop_duplicates("run").set_index("run")[extra]
    joined = curves.join(levels, on="run")
    return joined[["run", "variant", "seed", *extra, "step", "metric", "value"]]


def make_run_set(records: list[RunRecord], experiment: str | None, source: str) -> RunSet:
    """Keep the records of one experiment and turn them into the runs and curves tables.

    experiment: the name to keep; None means the only experiment present (a UserError lists them if
    there are several).
    """
    if not records:
        raise UserError(
            f"No run folders found in {source}. Pass the folder `vaebench run` wrote (default: runs/), "
            "e.g. `vaebench report runs/`."
        )
    present = sorted({r.experiment for r in records if r.experiment})
    if experiment is None:
        if len(present) > 1:
            raise UserError(
                f"{source} holds runs of several experiments ({', '.join(present)}): choose one with "
                f"--experiment, e.g. --experiment {present[0]}."
            )
        experiment = present[0] if present else "runs"
    else:
        if experiment not in present:
            raise UserError(
                f"No runs of experiment {experiment!r} in {source}; it holds: {', '.join(present) or 'none'}."
            )
        records = [r for r in records if r.experiment in (experiment, None)]  # None: unreadable, kept

    file_order = experiment_file_order(records)
    known = [r for r in records if r.variant is not None]
    used = {a for r in known for a in r.axes}
    axis_names: list[str] = []
    for source_axes in [axes for _, axes in file_order or []] + [r.axes for r in known]:
        axis_names += [a for a in source_axes if a in used and a not in axis_names]
    axis_columns = {axis: _axis_column(axis) for axis in axis_names}

    # Variants and levels: experiment-file order when the file was found, natural order otherwise.
    seen = [r for r in known if r.status == "finished"] + [r for r in known if r.status != "finished"]
    variant_axes: dict[str, dict[str, str]] = {}
    for r in seen:
        variant_axes.setdefault(str(r.variant), r.axes)
    levels: dict[str, list[str]] = {}
    for axis in axis_names:
        run_levels = {axes[axis] for axes in variant_axes.values() if axis in axes}
        in_file = [axes[axis] for _, axes in file_order or [] if axes.get(axis) in run_levels]
        in_file = list(dict.fromkeys(in_file))
        levels[axis_columns[axis]] = in_file + sorted(run_levels - set(in_file), key=_natural_key)
    position = {axis: {level: i for i, level in enumerate(levels[axis_columns[axis]])} for axis in axis_names}
    file_rank = {name: i for i, (name, _) in enumerate(file_order or [])}
    ordered = sorted(
        variant_axes,
        key=lambda v: (
            file_rank.get(v, len(file_rank)),
            [position[a].get(variant_axes[v].get(a, ""), -1) for a in axis_names],
            v,
        ),
    )

    rows = [run_row(r, axis_columns) for r in records]
    runs = pd.DataFrame(rows)
    curves = with_axis_columns(curves_table(records), runs, list(axis_columns.values()))
    order = {name: i for i, name in enumerate(ordered)}
    runs = (
        runs.assign(_order=runs["variant"].map(order).fillna(len(order)))
        .sort_values(["_order", "variant", "seed", "run"], na_position="last", kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    return RunSet(
        experiment=experiment,
        source=source,
        records=records,
        runs=runs,
        curves=curves,
        axes=list(axis_columns.values()),
        levels=levels,
        variants=ordered,
    )


def load_runs(roots: Sequence[Path], experiment: str | None = None, console: Console | None = None) -> RunSet:
    """Read every run folder under `roots` (a progress bar on `console` when given) into a RunSet."""
    folders = find_run_folders(roots)
    records = [
        read_run_folder(folder)
        for folder in track(
            folders,
            description="loading runs",
            console=console,
            transient=True,
            disable=console is None or len(folders) < 2,
        )
    ]
    return make_run_set(records, experiment, ", ".join(str(r) for r in roots))
