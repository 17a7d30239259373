"""Requeue at a SLURM time limit or preemption: the run stops cleanly on SIGUSR2/SIGTERM with exit status
EXIT_REQUEUE, its SLURM job (`RunJob`) decides whether to requeue, and the rerun resumes bit-exactly.

No SLURM here: the signal is sent by the test, the job's child is a real `vaebench run` or a fake one,
and SLURM's answers (`scontrol show job`) are strings.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from slurm_cluster import fake_srun
from test_train import assert_identical, assert_same_metrics, last, run_cli, steps
from tiny import QUICKSTART, TINY, on_training_calls, set_args, tiny_variant
from vaebench.config.spec import SlurmSpec
from vaebench.core.errors import UserError
from vaebench.launch.requeue import (
    read_record,
    record_path,
    refusal,
    requeue_cause,
    requeue_status,
    scontrol_fields,
    slurm_duration_s,
    write_record,
)
from vaebench.launch.runner import run_one
from vaebench.launch.workers import WORKER_ENV, Board, Job
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


# ----------------------------------------------------------------------------- the spec


def test_a_signal_delay_not_well_below_the_time_limit_is_refused_naming_both_fields() -> None:
    assert SlurmSpec(time_min=3, signal_delay_s=90).signal_delay_s == 90  # half the limit: allowed
    with pytest.raises(ValueError) as err:
        SlurmSpec(time_min=2, signal_delay_s=90)
    message = str(err.value)
    assert "slurm.signal_delay_s = 90 s" in message and "slurm.time_min = 2 min" in message
    assert "30 s after it starts" in message and "at most 60 s" in message


def test_slurm_time_flag_too_short_for_the_signal_delay_is_one_clear_error(tmp_path: Path) -> None:
    result = run_cli(QUICKSTART, "--executor", "slurm", "--slurm-time", "1", "--slurm-cluster", "local",
                     "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 1 and "slurm.signal_delay_s = 90 s" in result.output
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- the decision, pure


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:58:30", 3510), ("1-00:00:00", 86400), ("2-03:04", 183840), ("45:10", 2710), ("90", 5400),
     ("3-5", 277200), ("UNLIMITED", None), ("Partition_Limit", None), ("", None)],
)  # fmt: skip
def test_slurm_durations(text: str, seconds: float | None) -> None:
    assert slurm_duration_s(text) == seconds


SCONTROL = (
    "JobId=4242 JobName=seed0 UserId=me(1000) JobState=RUNNING Reason=None Dependency=(null) "
    "Requeue=1 Restarts=1 RunTime=00:58:45 TimeLimit=01:00:00 TimeMin=N/A"
)


def test_scontrol_fields_are_read_by_name() -> None:
    fields = scontrol_fields(SCONTROL)
    assert fields["JobState"] == "RUNNING" and fields["RunTime"] == "00:58:45" and fields["Restarts"] == "1"


@pytest.mark.parametrize(
    ("change", "elapsed_s", "cause"),
    [
        ({}, 0.0, "time limit"),  # 75 s left: the signal at 90 s (SLURM may send it up to a minute early)
        ({"RunTime": "00:56:00"}, 0.0, "preemption"),  # 240 s left: more than 90 s + a minute
        ({"RunTime": "00:20:00"}, 3500.0, "preemption"),  # SLURM's word over the job's own clock
        ({"JobState": "PREEMPTED"}, 0.0, "preemption"),
        ({"TimeLimit": "UNLIMITED"}, 0.0, "preemption"),
        (None, 3500.0, "time limit"),  # no answer from scontrol: the job's own clock
        (None, 600.0, "preemption"),
    ],
)
def test_the_cause_is_read_from_what_slurm_says_else_from_the_clock(
    change: dict[str, str] | None, elapsed_s: float, cause: str
) -> None:
    fields = {} if change is None else scontrol_fields(SCONTROL) | change
    assert requeue_cause(fields, elapsed_s=elapsed_s, time_limit_s=3600, signal_delay_s=90) == cause


def decide(**given: Any) -> str | None:
    defaults = dict(count=2, max_requeues=10, cause="time limit", position=("r", 900), previous=("r", 400),
                    first=False, time_min=60, signal_delay_s=90)  # fmt: skip
    return refusal(**(defaults | given))


def test_requeue_while_the_run_progresses_up_to_the_bound() -> None:
    assert decide() is None
    assert decide(position=("other-run", 10)) is None  # the job moved on to its next run
    assert decide(count=10) is None
    why = decide(count=11)
    assert why is not None and "10 times" in why and "slurm.max_requeues = 10" in why


def test_no_progress_at_a_time_limit_is_refused_with_what_to_change() -> None:
    why = decide(position=("r", 400))
    assert why is not None and "without training a step since its previous requeue" in why
    assert "slurm.time_min = 60 min" in why and "slurm.signal_delay_s = 90 s" in why
    first = decide(count=1, first=True, previous=None, position=None)  # never reached the training loop
    assert first is not None and "since the job started" in first
    assert decide(count=1, first=True, previous=None) is None


def test_a_preemption_is_requeued_even_without_progress_but_not_beyond_the_bound() -> None:
    assert decide(cause="preemption", position=("r", 400)) is None
    assert decide(cause="preemption", position=None, first=True, previous=None, count=1) is None
    assert decide(cause="preemption", count=11) is not None


def test_the_status_says_cause_and_count_of_the_last_requeue() -> None:
    record = {"max_requeues": 10, "requeues": [{"count": 1, "cause": "time limit"}], "refused": None}
    assert requeue_status(record) == "requeued (time limit, 1 of 10)"
    record["requeues"].append({"count": 2, "cause": "preemption"})
    assert requeue_status(record) == "requeued (preemption, 2 of 10)"
    assert requeue_status(record | {"refused": {"why": "..."}}) is None
    assert requeue_status({"requeues": []}) is None


def test_the_record_sits_beside_the_log_and_a_damaged_one_reads_empty(tmp_path: Path) -> None:
    log = tmp_path / "seed0.log"
    assert record_path(log) == tmp_path / "seed0.requeue.json"
    write_record(record_path(log), {"max_requeues": 3, "requeues": [], "refused": None})
    assert read_record(record_path(log))["max_requeues"] == 3
    record_path(log).write_text("{not json")
    assert read_record(record_path(log)) == {"requeues": [], "refused": None}


# ----------------------------------------------------------------------------- the SLURM job


FAKE_RUN = """
import signal, sys, time
from vaebench.train.signals import EXIT_REQUEUE, stop_line

def stop(signum, frame):
    print(stop_line(signum, {step}, {run!r}), flush=True)
    sys.exit(EXIT_REQUEUE)

signal.signal(signal.SIGUSR2, {handler})
print("training", flush=True)
while True:
    time.sleep(0.02)
"""


def fake_job(tmp_path: Path, *, step: int = 7, ignores: bool = False, delay_s: int = 30) -> Any:
    """A RunJob whose child acts like `vaebench run` on SIGUSR2 (stops at `step`, exit 75), or ignores it."""
    pytest.importorskip("submitit")
    from vaebench.launch.slurm_job import RunJob

    code = FAKE_RUN.format(
        step=step, run=str(tmp_path / "run"), handler="signal.SIG_IGN" if ignores else "stop"
    )
    log = tmp_path / "seed0.log"
    job = RunJob([sys.executable, "-c", textwrap.dedent(code)], {}, log, time_min=60, signal_delay_s=delay_s,
                 max_requeues=3)  # fmt: skip
    return job


def started(job: Any, elapsed_s: float) -> Any:
    """Start the job's child, as `__call__` does, `elapsed_s` into the job; wait until it runs."""
    job.start()
    job._started -= elapsed_s
    deadline = time.monotonic() + 30
    while "training" not in Path(job.log).read_text():
        assert job.exit_status() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return job


@pytest.fixture
def outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)


def test_checkpoint_waits_for_the_child_to_stop_records_and_resubmits_itself(
    tmp_path: Path, outside_slurm: None
) -> None:
    job = started(fake_job(tmp_path), elapsed_s=3540)  # 60 s before its 60 min limit
    delayed = job.checkpoint()
    assert delayed is not None and delayed.function is job and not delayed.args
    assert job.exit_status() == EXIT_REQUEUE  # it stopped cleanly before the job is requeued
    record = read_record(record_path(job.log))
    assert record["max_requeues"] == 3 and record["refused"] is None
    [entry] = record["requeues"]
    assert (entry["count"], entry["cause"], entry["step"]) == (1, "time limit", 7)
    assert entry["run"] == str(tmp_path / "run")
    assert "vaebench: requeued (time limit, 1 of 3): the run stopped at step 7" in Path(job.log).read_text()

    again = started(pickle.loads(pickle.dumps(job)), elapsed_s=3540)  # the requeued job, same step again
    assert again.checkpoint() is None  # no progress at a time limit: the job ends failed, saying why
    record = read_record(record_path(job.log))
    assert record["refused"]["count"] == 2 and "without training a step" in record["refused"]["why"]
    assert "error: not requeued" in Path(job.log).read_text()


def test_a_preempted_job_is_requeued_and_counted_from_slurm_restart_count(
    tmp_path: Path, outside_slurm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # requeued twice before (SLURM's count)
    job = started(fake_job(tmp_path), elapsed_s=600)
    assert job.checkpoint() is not None
    [entry] = read_record(record_path(job.log))["requeues"]
    assert (entry["count"], entry["cause"]) == (3, "preemption")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # the bound: max_requeues = 3
    assert started(fake_job(tmp_path, step=9), elapsed_s=600).checkpoint() is None


def test_a_child_that_ignores_the_signal_is_killed_within_two_thirds_of_the_delay(
    tmp_path: Path, outside_slurm: None
) -> None:
    job = started(fake_job(tmp_path, ignores=True, delay_s=3), elapsed_s=3599)
    t0 = time.monotonic()
    assert job.checkpoint() is None  # killed before any step was checkpointed: nothing gained
    assert time.monotonic() - t0 < 2 + 5 and job.exit_status() == -signal.SIGKILL
    assert "did not stop within 2 s of SIGUSR2" in Path(job.log).read_text()


def test_the_job_pickles_without_its_child_process(tmp_path: Path, outside_slurm: None) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")  # what submitit pickles jobs with
    job = started(fake_job(tmp_path), elapsed_s=0)
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(job))
        assert copy._proc is None and copy.argv == job.argv and copy.max_requeues == 3
    finally:
        job._proc.kill()
        job.wait()


def test_submitted_jobs_carry_the_signal_delay_and_start_without_an_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    from vaebench.launch.workers import SubmititExecutor

    fake_srun(tmp_path, monkeypatch)  # submitit only checks that `srun` exists
    job = Job("seed0", ["true"], tmp_path / "seed0.log", slurm=SlurmSpec(signal_delay_s=120, max_requeues=4))
    slurm = SubmititExecutor(tmp_path / "jobs", SlurmSpec())
    slurm.watch = None  # no partition check: whatever cluster this machine has is not this test's
    executor = slurm.configured(job)
    assert "#SBATCH --signal=USR2@120\n" in executor._executor._make_submission_file_text("true", "uid")
    assert executor._executor.max_num_timeout == 4  # submitit's own count never stops requeues first
    short = Job("s", ["true"], tmp_path / "s.log", slurm=SlurmSpec().model_copy(update={"time_min": 1}))
    with pytest.raises(UserError, match=r"slurm\.signal_delay_s = 90 s"):  # --slurm-time 1 over a spec
        slurm.configured(short)


# ----------------------------------------------------------------------------- the controller


def test_the_board_shows_a_requeued_job_with_cause_and_count(tmp_path: Path) -> None:
    out = io.StringIO()
    board = Board(Console(file=out, width=160), total=1, plain=True)
    job = Job("runs/q/isotropic/seed0", ["true"], tmp_path / "seed0.log")
    board.started(job, None)
    board.refresh()
    assert "requeued" not in out.getvalue()
    write_record(
        record_path(job.log), {"max_requeues": 10, "requeues": [{"count": 1, "cause": "time limit"}]}
    )
    board.refresh()
    board.refresh()  # said once
    assert out.getvalue().count("requeued (time limit, 1 of 10) runs/q/isotropic/seed0") == 1
    table = io.StringIO()
    Console(file=table, width=160).print(board._render())
    assert "requeued (time limit, 1 of 10)" in table.getvalue()


def test_stop_line_and_position_agree() -> None:
    line = stop_line(signal.SIGUSR2, 1200, Path("runs/q/iso (1)/seed0"))
    assert stop_position(f"step 1198/2000 ...\n{line}\nAborted!\n") == ("runs/q/iso (1)/seed0", 1200)
