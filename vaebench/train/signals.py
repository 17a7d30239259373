"""How a training process stops on a signal: after the step it is in, with a checkpoint, never mid-step.

SIGINT (Ctrl-C, or the `--parallel` / sweep controller's stop) ends the run with KeyboardInterrupt:
rerunning the same command resumes it. SIGUSR2 (SLURM's warning before a time limit or a preemption,
`--signal=USR2@<delay>`, which submitit asks for) and SIGTERM (what SLURM sends at preemption or scancel,
before SIGKILL) end it with `StopToRequeue`, and `vaebench run` exits with `EXIT_REQUEUE`: the run is
checkpointed and the same command, rerun by the requeued SLURM job, resumes it bit-exactly.

The default action of SIGUSR2 and SIGTERM is to end the process at once, so a worker installs
`install_requeue_handlers` first thing (`vaebench.cli.main`): outside the training loop (start-up, data,
the final evaluation) a requeue signal raises StopToRequeue at once, as there is no step to finish; inside
it `DeferredInterrupt` holds it until the step is complete and checkpointed. A requeue signal is never
escalated by a repeat (SLURM may signal every process of the job step, and the job wrapper forwards the
signal too); only a second SIGINT interrupts a step.
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

EXIT_REQUEUE = 75
"""`vaebench run`'s exit status when it stopped on SIGUSR2/SIGTERM after checkpointing: "rerun me"
(EX_TEMPFAIL of sysexits.h). The SLURM job wrapper (`vaebench.launch.slurm_job`) and the controller
read it."""

REQUEUE_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class StopToRequeue(KeyboardInterrupt):
    """Training stopped on a requeue signal: the checkpoint at `step` of `run_dir` is written (both None
    when the signal came outside the training loop, where the newest checkpoint stands).

    A KeyboardInterrupt, so that every owner of a resource treats it as an interruption, not a failure
    (the W&B run ends with exit code 0, rerunning resumes). Its message is `stop_line`'s.
    """

    def __init__(self, signum: int, step: int | None = None, run_dir: Path | None = None) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        super().__init__(stop_line(signum, step, run_dir))


def stop_line(signum: int, step: int | None, run_dir: Path | None) -> str:
    """The line `vaebench run` prints when it stops to be requeued; `stop_position` reads it back."""
    name = signal.Signals(signum).name
    if step is None or run_dir is None:
        return (
            f"stopped to be requeued outside the training loop ({name}): nothing to checkpoint, the newest "
            "checkpoint stands; rerunning the same command resumes"
        )
    return (
        f"stopped to be requeued at step {step} of {run_dir} ({name}): checkpointed; rerunning the same "
        "command resumes"
    )


_STOP_AT = re.compile(r"^stopped to be requeued at step (\d+) of (.+) \(SIG\w+\): checkpointed", re.M)


def stop_position(log_text: str) -> tuple[str, int] | None:
    """(run folder, step) of the last `stop_line` in a log's text: where a stopped job's run was
    checkpointed. None when there is none (the run stopped outside the training loop, or never stopped)."""
    found = _STOP_AT.findall(log_text)
    return (found[-1][1], int(found[-1][0])) if found else None


def install_requeue_handlers() -> None:
    """From now until `DeferredInterrupt` takes over, SIGUSR2 and SIGTERM raise StopToRequeue (once; any
    repeat is ignored, so that the stop is not itself interrupted). Main thread only."""
    if threading.current_thread() is threading.main_thread():
        for sig in REQUEUE_SIGNALS:
            signal.signal(sig, _stop_now)


def _stop_now(signum: int, frame: object) -> None:
    for sig in REQUEUE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise StopToRequeue(signum)


class DeferredInterrupt:
    """Holds SIGINT, SIGUSR2 and SIGTERM until the current training step is complete; a second SIGINT
    interrupts at once.

    Nearly all of a step's time is spent inside forward/backward/optimizer.step: an immediate
    KeyboardInterrupt would leave random numbers drawn, or parameters half updated, for a step the
    checkpoint says did not happen, and the resumed run would differ from one never interrupted.
    `signum` is the signal to act on (a requeue signal wins over SIGINT: both stop after checkpointing,
    the requeue signal also says "rerun me"). Signals reach only the main thread; elsewhere install()
    does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *REQUEUE_SIGNALS)}
            self._previous[signal.SIGINT] = self._previous[signal.SIGINT] or signal.default_int_handler
            for sig in self._previous:
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers found at install(). After a requeue signal, a worker's own
        (`install_requeue_handlers`) becomes "ignore": the process is stopping, and a repeat of the
        signal must not interrupt its clean-up with a second StopToRequeue."""
        for sig, handler in self._previous.items():
            if handler is _stop_now and self.signum in REQUEUE_SIGNALS:
                handler = signal.SIG_IGN
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def stop(self, step: int, run_dir: Path) -> KeyboardInterrupt:
        """The exception that ends training after `step`, now checkpointed, for the signal received."""
        if self.signum in REQUEUE_SIGNALS:
            return StopToRequeue(self.signum, step, run_dir)
        return KeyboardInterrupt(f"interrupted at step {step}; rerun the same command to resume")

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        if self.signum is None or signum in REQUEUE_SIGNALS:
            self.signum = signum

    def __enter__(self) -> DeferredInterrupt:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
