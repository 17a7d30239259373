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
    require_cluster,
    slurm,  # noqa: F401  (the fixture)
    slurm_args,
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
