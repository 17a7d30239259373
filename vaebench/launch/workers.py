"""Many runs at once: each a `vaebench run` subprocess on a GPU of its own, a CPU worker, or a SLURM job.

Why subprocesses rather than threads or a multiprocessing pool: each run gets its own CUDA context
and device (CUDA_VISIBLE_DEVICES), a crash or an out-of-memory kill ends that run only, and the run
is exactly what `vaebench run` does on its own (same resumption, same run folder). Each one's
output goes to a log file; the parent shows one line per run and collects the results.

`run_pool` is the one loop behind `vaebench run --parallel` (a fixed queue) and `vaebench sweep`
(a queue the sweep engine extends as results come in). Executors:

- `LocalExecutor`: subprocesses on this machine, one per slot. A slot is a GPU index (the run sees
  only that GPU), "cpu" (the run sees no GPU), or None (the environment is inherited).
- `SubmititExecutor`: one SLURM job per run through submitit (partition, time, GPUs per job);
  with cluster="local" submitit runs the jobs as local processes, which is how it is tested. Its
  `start_many` submits the jobs of one slurm section as one job array; run_pool uses it when several
  jobs start at once. Job states, why a job waits and whether it ever can: vaebench.launch.slurm_state.

Ctrl-C in the parent asks every running run to stop (SIGINT: the trainer finishes its step and
checkpoints), waits for them, and re-raises: rerunning the same command resumes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vaebench.config.spec import SlurmSpec, signal_delay_problem
from vaebench.core.errors import UserError
from vaebench.launch.requeue import read_record, record_path, requeue_status
from vaebench.launch.slurm_state import (
    JobState,
    SlurmWatch,
    fold_submitit_warnings,
    folded_warnings,
    group_by_section,
    job_name,
    refusal_message,
    section_key,
    status_text,
    stuck_message,
)

POLL_S = 0.5  # how often running jobs are checked
STOP_GRACE_S = 60.0  # after a stop request, how long a run may take to checkpoint before it is killed
# A SLURM job that ended without a result file: how long to wait for the file (shared filesystems lag).
RESULT_GRACE_S = 30.0
JOB_CELL = 48  # characters of a SLURM job's state in the table (its error line is in the last column)

StopReason = Literal["early-terminated", "interrupted"]


@dataclass
class Job:
    """One run to execute: its command line, extra environment and log file."""

    name: str  # unique within a pool; shown in the progress table
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    slurm: SlurmSpec | None = None  # resources of its SLURM job (None: the executor's defaults)


@dataclass
class Outcome:
    job: Job
    returncode: int  # the process's exit status (non-zero also for a job that never ran)
    device: str
    wall_s: float
    stopped: StopReason | None = None  # the parent asked it to stop, and why


class Handle(Protocol):
    def poll(self) -> int | None: ...  # the exit status once ended, else None
    def stop(self) -> None: ...  # ask it to stop after checkpointing
    def kill(self) -> None: ...


class Executor(Protocol):
    def start(self, job: Job, device: str | None) -> Handle: ...


# ----------------------------------------------------------------------------- devices


def device_slots(devices: str | None, parallel: int | None) -> list[str | None]:
    """The device of each of the `parallel` slots, devices used in turn.

    devices: "0,1,3" (GPU indices, as CUDA_VISIBLE_DEVICES names them), "cpu" (CPU workers), or None:
    every GPU torch sees, else the inherited environment. parallel: runs at once (default: one per
    listed device when --devices is given, else 1). More slots than devices put several runs on a GPU.
    """
    if devices is not None:
        listed: list[str | None] = [d.strip() for d in devices.split(",") if d.strip()]
        if not listed:
            raise UserError("--devices is empty: give GPU indices such as 0,1,2,3, or cpu.")
        if "cpu" in listed and len(listed) > 1:
            raise UserError(f"--devices {devices}: give GPU indices or cpu, not both.")
        bad = [d for d in listed if d != "cpu" and not (d or "").isdigit()]
        if bad:
            raise UserError(
                f"--devices {devices}: {bad[0]!r} is not a GPU index; give indices as CUDA_VISIBLE_DEVICES "
                "numbers them (e.g. 0,1,2,3; repeat one, 0,0, for two runs on a GPU), or cpu."
            )
        parallel = parallel or len(listed)
    else:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        listed = [str(i) for i in range(count)] or [None]
        parallel = parallel or 1
    if parallel < 1:
        raise UserError(f"--parallel must be at least 1 (given: {parallel}).")
    return [listed[i % len(listed)] for i in range(parallel)]


# Set in the environment of every run a LocalExecutor starts; `vaebench` then honours SIGINT even if it
# inherited SIGINT ignored (a controller started in the background by a shell without job control).
WORKER_ENV = "VAEBENCH_WORKER"


def device_env(device: str | None) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for a slot: the one GPU, none for "cpu", untouched for None."""
    if device is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device}


# ----------------------------------------------------------------------------- executors


class _LocalHandle:
    def __init__(self, proc: subprocess.Popen, log: Any) -> None:
        self.proc, self.log = proc, log

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and not self.log.closed:
            self.log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class LocalExecutor:
    """Subprocesses on this machine. CPU threads are shared out: OMP_NUM_THREADS = cores / parallel,
    unless the environment sets it (N runs with all cores each would thrash)."""

    def __init__(self, parallel: int) -> None:
        self.threads = max(1, (os.cpu_count() or 1) // max(parallel, 1))

    def start(self, job: Job, device: str | None) -> Handle:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(self.threads)),
            WORKER_ENV: "1",  # the run must honour SIGINT, the executor's stop signal (see cli.main)
        }
        env.update(device_env(device))
        env.update(job.env)
        log = open(job.log, "ab")  # closed by the handle when the process ends
        # A session of its own: a Ctrl-C in the terminal reaches the parent, which stops each run in turn.
        proc = subprocess.Popen(
            job.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return _LocalHandle(proc, log)


class _SubmititHandle:
    """A submitit job. On a SLURM cluster its state comes from the executor's SlurmWatch (squeue, scontrol),
    not from submitit's sacct calls: without accounting those never see a job end that left no result."""

    def __init__(self, job: Any, run: Job | None = None, owner: SubmititExecutor | None = None) -> None:
        self.job, self.run, self.owner = job, run, owner
        self.state: JobState | None = None  # SLURM's, as last read
        self.returncode: int | None = None
        self.ended_by_slurm = False  # it left SLURM without a result (timeout, cancelled, out of memory...)
        self._gone_since: float | None = None
        self._final: str | None = None

    def poll(self) -> int | None:
        watch = self.owner.watch if self.owner is not None else None
        if watch is None:  # submitit's local cluster
            return self._result() if self.job.done() else None
        if self.returncode is not None:
            return self.returncode
        if self.job.paths.result_pickle.exists():
            self.returncode = self._result()
        else:
            self.state = watch.state(str(self.job.job_id))
            if self.state is None or not self.state.gone:
                self._gone_since = None
                if self.state is not None and self.state.state == "PENDING":
                    self.owner.check_pending(self, self.state)  # type: ignore[union-attr]
                return None
            self._gone_since = self._gone_since or time.monotonic()
            if time.monotonic() - self._gone_since < RESULT_GRACE_S:
                return None
            self.returncode, self.ended_by_slurm = 1, True
        watch.forget(str(self.job.job_id))
        return self.returncode

    def _result(self) -> int:
        try:
            return int(self.job.result())
        except Exception:  # the job failed outside the run (timeout, node failure, cancelled)
            return 1

    @property
    def queued(self) -> bool:
        return self.state is not None and self.state.state == "PENDING" and self.returncode is None

    def describe(self) -> str | None:
        """The job for the progress table ('1234 PENDING (Resources)'); None on submitit's local cluster."""
        if self.owner is None or self.owner.watch is None:
            return None
        job_id = str(self.job.job_id)
        if self.returncode is None:
            return status_text(self.state, job_id)
        if self._final is None:  # the run's exit status, or SLURM's state when it ended the job
            slurm_failed = self.state is not None and self.state.state == "FAILED"
            failed = self.returncode != 0 and (not self.ended_by_slurm or slurm_failed)
            error = error_line(self.run.log) if failed and self.run is not None else ""
            code = None if self.ended_by_slurm else self.returncode
            self._final = status_text(self.state, job_id, code, error)
        return self._final

    def stop(self) -> None:
        self.job.cancel(check=False)

    kill = stop


class SubmititExecutor:
    """One SLURM job per run, submitted through submitit; each job runs the run's command line.

    cluster: "slurm" (sbatch) or "local" (submitit's local executor: same files, local processes;
    used by the tests). Job files and SLURM's own logs go to `folder`; the run's output to its log.
    Resources come from each job's SlurmSpec (the variant's `slurm` section) or `defaults`. Each job is a
    `vaebench.launch.slurm_job.RunJob`: at SLURM's warning signal (slurm.signal_delay_s before the time
    limit, or a preemption) its run checkpoints and the job is requeued, up to slurm.max_requeues times.
    """

    def __init__(self, folder: Path, defaults: SlurmSpec, cluster: str = "slurm") -> None:
        try:
            import submitit
        except ImportError:
            raise UserError(
                "--executor slurm needs submitit: pip install -e '.[slurm]' (or pip install submitit)."
            ) from None
        self.submitit = submitit
        self.folder, self.defaults, self.cluster = Path(folder), defaults, cluster
        self.watch = SlurmWatch() if cluster == "slurm" else None
        self.handles: list[_SubmititHandle] = []
        self._names: dict[str, str] = {}  # run name -> its job name
        self._taken: set[str] = set()  # the job names' first characters, one per run
        fold_submitit_warnings()

    def start(self, job: Job, device: str | None) -> Handle:
        executor = self.configured(job)
        with self._refusals([job]):
            return self._handle(job, self._submit(executor, job))

    def start_many(self, jobs: Sequence[Job]) -> list[Handle]:
        """Start `jobs` at once: one job array per distinct slurm section (one sbatch each; at most
        slurm.array_parallelism of its tasks run at once). Each task is still a job of its own to poll and
        cancel. The handles come in the order of `jobs`; if one section is refused, none stay queued."""
        specs = [self.spec(job) for job in jobs]
        if self.watch is not None:
            for spec in specs:
                self.watch.preflight(spec)  # every section before any sbatch
        handles: dict[int, Handle] = {}
        try:
            for group in group_by_section(specs):
                members = [jobs[i] for i in group]
                if len(members) == 1:
                    handles[group[0]] = self.start(members[0], None)
                    continue
                name = job_name("\n".join(j.name for j in members), self._taken, count=len(members))
                executor = self.configured(members[0], name=name)
                with self._refusals(members):
                    with executor.batch():  # one sbatch on leaving the block
                        submitted = [self._submit(executor, job) for job in members]
                handles |= {i: self._handle(j, s) for i, j, s in zip(group, members, submitted, strict=True)}
        except UserError:
            for handle in handles.values():
                handle.stop()
            raise
        return [handles[i] for i in range(len(jobs))]

    def _submit(self, executor: Any, job: Job) -> Any:
        """Submit the job's command as a requeueable SLURM job (`slurm_job.RunJob`)."""
        from vaebench.launch.slurm_job import RunJob  # imports submitit

        spec = self.spec(job)
        job.log.parent.mkdir(parents=True, exist_ok=True)
        record_path(job.log).unlink(missing_ok=True)  # a new job: no requeue yet, whatever an old one did
        env = {WORKER_ENV: "1", **job.env}  # the run must honour SIGINT, SIGUSR2 and SIGTERM (cli.main)
        # as many torch threads as the job has cores (not whatever the submitting shell had)
        env.setdefault("OMP_NUM_THREADS", str(spec.cpus_per_job))
        run = RunJob(
            job.argv, env, job.log,
            time_min=spec.time_min, signal_delay_s=spec.signal_delay_s, max_requeues=spec.max_requeues,
        )  # fmt: skip
        return executor.submit(run)

    def _handle(self, job: Job, submitted: Any) -> _SubmititHandle:
        handle = _SubmititHandle(submitted, job, self)
        if self.watch is not None:
            self.watch.watch(str(submitted.job_id))  # as poll asks for it
        self.handles.append(handle)
        return handle

    @contextmanager
    def _refusals(self, jobs: Sequence[Job]) -> Iterator[None]:
        """sbatch's refusal (submitit raises it with sbatch's stderr) as a UserError naming what to change."""
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        try:
            yield
        except (FailedJobError, FailedSubmissionError) as err:
            if self.watch is None:
                raise
            spec = self.spec(jobs[0])
            part = self.watch.partition(spec.partition)
            raise UserError(refusal_message([j.name for j in jobs], str(err), spec, part)) from None

    def check_pending(self, handle: _SubmititHandle, state: JobState) -> None:
        """A UserError when `handle`'s pending job can never start (slurm_state.SlurmWatch.stuck), after
        cancelling it and the other queued jobs of its slurm section (they would wait forever too)."""
        assert self.watch is not None and handle.run is not None
        spec = self.spec(handle.run)
        problems = self.watch.stuck(state, spec)
        if problems is None:
            return
        same = [
            h
            for h in self.handles
            if h is not handle
            and h.returncode is None
            and (h.state is None or h.state.state == "PENDING")
            and section_key(self.spec(h.run)) == section_key(spec)  # type: ignore[arg-type]
        ]
        for h in [handle, *same]:
            h.job.cancel(check=False)
            h.returncode, h.ended_by_slurm = 1, True
        part = self.watch.partition(spec.partition)
        raise UserError(stuck_message(handle.run.name, state, spec, part, problems, len(same)))

    def spec(self, job: Job) -> SlurmSpec:
        return job.slurm or self.defaults

    def job_name(self, job: Job) -> str:
        """Its SLURM job name: short, and distinct from the other runs' in squeue's first 8 characters."""
        if job.name not in self._names:
            self._names[job.name] = job_name(job.name, self._taken)
        return self._names[job.name]

    def configured(self, job: Job, name: str | None = None) -> Any:
        """A submitit executor set up with the job's resources (its sbatch header), after a check that some
        node of its partition could run it (SlurmWatch.preflight). name: the job's (default: job_name)."""
        spec = self.spec(job)
        problem = signal_delay_problem(spec.time_min, spec.signal_delay_s)  # --slurm-time may cause it
        if problem:
            raise UserError(f"{job.name}: {problem}")
        if self.watch is not None:
            self.watch.preflight(spec)
        try:
            # submitit's own count of time limits must not stop requeues before slurm.max_requeues does
            executor = self.submitit.AutoExecutor(
                folder=self.folder,
                cluster=self.cluster,
                slurm_max_num_timeout=spec.max_requeues,
                local_max_num_timeout=spec.max_requeues,
            )
        except RuntimeError as err:  # submitit finds no `srun`: not on a SLURM cluster
            raise UserError(
                f"--executor slurm: {err} Submit from a node of the cluster, or try the job path here "
                "with --slurm-cluster local."
            ) from None
        params: dict[str, Any] = {
            "name": name or self.job_name(job),
            "timeout_min": spec.time_min,
            "gpus_per_node": spec.gpus_per_job,
            "cpus_per_task": spec.cpus_per_job,
        }
        if spec.mem_gb is not None:
            params["mem_gb"] = spec.mem_gb
        if self.cluster == "slurm":
            params |= {
                "slurm_partition": spec.partition,
                "slurm_account": spec.account,
                "slurm_array_parallelism": spec.array_parallelism,
                "slurm_signal_delay_s": spec.signal_delay_s,  # sbatch --signal=USR2@<delay>
            }
            params = {k: v for k, v in params.items() if v is not None}
        else:
            params.pop("cpus_per_task")  # the local executor has no notion of it
        executor.update_parameters(**params)
        return executor


# ----------------------------------------------------------------------------- progress


def last_line(path: Path, size: int = 4096) -> str:
    """The last non-empty line of a log file ('' if none): what a run is doing, or why it failed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            lines = f.read().decode("utf-8", "replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def error_line(path: Path) -> str:
    """The most telling line of a failed run's log: vaebench's `error:` line, else the last line."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if line.startswith("error:"):
            return " ".join(part.strip() for part in lines[i : i + 3] if part.strip())
    return last_line(path)


class Board:
    """One line per run: a live rich table in a terminal, plain lines otherwise (--quiet, CI, SLURM)."""

    def __init__(self, console: Console, total: int | None, plain: bool) -> None:
        self.console, self.total, self.plain = console, total, plain or not console.is_terminal
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None

    def __enter__(self) -> Board:
        if not self.plain:
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()
        elif self.plain:
            for line in folded_warnings():
                self._print(line)

    def started(self, job: Job, device: str | None) -> None:
        self.rows[job.name] = {
            "log": job.log,
            "device": device or "-",
            "t0": time.monotonic(),
            "status": "running",
        }
        if self.plain:
            self._print(f"started {job.name} on {device or 'default device'} (log: {job.log})")

    def ended(self, name: str, status: str, note: str = "") -> None:
        """A run that needed no job: already finished, or refused before it started."""
        self.rows[name] = {"log": None, "device": "-", "t0": 0.0, "status": status, "wall": 0.0, "note": note}
        if self.plain:
            self._print(f"{status} {name}{': ' + note if note else ''}")

    def job_state(self, name: str, text: str, queued: bool = False) -> None:
        """A running run's SLURM job as the executor sees it ('1234 PENDING (Resources)'); queued: pending."""
        row = self.rows[name]
        if self.plain and text != row.get("job"):
            self._print(f"{name}: SLURM job {text}")
        row["job"] = text
        if "wall" not in row:
            row["status"] = "queued" if queued else "running"

    def done(self, outcome: Outcome, status: str, note: str = "") -> None:
        row = self.rows[outcome.job.name]
        row.update(status=status, wall=outcome.wall_s, note=note)
        if self.plain:
            self._print(
                f"{status} {outcome.job.name} after {outcome.wall_s:.0f} s{': ' + note if note else ''}"
            )

    def refresh(self) -> None:
        self._requeues()
        if self.live is not None:
            self.live.update(self._render())

    def _requeues(self) -> None:
        """A running SLURM job that was requeued shows "requeued (time limit, 1 of 10)" in place of
        "running", read from the record its job keeps beside its log (`vaebench.launch.requeue`)."""
        for name, row in self.rows.items():
            if row["status"] != "running" or row["log"] is None:
                continue
            shown = requeue_status(read_record(record_path(row["log"])))
            if shown != row.get("requeue"):
                row["requeue"] = shown
                if self.plain and shown:
                    self._print(f"{shown} {name}")

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _render(self) -> Group:
        """The table at the console's width: device, status and time always whole; the run name
        shortened in the middle (its /seed<k> end stays) and the last output cut, when space runs out."""
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        head = ", ".join(f"{n} {s}" for s, n in counts.items()) or "starting"
        items = list(self.rows.items())
        running = [(n, r) for n, r in items if "wall" not in r]
        ended = [(n, r) for n, r in items if "wall" in r][-8:]  # the latest few
        cells = []
        for name, row in ended + running:
            wall = row.get("wall", time.monotonic() - row["t0"])
            info = row.get("note") or (last_line(row["log"]) if "wall" not in row else "")
            device = row.get("job", row["device"])[:JOB_CELL]  # a SLURM job: its id, state and node
            status = (row.get("requeue") if "wall" not in row else None) or row["status"]
            cells.append((name, device, status, f"{wall:.0f} s", info))
        jobs = any("job" in row for row in self.rows.values())
        columns = ("run", "job" if jobs else "device", "status", "time", "last output")
        whole = {c: max([len(c), *(len(cell[i]) for cell in cells)]) for i, c in enumerate(columns)}
        fixed = whole[columns[1]] + whole["status"] + whole["time"] + 2 * (len(columns) - 1)
        output = min(90, whole["last output"], max(24, self.console.width - fixed - whole["run"]))
        run_width = max(16, min(whole["run"], self.console.width - fixed - output))
        table = Table(header_style="bold", box=None, pad_edge=False)
        for col in columns:
            width = {"run": run_width, "last output": output}.get(col, whole[col])
            table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=width, max_width=width)
        colours = {"running": "cyan", "finished": "green", "failed": "red", "skipped": "dim"}
        for name, device, status, wall, info in cells:
            colour = colours.get(status, "yellow")
            run = Text(middle_cut(name, run_width))
            table.add_row(run, device, f"[{colour}]{status}[/]", wall, Text(info))
        total = f" of {self.total}" if self.total else ""
        footer = [Text(line, style="dim") for line in folded_warnings()]
        return Group(Text(f"runs{total}: {head}", style="bold"), table, *footer)


def middle_cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut in the middle ("decoder-isotr…batch-16/seed1"): the end
    of a run name says its variant's last levels and its seed, which an ellipsis at the end would hide."""
    if len(text) <= width:
        return text
    tail = (width - 1) // 2
    return text[: width - 1 - tail] + "…" + text[len(text) - tail :]


# ----------------------------------------------------------------------------- the pool


def run_pool(
    next_job: Callable[[], Job | None],
    executor: Executor,
    slots: Sequence[str | None],
    on_done: Callable[[Outcome], tuple[str, str]],
    board: Board,
    on_tick: Callable[[], Sequence[str]] | None = None,
) -> None:
    """Run jobs from `next_job` (None: none to start now), one per free slot, until none is left running.

    on_done(outcome) -> (status, note) records a run that ended and says what the board shows.
    on_tick() -> names of running jobs to stop early (hyperband); called every poll.
    A KeyboardInterrupt stops every running job (each checkpoints), records them, then propagates.
    """
    active: dict[int, tuple[Job, Handle, float, StopReason | None]] = {}
    try:
        while True:
            starting: list[tuple[int, Job]] = []
            for slot in (s for s in range(len(slots)) if s not in active):
                job = next_job()
                if job is None:
                    break
                starting.append((slot, job))
            for (slot, job), handle in zip(starting, _start(executor, starting, slots), strict=True):
                active[slot] = (job, handle, time.monotonic(), None)
                board.started(job, slots[slot])
            if not active:
                return
            time.sleep(POLL_S)
            _collect(active, slots, on_done, board)
            for job, handle, _, _ in active.values():
                _show_job(board, job, handle)
            if on_tick is not None:
                to_stop = set(on_tick())
                for slot, (job, handle, t0, stopped) in list(active.items()):
                    if job.name in to_stop and stopped is None:
                        handle.stop()
                        active[slot] = (job, handle, t0, "early-terminated")
            board.refresh()
    except KeyboardInterrupt:
        for slot, (job, handle, t0, _) in list(active.items()):
            handle.stop()
            active[slot] = (job, handle, t0, "interrupted")
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while active and time.monotonic() < deadline:
                time.sleep(POLL_S)
                _collect(active, slots, on_done, board)
        finally:  # a second Ctrl-C, or the grace period is over
            for _, handle, _, _ in active.values():
                handle.kill()
            deadline = time.monotonic() + 10.0
            while active and time.monotonic() < deadline:
                time.sleep(0.05)
                _collect(active, slots, on_done, board)
            for slot, (job, _, t0, stopped) in list(active.items()):  # gone silent: record it anyway
                del active[slot]
                outcome = Outcome(job, -9, slots[slot] or "-", time.monotonic() - t0, stopped)
                board.done(outcome, *on_done(outcome))
        raise


def _start(executor: Executor, starting: list[tuple[int, Job]], slots: Sequence[str | None]) -> list[Handle]:
    """Start the jobs of free slots: all at once through the executor's `start_many` where it has one (SLURM:
    a job array per slurm section), else one by one on their slots' devices."""
    start_many = getattr(executor, "start_many", None)
    if start_many is not None and len(starting) > 1:
        return start_many([job for _, job in starting])
    return [executor.start(job, slots[slot]) for slot, job in starting]


def _show_job(board: Board, job: Job, handle: Handle) -> None:
    """The handle's job state on the board, for handles that have one (SLURM jobs)."""
    describe = getattr(handle, "describe", None)
    text = describe() if describe is not None else None
    if text:
        board.job_state(job.name, text, getattr(handle, "queued", False))


def _collect(
    active: dict[int, tuple[Job, Handle, float, StopReason | None]],
    slots: Sequence[str | None],
    on_done: Callable[[Outcome], tuple[str, str]],
    board: Board,
) -> None:
    for slot, (job, handle, t0, stopped) in list(active.items()):
        code = handle.poll()
        if code is None:
            continue
        del active[slot]
        _show_job(board, job, handle)
        outcome = Outcome(job, code, slots[slot] or "-", time.monotonic() - t0, stopped)
        status, note = on_done(outcome)
        board.done(outcome, status, note)


def make_executor(
    kind: str,
    *,
    parallel: int | None,
    devices: str | None,
    folder: Path,
    slurm: SlurmSpec,
    cluster: str = "slurm",
    default_jobs: int = 1,
) -> tuple[Executor, list[str | None]]:
    """The executor of `--executor` and its slots (runs at once, each with its device).

    local: `device_slots(devices, parallel)`. slurm: `parallel` jobs in the queue at once (default
    `default_jobs`), GPUs chosen by SLURM (`slurm.gpus_per_job` per job), so --devices is refused.
    """
    if kind == "local":
        slots = device_slots(devices, parallel)
        return LocalExecutor(len(slots)), slots
    if devices is not None:
        raise UserError(
            "--devices picks GPUs on this machine; with --executor slurm use --slurm-gpus-per-job."
        )
    return SubmititExecutor(folder, slurm, cluster), [None] * (parallel or max(default_jobs, 1))


def python_vaebench() -> list[str]:
    """The command that runs this vaebench with this interpreter, whatever PATH holds."""
    return [sys.executable, "-m", "vaebench"]
