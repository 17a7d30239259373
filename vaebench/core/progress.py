"""How training progress reaches a person: rich bars in a terminal, plain lines for CI and SLURM logs."""

from __future__ import annotations

import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vaebench.core.console import make_console


class Reporter(Protocol):
    """What training and evaluation tell whoever shows progress (a rich bar, plain log lines, or nothing)."""

    def start(self, name: str, total: int, initial: int) -> None: ...
    def update(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, name: str, total: int, initial: int) -> None: ...
    def update(self, step: int, metrics: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


def _fmt(metrics: dict[str, float]) -> str:
    parts = []
    for key, label, spec in (
        ("train/loss", "loss", ".4g"),
        ("train/kl", "kl", ".3g"),
        ("train/beta", "beta", ".3g"),
        ("val/bpd_elbo", "val bpd", ".4f"),
        ("images_per_s", "img/s", ".0f"),
    ):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:{spec}}")
    return "  ".join(parts)


class RichProgress:
    """One bar for the queue of variant x seed runs and one for the run in progress."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold cyan]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or make_console(),
            transient=False,
        )
        self.queue_task: int | None = None
        self.run_task: int | None = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def queue(self, total: int) -> None:
        self.queue_task = self.progress.add_task("runs", total=total, info="")

    def run_done(self) -> None:
        if self.queue_task is not None:
            self.progress.advance(self.queue_task)

    # -- the trainer's Reporter protocol
    def start(self, name: str, total: int, initial: int) -> None:
        self.run_task = self.progress.add_task(name, total=total, completed=initial, info="")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if self.run_task is None:
            return
        if metrics:
            self.progress.update(self.run_task, completed=step, info=_fmt(metrics))
        else:
            self.progress.update(self.run_task, completed=step)

    def message(self, text: str) -> None:
        self.progress.console.print(text)

    def finish(self) -> None:
        if self.run_task is not None:
            self.progress.update(self.run_task, visible=False)
            self.run_task = None


class PlainProgress:
    """Plain log lines (`--quiet`): one per logged step, no terminal control codes.

    Lines are never wrapped or coloured, whatever console is passed in: without a terminal rich
    assumes 80 columns, and a log line split in two defeats grep in CI and SLURM logs.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or make_console(highlight=False, soft_wrap=True)
        self.name = ""
        self.total = 0
        self.done = 0
        self.runs = 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def queue(self, total: int) -> None:
        self.runs = total

    def run_done(self) -> None:
        self.done += 1

    def start(self, name: str, total: int, initial: int) -> None:
        self.name, self.total, self.t0 = name, total, time.perf_counter()
        self._line(f"[{self.done + 1}/{self.runs}] {name}: steps {initial}..{total}")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if metrics:
            self._line(f"{self.name} step {step}/{self.total} {_fmt(metrics)}")

    def message(self, text: str) -> None:
        self._line(text)

    def finish(self) -> None:
        pass

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
