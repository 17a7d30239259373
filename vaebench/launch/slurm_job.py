"""The SLURM job of one run: its `vaebench run` command as a child process, requeued at a time limit.

What submitit pickles into each job is a `RunJob`: calling it runs the run's command line (`__call__`).
SLURM signals the job `slurm.signal_delay_s` before its time limit (and, where the cluster is set up so,
at a preemption) with SIGUSR2; submitit's handler in the job then calls `RunJob.checkpoint`, which

1. makes sure the child stops cleanly: the child finishes its step, checkpoints and exits with
   EXIT_REQUEUE (`vaebench.train.signals`); SLURM may have signalled it already, and the signal is
   forwarded anyway (a repeat never interrupts a step); if it is not gone within two thirds of the
   delay it is killed (its newest checkpoint, written atomically, stands);
2. decides whether to requeue (`vaebench.launch.requeue.refusal`: at most slurm.max_requeues times, and
   never a job that reached its time limit without training a step since its previous requeue), reading
   where the child stopped from the line it printed (`stop_position`) and the cause from SLURM;
3. records the decision beside the job's log (`requeue.record_path`), where the controller reads it, and
   returns the same job to submit again (submitit requeues it: the rerun command resumes the run), or
   None with an `error:` paragraph in the log (submitit then ends the job failed).

Imports submitit: `SubmititExecutor` loads this module only when it submits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from vaebench.launch.requeue import (
    entry,
    previous_position,
    read_record,
    record_path,
    refusal,
    requeue_cause,
    requeue_status,
    scontrol_fields,
    write_record,
)
from vaebench.train.signals import EXIT_REQUEUE, stop_position

POLL_S = 0.2  # how often the child is checked
KILL_WAIT_S = 10.0  # after SIGKILL, how long to wait for the child to be gone
LOG_TAIL = 1 << 16  # bytes of this attempt's output searched for where the run stopped
SIGTERM_GRACE_S = 180.0  # after a run stopped on SIGTERM, how long to wait for SLURM's SIGKILL (KillWait)


class RunJob(submitit.helpers.Checkpointable):
    """`argv` with `env` added to the environment, output appended to `log`; calling it returns the
    exit status. Requeued by `checkpoint` at SLURM's warning signal (see the module's docstring).

    time_min, signal_delay_s, max_requeues: the job's slurm section (time limit in minutes, the warning's
    delay in seconds, the most requeues). The child process is not pickled (`__getstate__`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: str | Path,
        *,
        time_min: int,
        signal_delay_s: int,
        max_requeues: int,
    ) -> None:
        self.argv, self.env, self.log = list(argv), dict(env), str(log)
        self.time_min, self.signal_delay_s, self.max_requeues = time_min, signal_delay_s, max_requeues
        self._proc: subprocess.Popen | None = None
        self._log_start = 0  # size of the log when this attempt started: its output comes after
        self._started = 0.0  # time.time() at the start of this attempt

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None, "_log_start": 0, "_started": 0.0}

    def __call__(self) -> int:
        self.start()
        code = self.wait()
        if code == EXIT_REQUEUE and os.environ.get("SLURM_JOB_ID"):
            # The run stopped on SIGTERM, not on the USR2 that `checkpoint` handles (that path never
            # returns here): SLURM is requeueing the job (preemption, `scontrol requeue`) or cancelling
            # it, and SIGKILLs this process KillWait seconds after the SIGTERM. Returning now would write
            # a result, and the requeued job would never rerun the run: wait for SLURM instead.
            deadline = time.monotonic() + SIGTERM_GRACE_S
            while time.monotonic() < deadline:
                time.sleep(POLL_S)
        return code

    def start(self) -> None:
        """Start the child, its output appended to the log."""
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self._log_start, self._started = out.tell(), time.time()
            self._proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self) -> int:
        """The child's exit status, once it has ended."""
        while (code := self.exit_status()) is None:
            time.sleep(POLL_S)
        return code

    def exit_status(self) -> int | None:
        """The child's exit status (negative: the signal that ended it), or None while it runs.

        Reaps it with os.waitpid rather than Popen.poll/wait: `checkpoint` runs in a signal handler that
        interrupts `wait`, and Popen's waitpid lock, held by the interrupted frame, would make the
        handler's poll see a child that never ends.
        """
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            return proc.returncode if proc.returncode is not None else -1
        if pid == 0:
            return None
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode

    # ------------------------------------------------------------------------- requeue

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit in the job at SLURM's warning signal: stop the child cleanly, then the job
        to submit again (the same command: it resumes), or None to end the job failed (the log says why)."""
        code = self.stop_child()
        if code == 0:  # it finished as the signal came: the rerun finds the run finished, at once
            return submitit.helpers.DelayedSubmission(self)
        position = stop_position(self.attempt_output())
        path = record_path(Path(self.log))
        record = read_record(path)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "")
        count = (int(restarts) if restarts.isdigit() else len(record["requeues"])) + 1
        cause = requeue_cause(
            self.slurm_fields(),
            elapsed_s=time.time() - self._started,
            time_limit_s=60.0 * self.time_min,
            signal_delay_s=self.signal_delay_s,
        )
        why = refusal(
            count=count, max_requeues=self.max_requeues, cause=cause, position=position,
            previous=previous_position(record), first=not record["requeues"],
            time_min=self.time_min, signal_delay_s=self.signal_delay_s,
        )  # fmt: skip
        job_id = os.environ.get("SLURM_JOB_ID")
        record["max_requeues"] = self.max_requeues
        if why:
            record["refused"] = entry(count, cause, position, job_id, why)
        else:
            record["requeues"].append(entry(count, cause, position, job_id))
            record["refused"] = None
        write_record(path, record)
        if why:
            self.say(f"error: {why}")
            return None
        at = f" at step {position[1]}" if position else ""
        self.say(f"vaebench: {requeue_status(record)}: the run stopped{at} and resumes in the requeued job")
        return submitit.helpers.DelayedSubmission(self)

    @property
    def stop_wait_s(self) -> float:
        """How long the child may take to finish its step and checkpoint: two thirds of the signal's
        delay, leaving the rest for the requeue before the time limit."""
        return self.signal_delay_s * 2 / 3

    def stop_child(self) -> int | None:
        """Ask the child to stop (SIGUSR2) and wait for it, at most `stop_wait_s`; kill it after that.
        Its exit status (EXIT_REQUEUE when it stopped cleanly); None if it never started."""
        if self._proc is None:
            return None
        if self.exit_status() is None:
            try:
                self._proc.send_signal(signal.SIGUSR2)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_wait_s
        while (code := self.exit_status()) is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if code is None:
            self.say(
                f"vaebench: the run did not stop within {self.stop_wait_s:.0f} s of SIGUSR2 (a training "
                "step or its checkpoint took longer): killed; its newest checkpoint stands"
            )
            self._proc.kill()
            deadline = time.monotonic() + KILL_WAIT_S
            while (code := self.exit_status()) is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
        return code

    def attempt_output(self) -> str:
        """The end of what this attempt's child wrote to the log (up to LOG_TAIL bytes)."""
        try:
            with open(self.log, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(self._log_start, end - LOG_TAIL))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def slurm_fields(self) -> dict[str, str]:
        """`scontrol show job` of this job (TimeLimit, RunTime, JobState, ...); {} outside SLURM or when
        scontrol does not answer within 10 s."""
        job_id = os.environ.get("SLURM_JOB_ID")
        if not job_id:
            return {}
        try:
            shown = subprocess.run(
                ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return {}
        return scontrol_fields(shown.stdout) if shown.returncode == 0 else {}

    def say(self, line: str) -> None:
        """Append a line to the job's log, after the child's output."""
        with open(self.log, "a", encoding="utf-8") as out:
            out.write(line + "\n")
