"""Requeue at a SLURM time limit or preemption: the run stops cleanly on SIGUSR2/SIGTERM with exit status
EXIT_REQUEUE, its SLURM job (`RunJob`) decides whether to requeue, and the rerun resumes bit-exactly.

No SLURM here: the signal is sent by the test, the job's child is a real `vaebench run` or a fake one,
and SLURM's answers (`scontrol show job`) are strings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_train import assert_identical, assert_same_metrics, last, run_cli, steps
from tiny import QUICKSTART, TINY, on_training_calls, set_args, tiny_variant
from vaebench.launch.runner import run_one
from vaebench.launch.workers import WORKER_ENV
from vaebench.train.signals import EXIT_REQUEUE, StopToRequeue, stop_line, stop_position


@pytest.fixture
def requeue_handlers_restored() -> Iterator[None]:
    """An in-process stop may leave SIGUSR2/SIGTERM handled or ignored: put back the test process's own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the run stops cleanly


@pytest.mark.slow
def test_sigusr2_mid_run_checkpoints_exits_75_and_the_rerun_ends_bit_identical(tmp_path: Path) -> None:
    """SLURM's warning signal reaches `vaebench run` mid-run: it finishes the step, checkpoints it, says
    where, and exits 75; the same command again (the requeued job) ends exactly as a run never stopped."""
    longer = {**TINY, "train.steps": 200, "train.val_every": 50, "train.checkpoint_every": 50}
    runs = tmp_path / "runs"
    args = ["run", str(QUICKSTART), *set_args(longer), "--variant", "isotropic", "--runs-dir", str(runs),
            "--device", "cpu", "--quiet"]  # fmt: skip
    run = runs / "quickstart" / "isotropic" / "seed0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaebench", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, cwd=tmp_path, env={**os.environ, WORKER_ENV: "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or not steps(run):  # training, between checkpoints
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.01)
        proc.send_signal(signal.SIGUSR2)
    finally:
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == EXIT_REQUEUE, output
    stopped_at = last(run)["loop"]["step"]
    assert 0 < stopped_at < 200 and not (run / "DONE").exists()
    assert stop_position(output) == (str(run), stopped_at)  # what the job wrapper reads back

    result = run_cli(*args[1:])  # the requeued job's command: the same
    assert result.exit_code == 0, result.output
    assert f"from step {stopped_at}" in result.output
    reference = tmp_path / "reference"
    run_one(tiny_variant(train__steps=200, train__val_every=50, train__checkpoint_every=50), 0, reference,
            device="cpu")  # fmt: skip
    got, want = last(run), last(reference)
    assert_identical(got["model"], want["model"], "model")
    assert_identical(got["optimizer"], want["optimizer"], "optimizer")
    assert_same_metrics(run, reference)


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGUSR2, signal.SIGUSR2, signal.SIGTERM]])
def test_sigterm_or_repeated_requeue_signals_mid_step_checkpoint_that_step(
    signals: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requeue_handlers_restored: None
) -> None:
    """SIGTERM (preemption, scancel) is a requeue signal too; repeats (SLURM signals every process of the
    job, the job wrapper forwards it) never escalate to an interrupt mid-step, unlike a second Ctrl-C."""

    def signalled(terms: Any, out: Any) -> Any:  # after the forward pass has drawn its random numbers
        for sig in signals:
            signal.raise_signal(sig)
        return terms

    on_training_calls(monkeypatch, {7}, signalled)
    run = tmp_path / "run"
    with pytest.raises(StopToRequeue) as stop:
        run_one(tiny_variant(), 0, run, device="cpu")
    assert (stop.value.step, stop.value.run_dir, stop.value.signum) == (7, run, signals[-1])
    assert last(run)["loop"]["step"] == 7
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # not a worker: the handler put back


def test_a_worker_signalled_outside_the_training_loop_stops_at_once_and_ignores_repeats(
    requeue_handlers_restored: None,
) -> None:
    from vaebench.train.signals import install_requeue_handlers

    install_requeue_handlers()
    with pytest.raises(StopToRequeue) as stop:
        signal.raise_signal(signal.SIGUSR2)
    assert stop.value.step is None and "nothing to checkpoint" in str(stop.value)
    signal.raise_signal(signal.SIGTERM)  # ignored now: the stop is under way
    assert stop_position(str(stop.value)) is None


def test_stop_line_and_position_agree() -> None:
    line = stop_line(signal.SIGUSR2, 1200, Path("runs/q/iso (1)/seed0"))
    assert stop_position(f"step 1198/2000 ...\n{line}\nAborted!\n") == ("runs/q/iso (1)/seed0", 1200)
