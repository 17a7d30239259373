"""`vaebench sweep`: a W&B sweep file run on this machine (or on SLURM) with no W&B server.

Before the first run, `check_sweep` refuses a sweep whose runs would not train or log what it records
(a command without ${args}, a metric the runs never write, a grid over a range). The search itself is
W&B's open-source sweep engine (the `sweeps` package: grid, random, bayes, hyperband early
termination), so one sweep file means the same search online and offline. This module does what W&B's
server and agent do around it:

1. ask the engine for the next parameters, given every run so far (random draws are seeded by the
   sweep's name and the run's index, so an interrupted sweep proposes the same values again);
2. run the sweep's `command` with the macros expanded as `wandb agent` expands them
   (`vaebench.launch.sweep_file.agent_command`), telling the run its name, parameters and runs folder through
   the environment (VAEBENCH_SWEEP_RUN, VAEBENCH_SWEEP_PARAMS, VAEBENCH_RUNS_DIR); `vaebench run` checks
   that it resolved those parameters, then trains it in `<runs dir>/<experiment>/<variant>+<sweep
   run>/seed<k>`;
3. read the result back from that run folder (summary.json for the metric, metrics.jsonl for
   hyperband's history), and record everything in the sweep's state folder.

State folder (default `sweeps-state/<sweep name>/`)::

    state.json      the sweep config (with --set constants), then one entry per run: name, params,
                    status, run folders, metric, exit code, times, log; rewritten atomically
    logs/<run>.log  each run's output
    runs/           the run folders (unless --runs-dir)

Statuses: running, finished, failed, stopped (early-terminated by hyperband), interrupted (Ctrl-C).
Rerunning the same command continues the sweep: finished, failed and stopped runs are kept (and
count towards --count), interrupted or still-"running" runs (the controller was killed) are started
again with the same parameters and resume from their checkpoints, then new runs are proposed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import itertools
import json
import math
import random
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.table import Table

from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.launch.sweep_check import check_metric
from vaebench.launch.sweep_file import (
    RUNS_DIR_ENV,
    SWEEP_PARAMS_ENV,
    SWEEP_RUN_ENV,
    agent_command,
    load_sweep,
    localize,
    plain,
    project_folder,
    run_arguments,
    sweep_name,
)
from vaebench.launch.workers import Board, Executor, Job, Outcome, error_line, run_pool
from vaebench.runs.io import atomic_write_json, read_json
from vaebench.runs.metrics_log import read_metrics
from vaebench.runs.paths import RunPaths

STATE_VERSION = 1
MAX_INITIAL_FAILURES = 3  # like `wandb agent`: a sweep whose first runs all fail is broken, not unlucky
HYPERBAND_EVERY_S = 2.0
INSTALL_HINT = (
    "`vaebench sweep` needs W&B's sweep engine, the `sweeps` package of the optional extra `.[sweeps]`. "
    "It pins numpy<2 but works with numpy 2, so install the extra, then the engine without its pins: "
    "pip install -e '.[sweeps]' && pip install --no-deps sweeps==0.3.0 (the README's install command "
    "does both)"
)
_SEED_DIR = re.compile(r"^seed\d+$")
# The parameter types the engine's grid accepts (sweeps/grid_search.py); it lists the int/q ranges itself.
GRID_TYPES = ("param_categorical", "param_single_value", "param_int_uniform", "param_quniform")
CHECKED_POINTS = 64  # parameter sets resolved before the first run; beyond, each value once
# `vaebench run`'s arguments -> (variant, spec, seed) of each run it would train (`cli.run_command_runs`)
RunResolver = Callable[[Sequence[str]], list[tuple[str, RunSpec, int]]]


def import_sweeps() -> ModuleType:
    """The `sweeps` package, without its pydantic deprecation warnings; if missing, how to install it.

    Run from this repository's root, `import sweeps` also finds the `sweeps/` folder of sweep files: a
    namespace package with no code, which Python imports only when the real package is not installed.
    That counts as missing, not as an engine without attributes.
    """
    try:
        with engine_quiet():
            import sweeps
    except ImportError as err:
        raise UserError(f"{INSTALL_HINT}.\n({type(err).__name__}: {err})") from None
    if getattr(sweeps, "__file__", None) is None:  # the namespace package of a folder named sweeps/
        del sys.modules["sweeps"]
        folders = ", ".join(str(p) for p in getattr(sweeps, "__path__", []))
        raise UserError(
            f"{INSTALL_HINT}.\n(`import sweeps` found only the folder {folders}, not the package.)"
        )
    return sweeps


def engine_available() -> bool:
    """Whether W&B's sweep engine is installed (a `sweeps/` folder on the path does not count)."""
    try:
        import_sweeps()
    except UserError:
        return False
    return True


@contextlib.contextmanager
def engine_quiet() -> Iterator[None]:
    """Silence the engine's own warnings (pydantic v1-style config, sklearn GP convergence): nothing a
    user of the sweep can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def seeded(name: str, index: int) -> Iterator[None]:
    """Seed Python's and numpy's global generators (which the engine draws from) for proposal `index`."""
    import numpy as np

    seed = int.from_bytes(hashlib.sha256(f"{name}/{index}".encode()).digest()[:4], "little")
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- checks before the first run


def check_sweep(
    engine: ModuleType,
    sweep_file: Path,
    sets: Mapping[str, Any] | None = None,
    resolve_run: RunResolver | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The sweep's config, checked before its first run, and warnings to show; UserError for errors.

    Checks: the file (`load_sweep`: its command passes the parameters), W&B's schema, that a grid has only
    parameters the engine can list, that the engine can propose a run, and, when the command runs
    `vaebench run` and `resolve_run` is given, that each parameter set spanning the sweep resolves to one
    run whose summary.json holds the sweep's metric (`sweepcheck.check_metric`). Nothing is written.
    """
    config = load_sweep(sweep_file, sets)
    with engine_quiet():
        violations = engine.schema_violations_from_proposed_config(config)
    if violations:
        raise UserError(
            f"{sweep_file} is not a valid W&B sweep config:\n" + "\n".join(f"  - {v}" for v in violations)
        )
    check_grid(engine, config, sweep_file)
    points = parameter_points(engine, config, sweep_file)
    if resolve_run is None or run_arguments(config["command"]) is None:
        return config, []  # not `vaebench run`: what the command logs is unknown here
    resolved = []
    with tempfile.TemporaryDirectory() as tmp:
        for point in points:
            argv = agent_command(
                config["command"], point, config.get("program"), args_json_file=Path(tmp) / "args.json"
            )
            args = run_arguments(localize(argv, project_folder(sweep_file))) or []
            try:
                runs = resolve_run(args)
            except UserError as err:
                raise UserError(
                    f"{sweep_file}: with the parameters {point}, the command's `vaebench run` would fail "
                    f"before training: {err}"
                ) from None
            if len(runs) != 1:
                raise UserError(
                    f"{sweep_file}: `command` gives {len(runs)} runs (variants x seeds) for the parameters "
                    f"{point}, but a sweep run is one training run: select one variant in the command with "
                    "--variant NAME, and one seed with the seeds parameter (seeds: {values: [[0], [1]]})."
                )
            resolved.append((point, [spec for _, spec, _ in runs]))
    return config, check_metric(sweep_file, config, resolved)


def check_grid(engine: ModuleType, config: Mapping[str, Any], sweep_file: Path) -> None:
    """A grid sweep lists every combination of its parameters' values: a range the engine cannot list
    (uniform, log-uniform, categorical with probabilities) is refused, naming the parameter."""
    if config["method"] != "grid":
        return
    with engine_quiet():
        hyper = importlib.import_module(f"{engine.__name__}.params").HyperParameter
        types = {key: hyper(key, spec).type for key, spec in config["parameters"].items()}
    for key, kind in types.items():
        if kind not in GRID_TYPES:
            spec = config["parameters"][key]
            raise UserError(
                f"{sweep_file}: parameter {key!r} ({spec}) is not a list of values, and a grid sweep runs "
                f"every combination of lists: give it `values`, e.g. `{key}: {{values: [0.5, 1, 2]}}` "
                "(or int_uniform / q_uniform bounds, which the grid lists itself), or search the range "
                "with method random or bayes."
            )


def parameter_points(engine: ModuleType, config: Mapping[str, Any], sweep_file: Path) -> list[dict[str, Any]]:
    """Parameter sets that span what the sweep's runs differ in: the engine's first proposal, with every
    combination of the listed `values` (each value once when there are more than CHECKED_POINTS).

    Asking the engine once also turns its errors into a message before any run starts.
    """
    try:
        with engine_quiet(), seeded(sweep_name(config, sweep_file), 0):
            first = engine.next_run(dict(config), [])
    except ValueError as err:
        raise UserError(f"{sweep_file}: W&B's sweep engine cannot run this sweep: {err}") from None
    base = {key: plain(value["value"]) for key, value in first.config.items()} if first else {}
    lists = {k: list(v["values"]) for k, v in config["parameters"].items() if "values" in v}
    if math.prod(len(v) for v in lists.values()) <= CHECKED_POINTS:
        combos = itertools.product(*lists.values())
        return [{**base, **dict(zip(lists, combo, strict=True))} for combo in combos]
    return [base, *({**base, key: value} for key, values in lists.items() for value in values)]


# ----------------------------------------------------------------------------- state


@dataclass
class SweepRunRecord:
    """One run of the sweep, as state.json holds it."""

    name: str
    params: dict[str, Any]
    status: str = "running"
    run_dirs: list[str] = field(default_factory=list)
    metric: float | None = None
    returncode: int | None = None
    started: str | None = None
    ended: str | None = None
    wall_s: float = 0.0
    log: str = ""
    error: str | None = None


@dataclass
class SweepState:
    path: Path  # state.json
    name: str
    sweep_file: str
    config: dict[str, Any]
    runs_dir: str
    runs: list[SweepRunRecord] = field(default_factory=list)

    @classmethod
    def open(
        cls, state_dir: Path, name: str, sweep_file: Path, config: dict[str, Any], runs_dir: Path
    ) -> SweepState:
        """The sweep's state: read from state_dir/state.json, or new. A different config is refused."""
        path = Path(state_dir) / "state.json"
        if not path.exists():
            return cls(path, name, str(sweep_file), config, str(runs_dir))
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise UserError(
                f"{path} is not a vaebench sweep state (version {STATE_VERSION}); use another --state-dir."
            )
        if data["config"] != config:
            old, new = data["config"], config
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            changed = [
                f"parameters.{k}"
                for k in sorted(old.get("parameters", {}).keys() | new.get("parameters", {}).keys())
                if old.get("parameters", {}).get(k) != new.get("parameters", {}).get(k)
            ]
            raise UserError(
                f"{path.parent} holds sweep {data['name']!r} with other settings "
                f"({', '.join(changed or keys)} "
                "differ, --set values included): continuing it would mix two searches. Rerun with the same "
                "sweep file and --set values, or give this sweep its own --state-dir."
            )
        runs = [SweepRunRecord(**r) for r in data["runs"]]
        return cls(path, data["name"], data["sweep_file"], data["config"], data["runs_dir"], runs)

    def save(self) -> None:
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "name": self.name,
                "sweep_file": self.sweep_file,
                "runs_dir": self.runs_dir,
                "config": self.config,
                "runs": [asdict(r) for r in self.runs],
            },
        )

    @property
    def metric_name(self) -> str | None:
        return (self.config.get("metric") or {}).get("name")

    @property
    def goal(self) -> str:
        return (self.config.get("metric") or {}).get("goal", "minimize")


# ----------------------------------------------------------------------------- run folders


def run_folders(runs_dir: Path, run_name: str) -> list[Path]:
    """The run folders that sweep run `run_name` made: <runs_dir>/<experiment>/<variant>+<name>/seed<k>."""
    return sorted(
        p for p in Path(runs_dir).glob(f"*/*+{run_name}/seed*") if p.is_dir() and _SEED_DIR.match(p.name)
    )


def metric_history(folder: Path, metric: str) -> list[dict[str, float]]:
    """The metric's logged values, oldest first, as the engine wants a run's history ([{metric: value}])."""
    path = RunPaths(folder).metrics
    if not path.exists():
        return []
    try:
        rows = read_metrics(path)
    except UserError:
        return []
    return [{metric: row[metric]} for row in rows if isinstance(row.get(metric), (int, float))]


def summary_metric(folders: list[Path], metric: str | None) -> float | None:
    """The metric from the folders' summary.json (their mean when a run made several), else None."""
    if metric is None:
        return None
    values = []
    for folder in folders:
        paths = RunPaths(folder)
        if paths.summary.exists():
            value = read_json(paths.summary).get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.append(float(value))
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- the controller


class LocalSweep:
    """The controller of one sweep: proposes runs, starts them through an executor, records results."""

    def __init__(
        self,
        sweep_file: Path,
        *,
        sets: Mapping[str, Any] | None = None,
        count: int | None = None,
        state_dir: Path | None = None,
        runs_dir: Path | None = None,
        retry_failed: bool = False,
        resolve_run: RunResolver | None = None,
    ) -> None:
        self.engine = import_sweeps()
        config, self.warnings = check_sweep(self.engine, sweep_file, sets, resolve_run)
        name = sweep_name(config, sweep_file)
        self.state_dir = Path(state_dir or Path("sweeps-state") / name).resolve()
        self.runs_dir = Path(runs_dir or self.state_dir / "runs").resolve()
        self.project = project_folder(sweep_file)
        self.state = SweepState.open(self.state_dir, name, Path(sweep_file), config, self.runs_dir)
        self.limit = self._limit(config, count)
        self.retry = [
            r
            for r in self.state.runs
            if r.status in ("running", "interrupted") or (retry_failed and r.status == "failed")
        ]
        self.started = 0  # runs started by this invocation (new or resumed)
        self.exhausted = False  # the engine has no parameters left (a grid with every point run)
        self.ended_here: list[str] = []  # statuses of runs ended by this invocation, in order
        self.gave_up = False
        self._last_tick = 0.0
        self._histories: dict[str, list[dict[str, float]]] = {}

    @staticmethod
    def _limit(config: Mapping[str, Any], count: int | None) -> float:
        caps = [c for c in (count, config.get("run_cap")) if c is not None]
        if not caps and config["method"] != "grid":
            raise UserError(
                f"A {config['method']} sweep never runs out of parameters: give --count N "
                "(or run_cap in the sweep file)."
            )
        return min(caps) if caps else math.inf

    # -- what the pool calls

    def next_job(self) -> Job | None:
        if self.retry:
            record = self.retry.pop(0)
        else:
            if self.gave_up or self.exhausted or len(self.state.runs) >= self.limit:
                return None
            params = self.propose()
            if params is None:
                self.exhausted = True
                return None
            record = SweepRunRecord(f"{self.state.name}-{len(self.state.runs) + 1:03d}", params)
            self.state.runs.append(record)
        self.started += 1
        log = self.state_dir / "logs" / f"{record.name}.log"
        record.status, record.started, record.log, record.error = "running", _now(), str(log), None
        self.state.save()
        argv = agent_command(
            self.state.config["command"],
            record.params,
            self.state.config.get("program"),
            args_json_file=self.state_dir / "logs" / f"{record.name}.json",
        )
        env = {
            SWEEP_RUN_ENV: record.name,
            SWEEP_PARAMS_ENV: json.dumps(record.params),  # `vaebench run` checks that it trains these
            RUNS_DIR_ENV: str(self.runs_dir),
            "VAEBENCH_QUIET": "1",
        }
        return Job(record.name, localize(argv, self.project), log, env)

    def propose(self) -> dict[str, Any] | None:
        """The engine's next parameters given every run so far, as plain Python values."""
        runs = [self.engine_run(r) for r in self.state.runs]
        with engine_quiet(), seeded(self.state.name, len(self.state.runs)):
            suggestion = self.engine.next_run(self.state.config, runs)
        if suggestion is None:
            return None
        return {key: plain(value["value"]) for key, value in suggestion.config.items()}

    def engine_run(self, record: SweepRunRecord) -> Any:
        """A run as the engine sees it: W&B's config layout, state, summary metric and history."""
        state = {"finished": "finished", "stopped": "finished", "failed": "failed"}.get(
            record.status, "running"
        )
        metric = self.state.metric_name
        summary = {metric: record.metric} if metric and record.metric is not None else {}
        with engine_quiet():
            return self.engine.SweepRun(
                name=record.name,
                state=state,
                config={k: {"value": v} for k, v in record.params.items()},
                summary_metrics=summary,
                history=self.history(record),
            )

    def history(self, record: SweepRunRecord) -> list[dict[str, float]]:
        metric = self.state.metric_name
        if metric is None:
            return []
        if record.name in self._histories:
            return self._histories[record.name]
        folders = run_folders(self.runs_dir, record.name)
        rows = metric_history(folders[0], metric) if folders else []
        if record.status != "running":
            self._histories[record.name] = rows  # an ended run's history no longer changes
        return rows

    def on_done(self, outcome: Outcome) -> tuple[str, str]:
        record = next(r for r in self.state.runs if r.name == outcome.job.name)
        folders = run_folders(self.runs_dir, record.name)
        record.run_dirs = [str(f) for f in folders]
        record.returncode, record.ended = outcome.returncode, _now()
        record.wall_s = round(record.wall_s + outcome.wall_s, 1)
        record.metric = summary_metric(folders, self.state.metric_name)
        if outcome.stopped == "interrupted":
            record.status, note = "interrupted", "interrupted; rerun to resume"
        elif outcome.stopped == "early-terminated":
            record.status, note = "stopped", "stopped early by hyperband"
        elif outcome.returncode == 0 and folders and all(RunPaths(f).done.exists() for f in folders):
            record.status = "finished"
            note = "" if record.metric is not None else f"no {self.state.metric_name} in summary.json"
        else:
            record.status = "failed"
            if outcome.returncode == 0:
                note = (
                    "the command made no run folder "
                    f"{self.runs_dir}/<experiment>/<variant>+{record.name}/seed<k>: "
                    "does the sweep's command run `vaebench run`?"
                )
            else:
                note = error_line(outcome.job.log) or f"exit status {outcome.returncode}"
        record.error = note or None
        self._histories.pop(record.name, None)
        self.state.save()
        if outcome.stopped != "interrupted":
            self.ended_here.append(record.status)
            first = self.ended_here[:MAX_INITIAL_FAILURES]
            if len(first) == MAX_INITIAL_FAILURES and all(s == "failed" for s in first) and not self.gave_up:
                self.gave_up = True  # no new runs; the running ones finish
        if record.metric is not None and not note:
            note = f"{self.state.metric_name} = {record.metric:.4f}"
        return record.status, note

    def on_tick(self) -> list[str]:
        """Names of running runs hyperband says to stop (none without `early_terminate`)."""
        if (
            "early_terminate" not in self.state.config
            or time.monotonic() - self._last_tick < HYPERBAND_EVERY_S
        ):
            return []
        self._last_tick = time.monotonic()
        runs = [self.engine_run(r) for r in self.state.runs]
        with engine_quiet():
            to_stop = self.engine.stop_runs(self.state.config, runs)
        return [r.name for r in to_stop]

    def run(self, executor: Executor, slots: list[str | None], board: Board) -> SweepState:
        """Run the sweep to its end (count reached, grid exhausted, or the first runs all failed)."""
        run_pool(self.next_job, executor, slots, self.on_done, board, on_tick=self.on_tick)
        return self.state


# ----------------------------------------------------------------------------- presentation


def sweep_table(state: SweepState) -> Table:
    """One row per run: its searched parameters, status, metric and run folder; the best one marked."""
    metric = state.metric_name
    searched = [k for k, v in state.config["parameters"].items() if set(v) != {"value"}]
    finished = [r for r in state.runs if r.metric is not None and r.status in ("finished", "stopped")]
    sign = -1 if state.goal == "maximize" else 1
    best = min(finished, key=lambda r: sign * r.metric).name if finished else None
    table = Table(
        title=f"sweep {state.name}: {len(state.runs)} runs, {metric or 'no metric'} ({state.goal})",
        header_style="bold",
    )
    table.add_column("run", style="cyan", no_wrap=True)
    for key in searched:
        table.add_column(key, justify="right")
    table.add_column("status")
    table.add_column(metric or "metric", justify="right")
    table.add_column("time", justify="right")
    table.add_column("run folder / error", overflow="fold")
    colours = {
        "finished": "green",
        "failed": "red",
        "stopped": "yellow",
        "interrupted": "yellow",
        "running": "cyan",
    }
    for r in state.runs:
        cells = [_fmt(r.params.get(k)) for k in searched]
        value = f"{r.metric:.4f}" if r.metric is not None else "-"
        if r.name == best:
            value = f"[bold]{value} (best)[/]"
        where = r.error if r.status == "failed" else ", ".join(r.run_dirs) or "-"
        colour = colours.get(r.status, "")
        table.add_row(r.name, *cells, f"[{colour}]{r.status}[/]", value, f"{r.wall_s:.0f} s", where)
    return table


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
