"""`vaebench run --executor slurm` against a real one-node SLURM cluster (.ci/slurm_cluster.sh).

The tiny quickstart run goes through sbatch, srun and submitit exactly as on a cluster (the job runs as
this user on this machine, so the tmp run folder is the shared filesystem), and must train exactly what
the same run trains here. Without a cluster these tests skip, or fail under CI=true (slurm_cluster.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import slurm_cluster
from slurm_cluster import (
    Cluster,
    cancel,
    find_cluster,
    job_ids_of,
    job_record,
    requeue,
    require_cluster,
    send_signal,
    slurm,  # noqa: F401  (the fixture)
    slurm_args,
    wait_for,
)
from tiny import QUICKSTART, TINY, set_args
from vaebench.runs.checkpoint import load_checkpoint

# The tiny run, with its end-of-training evaluation (a test/bpd_elbo to compare) kept small.
OVERRIDES = {**TINY, "eval.at_end": True, "eval.iw_samples": 2, "eval.mi_batch_size": 8}
RUN = Path("quickstart/isotropic/seed0")  # the run folder, under the runs dir


def vaebench_run(runs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`vaebench run` of the tiny isotropic run into `runs`, as a user types it (one torch thread)."""
    argv = [sys.executable, "-m", "vaebench", "run", str(QUICKSTART), "--variant", "isotropic"]
    argv += ["--runs-dir", str(runs), "--quiet", *set_args(OVERRIDES), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the SLURM job inherits it from sbatch's environment
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def on_slurm(slurm: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """The tiny run through SLURM: its runs dir, its job ids, and each job's record right after it ended
    (the controller forgets a job MinJobAge, 30 s, after it ends)."""
    runs = tmp_path_factory.mktemp("slurm") / "runs"
    try:
        done = vaebench_run(runs, *slurm_args(slurm, cpus=1))
        ids = job_ids_of(runs / "submitit")
        return {"runs": runs, "done": done, "ids": ids, "records": [job_record(i) for i in ids]}
    finally:
        cancel(job_ids_of(runs / "submitit"))  # none outlives the test, whatever happened


@pytest.mark.slurm
def test_a_run_on_slurm_is_one_completed_job_that_leaves_a_complete_run_folder(
    on_slurm: dict[str, Any],
    slurm: Cluster,  # noqa: F811
) -> None:
    """sbatch, srun and submitit run the run's `vaebench run` as one batch job on the node, and the
    controller sees it end: the run folder is the same as a run here leaves."""
    done = on_slurm["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"finished {on_slurm['runs'] / RUN}" in done.stdout
    # One SLURM batch job, on the cluster's node, that ran to its end with exit code 0.
    assert len(on_slurm["ids"]) == 1
    (record,) = on_slurm["records"]
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", record
    assert record["BatchFlag"] == "1" and record["NodeList"] == slurm.node
    assert record["Partition"] == slurm.partition and record["NumCPUs"] == "1"
    folder = on_slurm["runs"] / RUN
    for name in ("DONE", "summary.json", "spec.yaml", "env.json", "metrics.jsonl", "checkpoints/last.pt"):
        assert (folder / name).is_file(), f"{name} missing from the run folder"
    summary = (folder / "summary.json").read_text()
    assert '"step": 12' in summary and '"test/bpd_elbo"' in summary


@pytest.mark.slurm
def test_a_run_on_slurm_trains_exactly_what_the_same_run_trains_here(
    on_slurm: dict[str, Any], tmp_path: Path
) -> None:
    """Same spec, seed and thread count: the same test bpd and bit-identical final weights."""
    here = vaebench_run(tmp_path / "runs")
    assert here.returncode == 0, here.stdout + here.stderr
    there_dir, here_dir = on_slurm["runs"] / RUN, tmp_path / "runs" / RUN

    def test_bpd(folder: Path) -> float:
        return json.loads((folder / "summary.json").read_text())["test/bpd_elbo"]

    assert test_bpd(there_dir) == test_bpd(here_dir)
    there = load_checkpoint(there_dir / "checkpoints" / "last.pt")["model"]
    mine = load_checkpoint(here_dir / "checkpoints" / "last.pt")["model"]
    assert there.keys() == mine.keys()
    different = [k for k in there if not torch.equal(there[k], mine[k])]
    assert not different, f"weights that differ: {different}"


def test_without_a_cluster_the_slurm_tests_fail_in_ci_and_skip_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the `slurm` fixture does with what sinfo answers (a fake sinfo first on PATH)."""

    def sinfo_says(script: str) -> None:
        (tmp_path / "sinfo").write_text(f"#!/bin/sh\n{script}\n")
        (tmp_path / "sinfo").chmod(0o755)

    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm_cluster, "_missing", [])  # the session's answer is not this test's
    sinfo_says(
        "echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2; exit 1"
    )
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=r"CI=true and no SLURM cluster answers: .*connect failure"
    ):
        require_cluster()
    monkeypatch.delenv("CI")
    with pytest.raises(
        pytest.skip.Exception, match=r"bash \.ci/slurm_cluster\.sh start, then pytest -m slurm"
    ):
        require_cluster()
    sinfo_says("echo 'debug* vm 2 22900 drained*'")  # a node SLURM took out of service
    assert find_cluster() == "node vm of the SLURM cluster is drained, not idle (sinfo -R says why)"
    sinfo_says("echo 'debug* vm 2 22900 idle'")
    assert find_cluster() == Cluster("debug", "vm", 2, 22900, "idle")


# ----------------------------------------------------------------------------- time limits, preemption

LONG = {"train.steps": 1500, "train.checkpoint_every": 100, "train.val_every": 500, "train.log_every": 10}


@contextmanager
def long_run(runs: Path, cluster: Cluster, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """The controller of a longer tiny run on SLURM (about 30 s of training), in the background; on the
    way out it is killed and the run's jobs cancelled, whatever the test did (none outlives it)."""
    argv = [sys.executable, "-m", "vaebench", "run", str(QUICKSTART), "--variant", "isotropic"]
    argv += [
        "--runs-dir",
        str(runs),
        "--quiet",
        *set_args({**OVERRIDES, **LONG}),
        *slurm_args(cluster),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    controller = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield controller
    finally:
        controller.kill()
        cancel(job_ids_of(runs / "submitit"))


def logged_step(runs: Path) -> int:
    """The last training step metrics.jsonl shows (0 before the first row)."""
    try:
        rows = (runs / RUN / "metrics.jsonl").read_text().splitlines()
        return json.loads(rows[-1])["step"] if rows else 0
    except (OSError, ValueError, KeyError):
        return 0


def running_job(runs: Path, after_step: int) -> str:
    """The id of the run's SLURM job once it is RUNNING and has trained past `after_step`."""
    wait_for(lambda: job_ids_of(runs / "submitit"), 60, "the job to be submitted")
    (job_id,) = job_ids_of(runs / "submitit")
    wait_for(lambda: logged_step(runs) > after_step, 90, f"the run to train past step {after_step}")
    return job_id


def finish(controller: subprocess.Popen[str]) -> str:
    out, _ = controller.communicate(timeout=180)
    assert controller.returncode == 0, out
    return out


def same_final_weights(runs: Path, reference: Path) -> None:
    ours = load_checkpoint(runs / RUN / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference / RUN / "checkpoints" / "last.pt")
    assert ours["loop"]["step"] == theirs["loop"]["step"] == LONG["train.steps"]
    different = [k for k in ours["model"] if not torch.equal(ours["model"][k], theirs["model"][k])]
    assert not different, f"weights that differ from the uninterrupted run: {different}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The longer run, trained here in one go (one thread): what every interrupted one must equal."""
    runs = tmp_path_factory.mktemp("uninterrupted") / "runs"
    done = vaebench_run(runs, *set_args(LONG))
    assert done.returncode == 0, done.stdout + done.stderr
    return runs


@pytest.mark.slurm
def test_a_job_warned_of_its_time_limit_checkpoints_requeues_and_ends_bit_identical(
    slurm: Cluster,  # noqa: F811
    uninterrupted: Path,
    tmp_path: Path,
) -> None:
    """SIGUSR2, as SLURM sends it signal_delay_s before the limit (sent early here with scancel): the run
    checkpoints, the job requeues itself, and the requeued job resumes to the same weights."""
    runs = tmp_path / "runs"
    # a 2 min limit warned 60 s ahead: a signal now is the time-limit warning
    with long_run(runs, slurm, "--set", "slurm.time_min=2", "--set", "slurm.signal_delay_s=60") as controller:
        job_id = running_job(runs, after_step=200)
        send_signal(job_id, "USR2")
        out = finish(controller)
    assert f"finished {runs / RUN}" in out
    record = json.loads((runs / RUN).with_name("seed0.requeue.json").read_text())
    (requeued,) = record["requeues"]
    assert requeued["cause"] == "time limit" and requeued["count"] == 1 and requeued["step"] > 200
    assert record["refused"] is None
    assert "stopped to be requeued at step" in (runs / RUN).with_name("seed0.log").read_text()
    same_final_weights(runs, uninterrupted)


@pytest.mark.slurm
def test_a_preempted_job_is_requeued_by_slurm_and_resumes_bit_identical(
    slurm: Cluster,  # noqa: F811
    uninterrupted: Path,
    tmp_path: Path,
) -> None:
    """`scontrol requeue`, what preemption with PreemptMode=REQUEUE does: SIGTERM, then SIGKILL; the run
    checkpoints on SIGTERM, and the job SLURM starts again resumes it."""
    runs = tmp_path / "runs"
    with long_run(runs, slurm) as controller:
        job_id = running_job(runs, after_step=200)
        requeue(job_id)
        wait_for(lambda: job_record(job_id).get("Restarts", "0") != "0", 30, "SLURM to requeue the job")
        out = finish(controller)
    assert f"finished {runs / RUN}" in out
    assert "stopped to be requeued at step" in (runs / RUN).with_name("seed0.log").read_text()
    same_final_weights(runs, uninterrupted)


@pytest.mark.slurm
def test_a_cancelled_job_is_reported_cancelled_and_keeps_its_checkpoints(
    slurm: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    with long_run(runs, slurm) as controller:
        job_id = running_job(runs, after_step=200)
        cancel([job_id])
        out, _ = controller.communicate(timeout=120)
    assert controller.returncode != 0
    assert "CANCELLED" in out, out
    checkpoint = load_checkpoint(runs / RUN / "checkpoints" / "last.pt")
    assert checkpoint["loop"]["step"] >= 100  # the periodic checkpoint survives the cancellation


@pytest.mark.slurm
def test_a_request_no_node_can_satisfy_fails_fast_naming_what_to_change(
    slurm: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    too_many = slurm.cpus + 6
    done = vaebench_run(runs, *slurm_args(slurm), "--set", f"slurm.cpus_per_job={too_many}")
    assert done.returncode != 0
    message = done.stdout + done.stderr
    assert f"slurm.cpus_per_job {too_many} is more than any node has ({slurm.cpus})" in message
    assert f"partition {slurm.partition}: 1 node, {slurm.cpus} CPUs" in message
    assert job_ids_of(runs / "submitit") == []  # nothing was submitted


@pytest.mark.slurm
def test_a_grid_goes_as_one_job_array_with_short_distinct_names(
    slurm: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Both variants of the quickstart: one sbatch (an array of two tasks), both runs finished."""
    runs = tmp_path / "runs"
    argv = [sys.executable, "-m", "vaebench", "run", str(QUICKSTART), "--runs-dir", str(runs), "--quiet"]
    argv += [*set_args(OVERRIDES), *slurm_args(slurm)]
    try:
        done = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                              text=True, timeout=180, check=False)  # fmt: skip
    finally:
        cancel(job_ids_of(runs / "submitit"))
    assert done.returncode == 0, done.stdout + done.stderr
    for variant in ("isotropic", "variance"):
        assert (runs / "quickstart" / variant / "seed0" / "DONE").is_file()
    scripts = list((runs / "submitit").glob("*_submission.sh"))
    assert len(scripts) == 1  # one sbatch
    header = scripts[0].read_text()
    assert "#SBATCH --array=0-1" in header
    (name,) = (
        line.split("=", 1)[1] for line in header.splitlines() if line.startswith("#SBATCH --job-name=")
    )
    assert len(name) <= 16 and name.startswith("vb-")
