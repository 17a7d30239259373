"""The real SLURM cluster that the tests marked `slurm` run against, and what they read from it.

A one-node cluster started by `bash .ci/slurm_cluster.sh start` (as root; CI does it before the tests).
Test modules import this module as `slurm_cluster` (tests/ is on sys.path) and use its `slurm` fixture
with `pytest.mark.slurm`:

    from slurm_cluster import slurm  # noqa: F401  (the fixture)

    pytestmark = pytest.mark.slurm

    def test_x(slurm: Cluster, tmp_path: Path) -> None:
        ...  # submit through `vaebench run --executor slurm` with slurm_args(slurm)

Nothing here submits a job: the tests submit through vaebench (the path a user takes) and use these
helpers to watch and poke the jobs: their ids (`job_ids_of`), state (`squeue_state`, `job_record`),
signals and requeues as a cluster sends them (`send_signal`, `requeue`), and `cancel` to clean up.

The cluster keeps no accounting (see .ci/slurm_cluster.sh): `sacct` is unavailable; a job's state is
read from squeue/scontrol, which keep an ended job for MinJobAge (30 s) and then forget it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

START = "bash .ci/slurm_cluster.sh start"
UP = ("idle", "mixed", "allocated", "completing")  # the node takes jobs (mixed etc.: a job still on it)
T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """The one node of the test cluster, as sinfo reports it."""

    partition: str
    node: str
    cpus: int
    memory_mb: int
    state: str


def slurm_args(cluster: Cluster, cpus: int = 1) -> list[str]:
    """The `vaebench run` options that send its runs to this cluster: CPU-only jobs of `cpus` cores."""
    return [
        "--executor", "slurm", "--slurm-partition", cluster.partition, "--slurm-gpus-per-job", "0",
        "--set", f"slurm.cpus_per_job={cpus}",
    ]  # fmt: skip


def _run(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def find_cluster() -> Cluster | str:
    """The running cluster, or why there is none (one line)."""
    try:
        # -N: one line per node; the default partition is the one marked with '*'.
        out = _run("sinfo", "-h", "-N", "-o", "%P %N %c %m %T", timeout=15)
    except FileNotFoundError:
        return "sinfo is not installed (no SLURM client commands on this machine)"
    except subprocess.TimeoutExpired:
        return "sinfo got no answer from slurmctld within 15 s"
    lines = [line.split() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not lines:
        why = (out.stderr.strip().splitlines() or ["no nodes"])[-1]
        return f"sinfo: {why}"
    default = next((f for f in lines if f[0].endswith("*")), lines[0])
    partition, node, cpus, memory, state = default
    state = state.rstrip("*~#!%$@^-")  # sinfo's flags: not responding, powered down, ...
    if state not in UP:
        return f"node {node} of the SLURM cluster is {state}, not idle (sinfo -R says why)"
    return Cluster(partition.rstrip("*"), node, int(cpus), int(memory), state)


_missing: list[str] = []  # why there was no cluster, once a module found none: the later ones skip at once


def require_cluster() -> Cluster:
    """The running cluster; without one, a failure under CI=true (CI starts one, so a missing cluster is
    an error there) and a skip elsewhere, saying how to start it.

    A cluster found missing stays missing for the session: sinfo retries a controller that is down for
    about 10 s (MessageTimeout), which every module using the cluster would otherwise wait again.
    """
    found = _missing[0] if _missing else find_cluster()
    if isinstance(found, Cluster):
        return found
    _missing[:1] = [found]
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and no SLURM cluster answers: {found}. CI runs `{START}` before the tests.")
    pytest.skip(f"no SLURM cluster ({found}); to run these tests: sudo {START}, then pytest -m slurm")


@pytest.fixture(scope="module")
def slurm() -> Cluster:
    """The test cluster (see `require_cluster`)."""
    return require_cluster()


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `predicate` until it returns something true, and return that; after `timeout` seconds, fail
    the test saying `what` was awaited ("job 12 RUNNING")."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last seen: {value!r}")
        time.sleep(interval)


def squeue_state(job_id: str) -> str | None:
    """The job's state as squeue says it (PENDING, RUNNING, COMPLETED, CANCELLED, ...), or None once the
    controller has forgotten it (MinJobAge after it ended) or never knew it."""
    out = _run("squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T")
    return (out.stdout.split() or [None])[0] if out.returncode == 0 else None


def job_record(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Reason, Restarts, ExitCode, BatchFlag, ...); {} once the
    controller has forgotten the job. Values holding spaces (a command line) are cut at the first one."""
    out = _run("scontrol", "show", "job", "-o", str(job_id))
    if out.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)


def job_ids_of(folder: Path) -> list[str]:
    """The SLURM job ids submitit submitted from `folder` (its job files, `<id>_submitted.pkl`), oldest
    first. vaebench's folder is `<runs dir>/submitit`."""
    ids = {
        m[1]
        for p in Path(folder).glob("*_submitted.pkl")
        if (m := re.fullmatch(r"(\d+(?:_\d+)?)_submitted\.pkl", p.name))  # 123, or 123_4: an array's task
    }
    return sorted(ids, key=lambda i: tuple(int(part) for part in i.split("_")))


def send_signal(job_id: str, signal: str, *, batch_shell: bool = False) -> None:
    """Signal a job as a cluster does before a time limit or a preemption (`signal`: "USR2", "TERM", ...).

    scancel signals the job's steps, which is where submitit runs the job's Python (under srun); with
    `batch_shell` the batch script itself as well (--full).
    """
    argv = ["scancel", f"--signal={signal}", *(["--full"] if batch_shell else []), str(job_id)]
    out = _run(*argv)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr.strip()}"


def requeue(job_id: str) -> None:
    """Put a running batch job back in the queue, as preemption with PreemptMode=REQUEUE does: its
    processes get SIGTERM, SIGKILL KillWait (5 s) later, and it starts again with SLURM_RESTART_COUNT one
    higher once eligible again (about 6 s on the test cluster: AuthInfo=cred_expire=5)."""
    out = _run("scontrol", "requeue", str(job_id))
    assert out.returncode == 0, f"scontrol requeue {job_id}: {out.stderr.strip()}"


def cancel(job_ids: Iterable[str]) -> None:
    """Cancel jobs (a test's cleanup: none may outlive it); ids the controller forgot are ignored."""
    ids = [str(j) for j in job_ids]
    if ids:
        _run("scancel", *ids)


def fake_srun(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put an `srun` that does nothing first on PATH: submitit's SLURM executor only checks that one
    exists, so tests can build its sbatch header with no cluster."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
