"""The `vaebench` command line: thin Typer commands that parse, print and call plain functions."""

from __future__ import annotations

import functools
import inspect
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import click
import typer
import yaml
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from vaebench.config.experiments import Variant, load_experiment, parse_overrides, select
from vaebench.core.console import UNBOUNDED, make_console, on_terminals
from vaebench.core.errors import UserError
from vaebench.evaluation.metrics import ordered as ordered_metrics
from vaebench.evaluation.metrics import report_metrics
from vaebench.launch.sweep_file import RUNS_DIR_ENV, run_arguments, sweep_run_suffix

if TYPE_CHECKING:
    from vaebench.config.spec import RunSpec, SlurmSpec


class CommandLine(TyperGroup):
    """The `vaebench` group: Typer's rich help and usage-error panels on a terminal, click's plain text,
    never wrapped, otherwise (a pipe, a CI or SLURM log).

    Rich draws a panel as wide as the console (80 columns, or $COLUMNS, without a terminal) and wraps
    the text inside it, so an error or an option's help would reach a log broken mid-phrase.
    """

    def main(self, *args: Any, **extra: Any) -> Any:
        mode = "rich" if on_terminals() else None
        stack: list[Any] = [self]
        while stack:  # every command and group: each reads its own mode for --help
            command = stack.pop()
            command.rich_markup_mode = mode
            stack += list(getattr(command, "commands", {}).values())
        if mode is None:
            extra.setdefault("terminal_width", UNBOUNDED)
            extra.setdefault("max_content_width", UNBOUNDED)
        return super().main(*args, **extra)


app = typer.Typer(
    cls=CommandLine,
    help="Controlled, experiment-tracked VAE ablations on CelebA 64x64.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
spec_app = typer.Typer(help="Inspect and validate experiment files.", no_args_is_help=True)
data_app = typer.Typer(help="Fetch and prepare datasets.", no_args_is_help=True)
weights_app = typer.Typer(
    help="Pretrained weights (VGG16, the FID Inception): download them and check their hashes.",
    no_args_is_help=True,
)
app.add_typer(spec_app, name="spec")
app.add_typer(data_app, name="data")
app.add_typer(weights_app, name="weights")

# Wrapped at a terminal's width on a terminal, never wrapped elsewhere (vaebench.core.console).
console = make_console()
err_console = make_console(stderr=True)

# Keyword arguments of a message printed as whole lines: no markup highlighting, never wrapped.
PLAIN: dict[str, Any] = {"highlight": False, "soft_wrap": True}

# Extra `--dotted.key=value` arguments (what a W&B agent appends) are read from ctx.args.
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec value, e.g. --set loss.beta=4 (repeatable)."),
]
SpecArgument = Annotated[Path, typer.Argument(help="Experiment YAML, e.g. experiments/quickstart.yaml.")]


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected mistakes end the command with their message and exit code 1, without a traceback."""
    try:
        yield
    except UserError as err:
        # escaped: rich would read `.[sweeps]` or `[0.9, 0.999]` in a message as markup and drop it
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@contextmanager
def requeue_exit() -> Iterator[None]:
    """A run stopped by SIGUSR2/SIGTERM (SLURM's warning before a time limit or preemption) says where it
    stopped and exits with EXIT_REQUEUE: checkpointed, to be rerun (`vaebench.train.signals`)."""
    from vaebench.train.signals import EXIT_REQUEUE, StopToRequeue

    try:
        yield
    except StopToRequeue as stop:
        console.print(str(stop), markup=False, **PLAIN)
        raise typer.Exit(EXIT_REQUEUE) from None


def collect_overrides(sets: list[str] | None, extra: list[str]) -> dict:
    """--set k=v options plus trailing `--k=v` / `k=v` arguments, later ones winning."""
    unexpected = [a for a in extra if "=" not in a]
    if unexpected:
        raise UserError(f"Unexpected argument(s) {unexpected}: overrides are written key.path=value.")
    return parse_overrides([*(sets or []), *extra])


def variants_table(variants: list[Variant], title: str) -> Table:
    """One row per variant: its axis levels (grids) or its overrides (explicit lists), seeds and length."""
    axes = [a for a in variants[0].axes if a != "variant"]
    table = Table(title=title, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("variant", style="cyan", overflow="fold")
    for axis in axes:
        table.add_column(axis)
    if not axes:
        table.add_column("overrides", overflow="fold")
    table.add_column("seeds")
    table.add_column("length")
    for i, v in enumerate(variants, 1):
        train = v.spec.train
        length = f"{train.steps} steps" if train.steps is not None else f"{train.epochs:g} ep"
        cells = [v.axes[a] for a in axes] or [", ".join(f"{k}={val}" for k, val in v.overrides.items())]
        seeds = ",".join(map(str, v.spec.seeds))
        table.add_row(str(i), v.name, *cells, seeds, f"{length}, batch {train.batch_size}")
    return table


@spec_app.command("show", context_settings=EXTRA_ARGS)
def spec_show(
    ctx: typer.Context,
    spec: SpecArgument,
    set_: SetOption = None,
    variant: Annotated[list[str] | None, typer.Option(help="Only this variant (repeatable).")] = None,
    full: Annotated[bool, typer.Option("--yaml", help="Print each variant's fully resolved spec.")] = False,
) -> None:
    """Print the expanded variants of an experiment as a table (or as resolved YAML)."""
    with user_errors():
        variants = select(load_experiment(spec, collect_overrides(set_, ctx.args)), variant or [])
    if full:
        for v in variants:
            console.rule(f"{v.experiment} / {v.name}")
            console.print(yaml.safe_dump(v.spec.model_dump(mode="json"), sort_keys=False), highlight=False)
    else:
        console.print(
            variants_table(
                variants, f"{variants[0].experiment}: {len(variants)} variant{'s' * (len(variants) != 1)}"
            )
        )


@spec_app.command("validate", context_settings=EXTRA_ARGS)
def spec_validate(ctx: typer.Context, spec: SpecArgument, set_: SetOption = None) -> None:
    """Exit 0 when every variant of the experiment is valid, 1 (with the reasons) otherwise."""
    with user_errors():
        variants = load_experiment(spec, collect_overrides(set_, ctx.args))
    console.print(f"[green]ok[/]: {spec} expands to {len(variants)} valid variant(s).")


class FetchSource(str, Enum):
    official = "official"
    kaggle = "kaggle"
    url = "url"


class DownloadReport:
    """Download progress as whole lines, one per file at each tenth (a log stays short and greppable)."""

    def __init__(self) -> None:
        self.shown: dict[str, int] = {}

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if not total:
            return
        tenth = min(10, done * 10 // total)
        if tenth > self.shown.get(name, 0):
            self.shown[name] = tenth
            console.print(f"{name}: {tenth * 10}% ({done / 1e6:,.0f} of {total / 1e6:,.0f} MB)", **PLAIN)


@data_app.command("fetch")
def data_fetch(
    root: Annotated[
        Path, typer.Option(help="Folder to put CelebA in (data.root); it lands in <root>/celeba.")
    ] = Path("data"),
    source: Annotated[
        FetchSource | None,
        typer.Option(
            help="official: the official Google Drive files (needs gdown); kaggle: the Kaggle mirror (needs "
            "the kaggle package and an API token); url: a mirror of the official files at --url. "
            "Default: url when --url is given, else official.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="A folder holding copies of the official files: <URL>/img_align_celeba.zip and "
            "<URL>/list_eval_partition.txt (downloads resume where they stopped).",
        ),
    ] = None,
) -> None:
    """Download CelebA (aligned and cropped, official splits) into <root>/celeba, checked, for `data prepare`.

    Downloads and unzips into <root>/.celeba-fetch, checks the copy (202,599 images; 162,770 / 19,867 /
    19,962 in the train / val / test splits; MD5s where the source has them), then moves it into place:
    a failed or interrupted fetch leaves nothing where vaebench reads. A complete copy already under
    <root> is kept and nothing is downloaded.
    """
    from vaebench.data.fetch import fetch_celeba, next_command

    with user_errors():
        result = fetch_celeba(
            root,
            None if source is None else source.value,
            url,
            say=lambda line: console.print(line, markup=False, **PLAIN),
            progress=DownloadReport(),
        )
    counts = ", ".join(f"{split} {count:,}" for split, count in result.splits.items())
    where = f"{result.layout.image_dir} with {result.layout.partition_file.name}"
    state = "already there, checked" if result.already_there else "downloaded and checked"
    console.print(
        f"[green]CelebA[/]: {state}: {result.images:,} images in {escape(where)} ({counts}).", **PLAIN
    )
    console.print(f"Next: {escape(next_command(root))}", **PLAIN)


@data_app.command("prepare", context_settings=EXTRA_ARGS)
def data_prepare(
    ctx: typer.Context,
    spec: SpecArgument,
    set_: SetOption = None,
    workers: Annotated[int | None, typer.Option(help="Decoding processes (default: all cores).")] = None,
    force: Annotated[
        bool, typer.Option(help="Rebuild caches that look current too (stale ones are always rebuilt).")
    ] = False,
) -> None:
    """Decode CelebA once into uint8 arrays (one per split) so training never decodes JPEGs again."""
    from vaebench.data import prepare

    with user_errors():
        variants = load_experiment(spec, collect_overrides(set_, ctx.args))
        seen: set[str] = set()
        for v in variants:
            key = v.spec.data.model_dump_json()
            if key in seen:
                continue
            seen.add(key)
            written = prepare(v.spec.data, progress=True, num_workers=workers, force=force)
            if not written:
                console.print(f"{v.experiment}: {v.spec.data.kind} data needs no preparation.")
            for split, path in written.items():
                console.print(f"[green]{split}[/]: {path}")


def weights_names(names: list[str] | None) -> list[str]:
    """The registered weights NAMES asks for (all of them when none is given); a UserError names the
    registered ones when a name is not among them."""
    from vaebench.core.weights import WEIGHTS

    unknown = [n for n in names or [] if n not in WEIGHTS]
    if unknown:
        raise UserError(
            f"Unknown weights {', '.join(unknown)}: the registered ones are {', '.join(WEIGHTS)}."
        )
    return list(dict.fromkeys(names or WEIGHTS))


WeightsNames = Annotated[
    list[str] | None,
    typer.Argument(help="Weights to act on, e.g. vgg16 inception (default: all).", show_default=False),
]


@weights_app.command("fetch")
def weights_fetch(
    names: WeightsNames = None,
    mirror: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Download <URL>/<file name> instead of each file's own address."),
    ] = None,
) -> None:
    """Download weights into the torch hub cache (TORCH_HOME), checking each file's pinned SHA-256.

    A file already there with the right hash is kept; a failed download leaves nothing behind. The others
    are still fetched when one fails, and the command then exits 1.
    """
    from vaebench.core.console import is_terminal
    from vaebench.core.weights import WEIGHTS, fetch_weights, weights_status

    with user_errors():
        wanted = weights_names(names)
    failed = False
    for name in wanted:
        status = weights_status(name)
        if status.state == "verified":
            console.print(f"{name}: already there, SHA-256 verified: {escape(str(status.found))}", **PLAIN)
            continue
        entry = WEIGHTS[name]
        source = entry.url if mirror is None else f"{mirror.rstrip('/')}/{entry.filename}"
        console.print(f"{name}: downloading {escape(source)}", **PLAIN)
        try:  # torch.hub's progress bar on a terminal only: its redrawn line is noise in a log
            path = fetch_weights(name, mirror, progress=is_terminal(sys.stderr))
        except UserError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", **PLAIN)
            failed = True
            continue
        console.print(f"[green]{name}[/]: downloaded, SHA-256 verified: {escape(str(path))}", **PLAIN)
    if failed:
        raise typer.Exit(1)


@weights_app.command("list")
def weights_list(names: WeightsNames = None) -> None:
    """Each registered weights file: what uses it, where it is looked for, and whether it is there with
    its pinned SHA-256 (verified), absent (missing) or another file (wrong hash)."""
    from vaebench.core.weights import WEIGHTS, fetch_command, weights_status

    with user_errors():
        wanted = weights_names(names)
    colours = {"verified": "green", "missing": "yellow", "wrong hash": "red"}
    for i, name in enumerate(wanted):
        entry, status = WEIGHTS[name], weights_status(name)
        if status.state == "verified":
            state = f"verified ({status.found})"
        elif status.state == "missing":
            state = f"missing: run `{fetch_command(name)}`"
        else:
            state = (
                f"wrong hash: {status.found} has SHA-256 {(status.digest or '')[:12]}..., the name pins "
                f"{entry.hash_prefix}; delete it and run `{fetch_command(name)}`"
            )
        lines = [
            *([""] * (i > 0)),  # a blank line between entries
            f"[bold]{name}[/]: [{colours[status.state]}]{escape(state)}[/]",
            f"  file: {escape(entry.filename)} ({escape(entry.url)})",
            f"  used by: {escape(entry.description)}",
            f"  looked for at: {escape(', '.join(str(p) for p in status.looked))}",
        ]
        console.print("\n".join(lines), **PLAIN)


def parse_device(text: str) -> str:
    """--device: auto, cpu, cuda or cuda:N; anything else is a usage error naming the option."""
    text = text.strip().lower()
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise typer.BadParameter(f"{text!r} is not a device: give auto, cpu, cuda or cuda:N (e.g. cuda:1).")


DeviceOption = Annotated[
    str,
    typer.Option(
        parser=parse_device, metavar="auto|cpu|cuda|cuda:N", help="auto: CUDA when available, else CPU."
    ),
]


class ExecutorChoice(str, Enum):
    local = "local"
    slurm = "slurm"


ParallelOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Runs at once, each a `vaebench run` subprocess with its own log: one per --devices entry "
        "(GPU), or CPU workers. Default: 1, in this process; with --executor slurm, jobs queued at once.",
    ),
]
DevicesOption = Annotated[
    str | None,
    typer.Option(
        help="GPUs to spread the runs over, e.g. 0,1,2,3 (each run sees one through CUDA_VISIBLE_DEVICES; "
        "repeat an index for two runs per GPU), or cpu. Default: every GPU torch sees.",
    ),
]
ExecutorOption = Annotated[
    ExecutorChoice, typer.Option(help="local: subprocesses here; slurm: one SLURM job per run (submitit).")
]


@dataclass(frozen=True)
class SlurmFlags:
    """The --slurm-* options as given: `overrides` are the SlurmSpec fields given, which win over each
    run's `slurm` section (what `--set slurm.*` changes, in `vaebench run`); `cluster` is submitit's."""

    overrides: dict[str, Any]
    cluster: str = "slurm"

    def defaults(self) -> SlurmSpec:
        """The flags over SlurmSpec's defaults: the resources of jobs without a `slurm` section of their own
        (a sweep's). A combination SlurmSpec refuses (--slurm-time 1 with the default signal delay) is a
        UserError naming the fields."""
        from pydantic import ValidationError

        from vaebench.config.spec import SlurmSpec

        try:
            return SlurmSpec(**self.overrides)
        except ValidationError as err:
            why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in err.errors())
            raise UserError(f"--slurm-* options: {why}") from None


class SlurmOption(NamedTuple):
    field: str  # the SlurmSpec field it overrides, or "cluster" (submitit's, not the job's)
    kind: Any  # Annotated[type, typer.Option(...)]
    default: Any = None  # None: not given, the run's `slurm` section decides


SLURM_OPTIONS = {  # parameter -> option, for `run` and `sweep` (`with_slurm_options`)
    "slurm_partition": SlurmOption(
        "partition",
        Annotated[
            str | None,
            typer.Option(help="--executor slurm: partition (default: the spec's slurm.partition)."),
        ],
    ),
    "slurm_time": SlurmOption(
        "time_min",
        Annotated[
            int | None,
            typer.Option(min=1, help="--executor slurm: time limit of each job, minutes (slurm.time_min)."),
        ],
    ),
    "slurm_gpus_per_job": SlurmOption(
        "gpus_per_job",
        Annotated[
            int | None, typer.Option(min=0, help="--executor slurm: GPUs of each job (slurm.gpus_per_job).")
        ],
    ),
    "slurm_account": SlurmOption(
        "account",
        Annotated[str | None, typer.Option(help="--executor slurm: account to charge (slurm.account).")],
    ),
    "slurm_cluster": SlurmOption(
        "cluster",
        Annotated[
            str,
            typer.Option(
                help="--executor slurm: submitit's cluster; `local` tries the job path on this machine."
            ),
        ],
        "slurm",
    ),
}


def with_slurm_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the --slurm-* options of SLURM_OPTIONS in place of its `slurm: SlurmFlags` parameter.

    Typer reads a command's options from its signature, so this is how `run` and `sweep` share one
    definition of them: the wrapper's signature lists them, and it hands `command` their SlurmFlags.
    """
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at = [p.name for p in params].index("slurm")
    params[at : at + 1] = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=o.kind, default=o.default)
        for name, o in SLURM_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        given = {option.field: kwargs.pop(name) for name, option in SLURM_OPTIONS.items()}
        cluster = given.pop("cluster")
        overrides = {field: value for field, value in given.items() if value is not None}
        return command(*args, slurm=SlurmFlags(overrides, cluster), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@app.command("run", context_settings=EXTRA_ARGS)
@with_slurm_options
def run(
    ctx: typer.Context,
    spec: SpecArgument,
    set_: SetOption = None,
    variant: Annotated[list[str] | None, typer.Option(help="Only this variant (repeatable).")] = None,
    seed: Annotated[
        list[int] | None, typer.Option(help="Only this seed (repeatable); default: the spec's.")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go.", envvar=RUNS_DIR_ENV)] = Path("runs"),
    device: DeviceOption = "auto",
    force: Annotated[
        bool, typer.Option(help="Retrain finished runs (the old folder is kept as *.replaced-*).")
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(help="Plain log lines instead of progress bars (CI, SLURM).", envvar="VAEBENCH_QUIET"),
    ] = False,
    suffix: Annotated[
        str | None,
        typer.Option(
            help="Name variants <variant>+SUFFIX (folders runs/<experiment>/<variant>+SUFFIX/seed<k>). "
            "Default in a sweep: the sweep run's name (vaebench sweep), <sweep id>-<run id> (wandb agent).",
        ),
    ] = None,
    parallel: ParallelOption = None,
    devices: DevicesOption = None,
    executor: ExecutorOption = ExecutorChoice.local,
    slurm: SlurmFlags = SlurmFlags({}),
) -> None:
    """Train every variant x seed of an experiment; rerunning resumes unfinished runs, skips finished ones."""
    from vaebench.core.progress import PlainProgress, RichProgress
    from vaebench.launch.runner import check_runs_dir, plan_runs, preflight, run_parallel, run_queue
    from vaebench.launch.sweep_check import check_sweep_run

    in_sweep = sweep_run_suffix()
    with user_errors(), requeue_exit():
        variants = select(load_experiment(spec, collect_overrides(set_, ctx.args)), variant or [])
        plan = plan_runs(variants, runs_dir, seed or [], suffix or in_sweep)
        check_sweep_run([(p.variant.name, p.variant.spec, p.seed) for p in plan], spec, named=bool(suffix))
        check_runs_dir(runs_dir)
        preflight(plan)
        if executor == ExecutorChoice.local and (parallel or 1) == 1 and devices is None:
            progress = PlainProgress(console) if quiet else RichProgress(console)
            with progress:
                progress.queue(len(plan))
                results = run_queue(plan, device=device, force=force, reporter=progress)
        else:
            from vaebench.launch.runner import worker_command
            from vaebench.launch.workers import Board, make_executor

            pool, slots = make_executor(
                executor.value,
                parallel=parallel,
                devices=devices,
                folder=runs_dir / "submitit",
                slurm=slurm.defaults(),
                cluster=slurm.cluster,
                default_jobs=len(plan),
            )
            worker = worker_command(
                spec,
                runs_dir=runs_dir,
                device=device,
                force=force,
                suffix=suffix or in_sweep,
                sets=set_ or [],
                extra=ctx.args,
            )
            with Board(console, len(plan), plain=quiet) as board:
                results = run_parallel(
                    plan,
                    worker,
                    force=force,
                    executor=pool,
                    slots=slots,
                    board=board,
                    slurm_overrides=slurm.overrides,
                )
    console.print(results_table(results))
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


@functools.cache
def _click_command(name: str) -> click.Command:
    """The click command Typer builds for `vaebench NAME` (built once: it inspects every signature)."""
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def run_command_runs(args: Sequence[str]) -> list[tuple[str, RunSpec, int]]:
    """(variant, spec, seed) of each run `vaebench run ARGS` would train, read as `run` reads its command
    line, without training: how `vaebench sweep` sees what a sweep's command trains and logs."""
    command = _click_command("run")
    try:
        ctx = command.make_context("run", list(args))
    except click.ClickException as err:
        line = " ".join(args)
        why = err.format_message()
        raise UserError(f"`vaebench run {line}` is not a valid command line: {why}") from None
    given = ctx.params
    overrides = collect_overrides(given["set_"], ctx.args)
    variants = select(load_experiment(given["spec"], overrides), given["variant"] or [])
    return [(v.name, v.spec, seed) for v in variants for seed in (given["seed"] or v.spec.seeds)]


def results_table(results: list) -> Table:
    """What ran, with its headline numbers and where its folder is."""
    table = Table(
        title="runs", header_style="bold", caption="bpd: bits/dim of the -ELBO (val: last validation)",
        caption_justify="left",
    )  # fmt: skip
    table.add_column("run folder", overflow="fold")  # the one column that may fold: numbers never break
    for col in ("status", "val bpd", "test bpd"):
        table.add_column(col, no_wrap=True, justify="left" if col == "status" else "right")
    table.add_column("time", overflow="fold")  # holds the error of a failed run
    colours = {"finished": "green", "skipped": "dim", "failed": "red", "stopped": "yellow"}
    for r in results:
        s = r.summary
        val = s.get("val/bpd_elbo")
        test = s.get("test/bpd_elbo")
        table.add_row(
            _shown_path(r.run_dir),
            f"[{colours.get(r.status, '')}]{r.status}[/]",
            f"{val:.4f}" if isinstance(val, float) else "-",
            f"{test:.4f}" if isinstance(test, float) else "-",
            f"{r.wall_s:.0f} s" if r.status == "finished" else escape((r.error or "")[:300]),
        )
    return table


def _shown_path(path: Path) -> str:
    """A path relative to the working directory when it is below it (runs/x/v/seed0), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_sweep_file(sweep_file: Path, sets: list[str]) -> None:
    """`vaebench sweep --check`: the checks before a first run, said as warnings and one `ok` line."""
    from vaebench.launch.local_sweep import check_sweep, import_sweeps

    with user_errors():
        config, notes = check_sweep(import_sweeps(), sweep_file, parse_overrides(sets), run_command_runs)
    for note in notes:
        err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    metric = (config.get("metric") or {}).get("name")
    if metric and run_arguments(config["command"]) is None:
        logged = f", but its metric {metric} is not checked (the command does not run `vaebench run`)"
    else:
        logged = f", and its runs log {metric}" if metric else ""
    console.print(
        f"[green]ok[/]: {escape(str(sweep_file))}: its command passes the parameters to each run"
        f"{escape(logged)}; ready for `vaebench sweep` or `wandb sweep`.",
        highlight=False,
        soft_wrap=True,
    )


@app.command("sweep")
@with_slurm_options
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="W&B sweep file, e.g. sweeps/beta.yaml.")],
    count: Annotated[
        int | None,
        typer.Option(
            min=1, help="Runs of the sweep in all, earlier invocations included (grid: all points)."
        ),
    ] = None,
    set_: SetOption = None,
    parallel: ParallelOption = None,
    devices: DevicesOption = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="The sweep's state folder (default: sweeps-state/<sweep name>).")
    ] = None,
    runs_dir: Annotated[
        Path | None, typer.Option(help="Where run folders go (default: <state-dir>/runs).")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option(help="Run failed runs again, with the same parameters.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Plain lines instead of a live table (CI, SLURM).")] = False,
    executor: ExecutorOption = ExecutorChoice.local,
    slurm: SlurmFlags = SlurmFlags({}),
    check: Annotated[
        bool,
        typer.Option(
            help="Only check the sweep file (as before a first run) and exit: also for `wandb sweep` files."
        ),
    ] = False,
) -> None:
    """Run a W&B sweep file locally with W&B's sweep engine, no server needed; rerunning continues it.

    Each run is the sweep's `command` with the macros expanded as `wandb agent` does; its folder is
    <runs-dir>/<experiment>/<variant>+<sweep>-<NNN>/seed<k>, and state.json in the state folder
    records every run's parameters, status and metric. Before the first run the file is checked: the
    command passes the parameters (${args}), the metric is one the runs log, a grid lists its values.
    """
    from vaebench.launch.local_sweep import MAX_INITIAL_FAILURES, LocalSweep, sweep_table
    from vaebench.launch.workers import Board, make_executor

    if check:
        check_sweep_file(sweep_file, set_ or [])
        return
    with user_errors():
        controller = LocalSweep(
            sweep_file,
            sets=parse_overrides(set_ or []),
            count=count,
            state_dir=state_dir,
            runs_dir=runs_dir,
            retry_failed=retry_failed,
            resolve_run=run_command_runs,
        )
        for note in controller.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
        pool, slots = make_executor(
            executor.value,
            parallel=parallel,
            devices=devices,
            folder=controller.state_dir / "submitit",
            slurm=slurm.defaults(),
            cluster=slurm.cluster,
            default_jobs=4,
        )
        state = controller.state
        limit = "" if controller.limit == float("inf") else f" of {controller.limit}"
        console.print(
            f"sweep {state.name}: {len(state.runs)}{limit} runs so far; state in {state.path}",
            highlight=False,
        )
        try:
            with Board(console, None, plain=quiet) as board:
                controller.run(pool, slots, board)
        except KeyboardInterrupt:
            console.print(sweep_table(state))
            err_console.print(
                "interrupted: the running runs checkpointed; rerun the same command to continue."
            )
            raise typer.Exit(130) from None
    console.print(sweep_table(state))
    if not controller.started:
        why = "every grid point has run" if controller.exhausted else f"it has {len(state.runs)}{limit} runs"
        console.print(f"no new run: {why}.", highlight=False)
    if controller.gave_up:
        err_console.print(
            f"[bold red]error:[/] the first {MAX_INITIAL_FAILURES} runs failed, so no new run was started; "
            "see the logs named in the table.",
            highlight=False,
        )
    if any(r.status == "failed" for r in state.runs):
        raise typer.Exit(1)


class SplitChoice(str, Enum):
    train = "train"
    val = "val"
    test = "test"


class CheckpointChoice(str, Enum):
    best = "best"
    last = "last"


def evaluation_table(split: str, results: list[tuple[Path, dict]]) -> Table:
    """One row per metric, one column per run folder."""
    table = Table(title=f"evaluation on {split}", header_style="bold")
    table.add_column("metric", style="cyan")
    for run_dir, _ in results:
        table.add_column(str(run_dir), justify="right", overflow="fold")
    # every registered scalar metric (`vaebench.evaluation.metrics`), in reading order
    for m in ordered_metrics():
        if not m.fmt:
            continue  # a list (kl_per_dim): in eval/<split>.json, not in a table
        values = [metrics.get(f"{split}/{m.key}") for _, metrics in results]
        if (m.requires or m.applies_to) and all(v is None for v in values):
            continue  # not asked for (eval.metrics, eval.probes), or no use here (no factors)
        table.add_row(
            m.row_label, *("-" if not isinstance(v, (int, float)) else format(v, m.fmt) for v in values)
        )
    protocols = [metrics.get(f"{split}/quality_protocol") for _, metrics in results]
    if any(protocols):  # which protocol the quality scores were made under, and whether they compare
        cells = []
        for protocol, (_, metrics) in zip(protocols, results, strict=True):
            random = metrics.get(f"{split}/quality_comparable") is False
            cells.append(
                "-"
                if protocol is None
                else f"{protocol}{' (random weights: not comparable)' if random else ''}"
            )
        table.add_row("quality protocol", *cells)
    return table


@app.command("evaluate")
def evaluate(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run folders (runs/<experiment>/<variant>/seed<k>).", show_default=False),
    ],
    split: Annotated[
        SplitChoice | None, typer.Option(help="Split to evaluate (default: the run's eval.split).")
    ] = None,
    iw_samples: Annotated[
        int | None, typer.Option(min=1, help="K of the IW bound (default: eval.iw_samples; 1000 for finals).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per batch (default: eval.batch_size).")
    ] = None,
    checkpoint: Annotated[
        CheckpointChoice, typer.Option(help="Which checkpoint to evaluate.")
    ] = CheckpointChoice.best,
    device: DeviceOption = "auto",
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Quality metrics to compute, comma-separated: fid,kid,recon_fid,precision_recall,lpips,"
            "ssim ('none' for none; default: the run's eval.metrics)."
        ),
    ] = None,
) -> None:
    """Evaluate trained runs (bits/dim bounds, reconstruction, latent usage, and the quality metrics of
    eval.metrics) and record the results.

    Results go to each run's eval/<split>.json (one entry per settings, earlier ones kept) and
    summary.json (latest evaluation wins).
    """
    from vaebench.core.progress import RichProgress
    from vaebench.evaluation.evaluate import evaluate_run
    from vaebench.evaluation.quality import check_required_weights
    from vaebench.runs.trained import check_run_folder, load_run_spec

    quality_metrics = None
    if metrics is not None:
        quality_metrics = (
            [] if metrics.strip() == "none" else [m.strip() for m in metrics.split(",") if m.strip()]
        )
    with user_errors():
        for run_dir in run_dirs:  # every folder checked before the first (slow) evaluation
            check_run_folder(run_dir, checkpoint.value)
            check_required_weights(load_run_spec(run_dir).eval)  # its eval.metrics' pretrained weights
        results: list[tuple[Path, dict]] = []
        splits = set()
        with RichProgress(console) as progress:
            progress.queue(len(run_dirs))
            for run_dir in run_dirs:
                run_split = split.value if split is not None else load_run_spec(run_dir).eval.split
                splits.add(run_split)
                scores = evaluate_run(
                    run_dir,
                    split=run_split,
                    iw_samples=iw_samples,
                    batch_size=batch_size,
                    checkpoint=checkpoint.value,
                    device=device,
                    progress=progress,
                    metrics=quality_metrics,
                )
                results.append((run_dir, scores))
                progress.run_done()
    for one_split in sorted(splits):
        console.print(evaluation_table(one_split, results))


RankChoice = Enum("RankChoice", {m.key: m.key for m in report_metrics()}, type=str)  # type: ignore[misc]
"""`--rank-by` choices: the report's metrics (`vaebench.evaluation.metrics`, report=True)."""


def frame_table(frame, title: str, width: int) -> Table:  # frame: a pandas DataFrame of strings
    """A rich Table of a formatted report table, numbers right-aligned, cells never wrapped.

    Columns that do not fit in `width` characters are left out from the right (the caption says how
    many), since a "3.8123 ± 0.0041" broken over three lines is harder to read than a missing column.
    """
    table = Table(title=title, header_style="bold", caption_justify="left")
    used, left_out = 1, 0
    for index, column in enumerate(frame.columns):
        texts = [str(v) for v in frame[column]]
        size = max([len(str(column)), *(len(t) for t in texts)]) + 3
        if used + size > width and index > 1:
            left_out = len(frame.columns) - index
            break
        used += size
        numeric = all(t[0].isdigit() or t[0] in "+-" for t in texts if t and t != "–")
        table.add_column(str(column), justify="right" if numeric else "left", no_wrap=True)
    kept = len(frame.columns) - left_out
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row[:kept]))
    if left_out:
        table.caption = f"{left_out} more column(s) in the report's tables/variants.md"
    return table


@app.command("report")
def report(
    runs_dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders holding run folders, or run folders (default: runs/).", show_default=False
        ),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="The experiment to report, when the folders hold several.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: reports/<experiment>/).")] = None,
    wandb: Annotated[
        str | None,
        typer.Option(
            "--wandb",
            metavar="ENTITY/PROJECT",
            help="Read the runs from this W&B project instead of folders.",
        ),
    ] = None,
    rank_by: Annotated[
        RankChoice, typer.Option(help="Metric that ranks the variants and picks each one's best run.")
    ] = RankChoice.bpd_elbo,  # type: ignore[attr-defined]
    figures_from: Annotated[
        list[Path] | None,
        typer.Option(help="Draw the write-up figures from this run folder (repeatable), not the best runs."),
    ] = None,
    figures: Annotated[
        bool,
        typer.Option(help="Write-up figures from the checkpoints (--no-figures: tables and plots only)."),
    ] = True,
    figure_images: Annotated[int, typer.Option(min=2, help="Images per row of the write-up figures.")] = 8,
    figure_scale: Annotated[int, typer.Option(min=1, help="Pixel enlargement of the write-up figures.")] = 2,
    device: Annotated[
        str,
        typer.Option(
            parser=parse_device,
            metavar="auto|cpu|cuda|cuda:N",
            help="Device for the write-up figures (auto: CUDA when available).",
        ),
    ] = "cpu",
    force: Annotated[
        bool, typer.Option(help="Replace a report in --out that was made from other runs.")
    ] = False,
    group_by: Annotated[
        str | None,
        typer.Option(
            metavar="AXIS",
            help="Axis whose levels colour the training curves (a second axis sets the line style); "
            "default: the axis with the most levels; 'variant': one colour per variant.",
        ),
    ] = None,
) -> None:
    """Tables, plots and write-up figures of an experiment's runs, tied together in report.md and report.html.

    Unfinished, diverged and broken runs are listed in the report with the reason; rerunning on the same
    runs replaces the previous report in the same folder, and a report made from other runs is kept
    unless --force.
    """
    import pandas as pd

    from vaebench.report import build_report
    from vaebench.report.tables import format_variant_table, read_variant_table

    with user_errors():
        path = build_report(
            runs_dirs or [Path("runs")],
            experiment,
            out,
            wandb_path=wandb,
            rank_by=rank_by.value,
            figure_runs=figures_from or [],
            figures=figures,
            figure_images=figure_images,
            figure_scale=figure_scale,
            device=device,
            console=console,
            force=force,
            group_by=group_by,
        )
    variants = format_variant_table(read_variant_table(path / "tables" / "variants.csv"))
    if variants.empty:
        statuses = pd.read_csv(path / "tables" / "runs.csv")["status"].value_counts()
        counts = ", ".join(f"{n} {status}" for status, n in statuses.items())
        console.print(
            f"[yellow]no finished run[/] to rank ({counts}): the report lists each run and what it needs "
            "under 'Runs that need attention'.",
            highlight=False,
        )
    else:
        console.print(frame_table(variants, f"variants, ranked by {rank_by.value}", console.width))
    console.print(f"[green]report[/]: {path / 'report.html'} (and report.md, tables/, plots/, figures/)")


def main() -> None:
    if os.environ.get("VAEBENCH_WORKER") and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # A worker of `--parallel` / `vaebench sweep` is stopped with SIGINT (Ctrl-C in the controller,
        # hyperband); an ignored SIGINT inherited from a backgrounded controller would make it unstoppable.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("VAEBENCH_WORKER"):
        # SIGUSR2 (SLURM's warning before a time limit or preemption) and SIGTERM would end the worker at
        # once by default: from here on they stop it cleanly, with a checkpoint, and exit status 75.
        from vaebench.train.signals import install_requeue_handlers

        install_requeue_handlers()
    # A bug's traceback: rich's panels on a terminal, Python's own (never wrapped) in a log.
    app.pretty_exceptions_enable = on_terminals()
    app()
