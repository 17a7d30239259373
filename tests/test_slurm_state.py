"""SLURM job states without accounting, jobs that can never start, job names and job arrays.

Command outputs are as SLURM 22.05 writes them (squeue/scontrol/sacct/sinfo/sbatch on a cluster whose
`debug` partition has one 2-CPU node and no GPUs, and without accounting); no SLURM is needed.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from rich.console import Console

from vaebench.config.spec import SlurmSpec
from vaebench.core.errors import UserError
from vaebench.launch import workers
from vaebench.launch.slurm_state import (
    FoldRepeats,
    JobState,
    Partition,
    SlurmWatch,
    expand_job_id,
    fields_for,
    fold_submitit_warnings,
    gpu_count,
    group_by_section,
    job_name,
    never_starts,
    parse_sacct,
    parse_scontrol,
    parse_sinfo,
    parse_squeue,
    refusal_message,
    request_problems,
    status_text,
    stuck_message,
)
from vaebench.launch.workers import Board, Job, Outcome, SubmititExecutor, run_pool

SQUEUE = """\
101|PENDING|PartitionConfig||vb-3f2a-beta4-s0
102|RUNNING|None|node1|vb-9c1e-beta1-s0
103_[2-3%2]|PENDING|JobArrayTaskLimit||vb-77ab-grid-x4
103_0|RUNNING|None|node1|vb-77ab-grid-x4
103_1|COMPLETING|None|node2|vb-77ab-grid-x4
109|PENDING|ReqNodeNotAvail, UnavailableNodes:node[3-4]||vb-0b1d-beta8-s2
"""

SCONTROL_TIMEOUT = """\
JobId=104 JobName=vb-5d0c-beta2-s1
   UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A
   Priority=4294901758 Nice=0 Account=(null) QOS=normal
   JobState=TIMEOUT Reason=TimeLimit Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15
   RunTime=00:05:02 TimeLimit=00:05:00 TimeMin=N/A
   SubmitTime=2024-05-02T10:11:12 EligibleTime=2024-05-02T10:11:12
   AccrueTime=2024-05-02T10:11:12
   StartTime=2024-05-02T10:11:13 EndTime=2024-05-02T10:16:15 Deadline=N/A
   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2024-05-02T10:11:13 Scheduler=Main
   Partition=debug AllocNode:Sid=login:4242
   ReqNodeList=(null) ExcNodeList=(null)
   NodeList=node1
   BatchHost=node1
   NumNodes=1 NumCPUs=2 NumTasks=1 CPUs/Task=2 ReqB:S:C:T=0:0:*:*
   TRES=cpu=2,node=1,billing=2
   Socks/Node=* NtasksPerN:B:S:C=1:0:*:* CoreSpec=*
   MinCPUsNode=2 MinMemoryNode=0 MinTmpDiskNode=0
   Features=(null) DelayBoot=00:00:00
   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)
   Command=/tmp/runs/submitit/104/submission_file.sh
   WorkDir=/home/alice/vaebench
   StdErr=/tmp/runs/submitit/104/104_0_log.err
   StdIn=/dev/null
   StdOut=/tmp/runs/submitit/104/104_0_log.out
   Power=

"""

SCONTROL_ARRAY = """\
JobId=107 ArrayJobId=105 ArrayTaskId=2 JobName=vb-77ab-grid-x4
   UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A
   JobState=OUT_OF_MEMORY Reason=OutOfMemory Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:125
   RunTime=00:00:41 TimeLimit=1-00:00:00 TimeMin=N/A
   Partition=debug AllocNode:Sid=login:4242
   NodeList=node1
   BatchHost=node1
"""

SCONTROL_PENDING_ARRAY = """\
JobId=108 ArrayJobId=108 ArrayTaskId=1-3%2 JobName=vb-1c2d-grid-x4
   JobState=PENDING Reason=PartitionConfig Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0
   RunTime=00:00:00 TimeLimit=1-00:00:00 TimeMin=N/A
   NodeList=(null)
"""

SCONTROL_REQUEUED = """\
JobId=110 JobName=vb-aa01-beta4-s0
   JobState=PENDING Reason=BeginTime Dependency=(null)
   Requeue=1 Restarts=2 BatchFlag=1 Reboot=0 ExitCode=0:0
   NodeList=(null)
"""

SACCT = """\
110|COMPLETED|0:0|None|node1
110.batch|COMPLETED|0:0||node1
110.extern|COMPLETED|0:0||node1
111|CANCELLED by 1000|0:15|None|None assigned
112_3|PREEMPTED|0:15|None|node2
113|FAILED|1:0|NonZeroExitCode|node1
"""

SINFO = """\
debug*|2|23000|(null)|infinite|1
gpu|64|512000|gpu:a100:8(S:0-1)|2-00:00:00|4
gpu|32|256000|(null)|2-00:00:00|2
"""

NO_ACCOUNTING = "sacct: error: Slurm accounting storage is disabled\n"
INVALID_JOB = "slurm_load_jobs error: Invalid job id specified\n"
SBATCH_REFUSAL = "sbatch: error: Batch job submission failed: Requested node configuration is not available"


# ----------------------------------------------------------------------------- parsing


def test_squeue_gives_each_job_its_state_pending_reason_and_node() -> None:
    states = parse_squeue(SQUEUE)
    assert states["101"] == JobState("101", "PENDING", "PartitionConfig", "")
    assert states["102"] == JobState("102", "RUNNING", "", "node1")
    assert states["103_1"].state == "COMPLETING" and not states["103_1"].gone
    assert states["103_2"].reason == states["103_3"].reason == "JobArrayTaskLimit"
    assert states["109"].reason.startswith("ReqNodeNotAvail")


def test_a_pending_array_record_stands_for_each_of_its_tasks() -> None:
    assert expand_job_id("103_[2-3%2]") == ["103_2", "103_3"]
    assert expand_job_id("103_[1,4-5]") == ["103_1", "103_4", "103_5"]
    assert expand_job_id("103_[0-6:3]") == ["103_0", "103_3", "103_6"]
    assert expand_job_id("103_7") == ["103_7"] and expand_job_id("104") == ["104"]
    assert set(parse_squeue(SQUEUE)) == {"101", "102", "103_0", "103_1", "103_2", "103_3", "109"}


def test_scontrol_reads_jobs_that_left_the_queue() -> None:
    timeout = parse_scontrol(SCONTROL_TIMEOUT)["104"]
    assert (timeout.state, timeout.reason, timeout.node, timeout.exit_code, timeout.signal) == (
        "TIMEOUT", "TimeLimit", "node1", 0, 15,
    )  # fmt: skip
    assert timeout.gone
    oom = parse_scontrol(SCONTROL_ARRAY)
    assert list(oom) == ["105_2"] and oom["105_2"].state == "OUT_OF_MEMORY"  # its array id, not JobId=107
    pending = parse_scontrol(SCONTROL_PENDING_ARRAY)
    assert sorted(pending) == ["108_1", "108_2", "108_3"] and pending["108_2"].reason == "PartitionConfig"
    assert pending["108_2"].node == ""
    requeued = parse_scontrol(SCONTROL_REQUEUED)["110"]
    assert (requeued.state, requeued.restarts) == ("PENDING", 2)
    assert parse_scontrol("") == {}


def test_sacct_skips_job_steps_and_reads_who_cancelled_as_cancelled() -> None:
    states = parse_sacct(SACCT)
    assert sorted(states) == ["110", "111", "112_3", "113"]
    assert states["111"] == JobState("111", "CANCELLED", "", "", 0, 15)
    assert states["112_3"].state == "PREEMPTED" and states["112_3"].gone
    assert (states["113"].state, states["113"].exit_code) == ("FAILED", 1)


@pytest.mark.parametrize(
    "reason",
    ["PartitionConfig", "BadConstraints", "InvalidAccount", "InvalidQOS", "PartitionNodeLimit",
     "PartitionTimeLimit", "PartitionCpuLimit", "QOSMaxCpuPerJobLimit", "QOSMaxGRESPerJob",
     "QOSMaxWallDurationPerJobLimit", "AssocMaxCpuPerJobLimit", "AssocMaxMemPerJob", "QOSMaxGRESPerNode",
     "QOSMinGRES", "DependencyNeverSatisfied"],
)  # fmt: skip
def test_reasons_that_waiting_never_resolves(reason: str) -> None:
    assert never_starts(reason)


@pytest.mark.parametrize(
    "reason",
    ["Resources", "Priority", "AssocGrpCpuLimit", "AssocGrpGRES", "QOSGrpCpuLimit", "QOSGrpGRES",
     "ReqNodeNotAvail, UnavailableNodes:node[3-4]", "ReqNodeNotAvail,_UnavailableNodes:", "BeginTime",
     "Dependency", "JobHeldUser", "JobHeldAdmin", "JobArrayTaskLimit", "QOSMaxJobsPerUserLimit",
     "QOSMaxCpuPerUserLimit", "PartitionDown", "PartitionInactive", "NodeDown", "", "SomethingNew"],
)  # fmt: skip
def test_reasons_that_resolve_by_waiting(reason: str) -> None:
    assert not never_starts(reason)


def test_sinfo_describes_a_partition_and_finds_the_default_one() -> None:
    debug = parse_sinfo(SINFO, None)
    assert debug is not None and debug.name == "debug"
    assert debug.describe() == "partition debug: 1 node, 2 CPUs, 23,000 MB, no GPUs, time limit infinite"
    assert debug.time_limit_min is None
    gpu = parse_sinfo(SINFO, "gpu")
    assert gpu is not None and [g.gpus for g in gpu.groups] == [8, 0]
    assert gpu.time_limit_min == 2 * 24 * 60
    assert gpu.describe() == (
        "partition gpu: 4 nodes, 64 CPUs, 512,000 MB, 8 GPUs (gpu:a100:8) each; "
        "2 nodes, 32 CPUs, 256,000 MB, no GPUs each, time limit 2-00:00:00"
    )
    assert parse_sinfo(SINFO, "nosuch") is None and parse_sinfo("", None) is None


def test_time_limits_and_gres_strings_as_sinfo_writes_them() -> None:
    minutes = {t: Partition("p", (), t).time_limit_min for t in ("30:00", "4:00:00", "1-12:00:00", "5")}
    assert minutes == {"30:00": 30, "4:00:00": 240, "1-12:00:00": 2160, "5": 5}
    assert gpu_count("gpu:a100:8(S:0-1)") == 8 and gpu_count("gpu:4,shard:8") == 4
    assert gpu_count("gpu:a100:2(S:0),gpu:v100:1(S:1)") == 3 and gpu_count("(null)") == 0


# ----------------------------------------------------------------------------- requests and messages


def test_a_request_beyond_every_node_names_the_fields_that_exceed_them() -> None:
    debug = parse_sinfo(SINFO, "debug")
    assert debug is not None
    problems = dict(request_problems(SlurmSpec(cpus_per_job=8, gpus_per_job=1, mem_gb=32), debug))
    assert set(problems) == {"cpus_per_job", "gpus_per_job", "mem_gb"}
    assert "slurm.cpus_per_job 8 is more than any node has (2)" == problems["cpus_per_job"]
    assert "32,768 MB" in problems["mem_gb"] and "23,000 MB" in problems["mem_gb"]
    assert request_problems(SlurmSpec(cpus_per_job=2, gpus_per_job=0, mem_gb=22), debug) == []

    gpu = parse_sinfo(SINFO, "gpu")
    assert gpu is not None
    assert request_problems(SlurmSpec(partition="gpu", cpus_per_job=64, gpus_per_job=8), gpu) == []
    late = request_problems(SlurmSpec(partition="gpu", time_min=3000), gpu)
    assert [f for f, _ in late] == ["time_min"] and "2-00:00:00" in late[0][1]


def test_resources_that_fit_apart_but_on_no_node_together() -> None:
    part = parse_sinfo("mixed*|64|256000|(null)|infinite|2\nmixed*|8|64000|gpu:4|infinite|2\n", None)
    assert part is not None
    problems = request_problems(SlurmSpec(cpus_per_job=16, gpus_per_job=1), part)
    assert len(problems) == 1 and "no node has 16 CPUs and 1 GPU together" in problems[0][1]


def test_the_fail_fast_message_is_one_paragraph_naming_job_reason_fields_and_limits() -> None:
    spec = SlurmSpec(partition="debug", cpus_per_job=8, gpus_per_job=0)
    debug = parse_sinfo(SINFO, "debug")
    state = JobState("101", "PENDING", "PartitionConfig")
    message = stuck_message("/runs/exp/beta4/seed0", state, spec, debug, request_problems(spec, debug), 3)
    assert "\n" not in message
    for part in (
        "SLURM job 101 (run /runs/exp/beta4/seed0) can never start",
        "reason PartitionConfig, which waiting never resolves",
        "partition debug: 1 node, 2 CPUs, 23,000 MB, no GPUs, time limit infinite",
        "slurm.cpus_per_job 8 is more than any node has (2)",
        "Change slurm.cpus_per_job (",
        "slurm.partition",
        "Cancelled it and 3 other queued jobs",
    ):
        assert part in message, message
    assert "slurm.gpus_per_job" not in message  # it asks for none: nothing to change there


def test_a_reason_alone_says_which_fields_to_change_when_sinfo_cannot() -> None:
    assert fields_for("QOSMaxGRESPerJob")[0] == "gpus_per_job"
    assert fields_for("PartitionTimeLimit")[0] == "time_min"
    assert fields_for("InvalidAccount") == ["account", "partition"]
    resources = {"cpus_per_job", "gpus_per_job", "mem_gb", "time_min", "account"}
    assert resources <= set(fields_for("PartitionConfig"))
    state = JobState("7", "PENDING", "InvalidAccount")
    message = stuck_message("r", state, SlurmSpec(account="x"), None, [], 0)
    assert "Change slurm.account" in message and "sinfo did not describe the partition" in message
    assert "Cancelled it;" in message


def test_an_sbatch_refusal_reads_like_the_pending_one() -> None:
    spec = SlurmSpec(cpus_per_job=8, gpus_per_job=1)
    runs = ["/runs/a/seed0", "/runs/a/seed1"]
    message = refusal_message(runs, SBATCH_REFUSAL, spec, parse_sinfo(SINFO, None))
    assert "\n" not in message
    assert message.startswith(
        "sbatch refused the job of run /runs/a/seed0 and 1 other run with the same slurm section: "
        "Batch job submission failed: Requested node configuration is not available."
    )
    assert "partition debug: 1 node, 2 CPUs" in message
    assert "Change slurm.cpus_per_job, slurm.gpus_per_job (" in message
    said = "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds"
    late = refusal_message(["r"], said, SlurmSpec(time_min=99999), None)
    assert "Change slurm.time_min" in late


def test_status_texts_for_the_progress_table_carry_the_job_id() -> None:
    assert status_text(JobState("101", "PENDING", "Resources"), "101") == "101 PENDING (Resources)"
    assert status_text(JobState("102", "RUNNING", "", "node1"), "102") == "102 RUNNING (node1)"
    for state in ("TIMEOUT", "PREEMPTED", "CANCELLED", "OUT_OF_MEMORY"):
        assert status_text(JobState("9_1", state, "", "node1"), "9_1") == f"9_1 {state}"
    failed = status_text(JobState("5", "RUNNING", "", "node1"), "5", 1, "error: CUDA out of memory")
    assert failed == "5 FAILED (exit 1: error: CUDA out of memory)"
    assert status_text(JobState("5", "RUNNING", "", "node1"), "5", 0) == "5 COMPLETED"
    assert status_text(None, "5") == "5 submitted"
    requeued = parse_scontrol(SCONTROL_REQUEUED)["110"]
    assert status_text(requeued, "110") == "110 PENDING (BeginTime, restart 2)"


# ----------------------------------------------------------------------------- job names


def test_job_names_are_short_and_differ_in_what_squeue_shows() -> None:
    """squeue's default NAME column is 8 characters wide: a grid's runs must differ there."""
    grid = [(b, d, s) for b in range(8) for d in "ab" for s in range(4)]
    runs = [f"/scratch/alice/runs/ablation/beta-{b}_decoder-{d}/seed{s}" for b, d, s in grid]
    taken: set[str] = set()
    names = [job_name(run, taken) for run in runs]
    assert all(len(n) <= 16 and n.startswith("vb-") for n in names)
    assert len({n[:8] for n in names}) == len(runs)
    assert names[5].endswith("-s1")  # its seed is readable
    assert job_name(runs[0]) == job_name(runs[0])  # the same run, the same name
    assert job_name("grid-007")[8:] == "grid-007"
    assert job_name("/runs/exp/v/seed1\n/runs/exp/v/seed2", count=2).endswith("-x2")


def test_a_hash_collision_is_bumped_to_a_free_prefix() -> None:
    taken = {job_name("/runs/a/seed0")[:8]}
    bumped = job_name("/runs/a/seed0", taken)
    assert bumped[:8] not in {job_name("/runs/a/seed0")[:8]} and len(taken) == 2


# ----------------------------------------------------------------------------- the watch


class FakeSlurm:
    """Answers squeue/scontrol/sacct/sinfo from a table of job states, and records every call."""

    def __init__(self, squeue: str = "", scontrol: dict[str, str] | None = None, sinfo: str = SINFO) -> None:
        self.squeue, self.scontrol, self.sinfo = squeue, scontrol or {}, sinfo
        self.calls: list[list[str]] = []
        self.cancelled: list[str] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        command = argv[0]
        if command == "squeue":
            return 0, self.squeue, ""
        if command == "scontrol":
            record = self.scontrol.get(argv[-1])
            return (0, record, "") if record else (1, "", INVALID_JOB)
        if command == "sacct":
            return 1, "", NO_ACCOUNTING
        if command == "sinfo":
            return 0, self.sinfo, ""
        raise AssertionError(argv)

    def count(self, command: str) -> int:
        return sum(call[0] == command for call in self.calls)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_reads_every_job_in_one_squeue_call_per_interval() -> None:
    slurm, clock = FakeSlurm(SQUEUE), Clock()
    watch = SlurmWatch(slurm, every_s=10, clock=clock)
    for job_id in ("101", "102", "103_2"):
        watch.watch(job_id)
    for _ in range(20):  # the pool polls every 0.5 s
        assert watch.state("101").state == "PENDING"  # type: ignore[union-attr]
        assert watch.state("103_2").reason == "JobArrayTaskLimit"  # type: ignore[union-attr]
    assert slurm.count("squeue") == 1
    assert "-j" in slurm.calls[0] and "101,102,103_2" in slurm.calls[0]
    clock.now = 10
    watch.state("102")
    assert slurm.count("squeue") == 2 and slurm.count("scontrol") == 0


def test_jobs_that_left_the_queue_come_from_scontrol_and_sacct_is_probed_once() -> None:
    slurm, clock = FakeSlurm(SQUEUE, {"104": SCONTROL_TIMEOUT}), Clock()
    watch = SlurmWatch(slurm, every_s=10, clock=clock)
    watch.watch("104")
    watch.watch("999")  # forgotten by scontrol too (MinJobAge), and no accounting
    assert watch.state("104").state == "TIMEOUT"  # type: ignore[union-attr]
    assert watch.state("999") == JobState("999", "UNKNOWN") and watch.state("999").gone  # type: ignore[union-attr]
    assert watch.accounting is False
    clock.now = 10
    watch.state("104")
    assert slurm.count("sacct") == 1 and slurm.count("scontrol") == 4


def test_a_slurm_controller_that_does_not_answer_keeps_the_last_states() -> None:
    slurm, clock = FakeSlurm(SQUEUE), Clock()
    watch = SlurmWatch(slurm, every_s=1, clock=clock)
    watch.watch("102")
    assert watch.state("102").state == "RUNNING"  # type: ignore[union-attr]
    watch.run = lambda argv: (1, "", "slurm_load_jobs error: Unable to contact slurm controller")
    clock.now = 5
    assert watch.state("102").state == "RUNNING"  # type: ignore[union-attr]


def test_a_never_resolving_reason_must_persist_before_the_job_counts_as_stuck() -> None:
    slurm, clock = FakeSlurm("101|PENDING|PartitionConfig||vb-3f2a-beta4-s0\n", sinfo=""), Clock()
    watch = SlurmWatch(slurm, every_s=10, clock=clock)
    watch.watch("101")
    spec = SlurmSpec(cpus_per_job=8)
    assert watch.stuck(watch.state("101"), spec) is None  # type: ignore[arg-type]
    clock.now = 10
    assert watch.stuck(watch.state("101"), spec) == []  # type: ignore[arg-type]  # sinfo says nothing


def test_a_request_beyond_the_partition_is_stuck_whatever_the_reason() -> None:
    slurm = FakeSlurm("101|PENDING|Resources||vb-3f2a-beta4-s0\n")
    watch = SlurmWatch(slurm, every_s=10, clock=Clock())
    watch.watch("101")
    problems = watch.stuck(watch.state("101"), SlurmSpec(cpus_per_job=8, gpus_per_job=0))  # type: ignore[arg-type]
    assert problems is not None and [f for f, _ in problems] == ["cpus_per_job"]
    running = JobState("101", "RUNNING", "", "node1")
    assert watch.stuck(running, SlurmSpec(cpus_per_job=8)) is None


def test_the_preflight_refuses_a_request_no_node_offers_before_submitting() -> None:
    slurm = FakeSlurm()
    watch = SlurmWatch(slurm)
    refused = r"could never start on partition debug.*slurm.cpus_per_job 8.*Nothing was submitted"
    with pytest.raises(UserError, match=refused):
        watch.preflight(SlurmSpec(cpus_per_job=8, gpus_per_job=0))
    watch.preflight(SlurmSpec(partition="gpu", cpus_per_job=8, gpus_per_job=1))
    watch.preflight(SlurmSpec(partition="gpu", cpus_per_job=8, gpus_per_job=1))
    assert slurm.count("sinfo") == 2  # once per partition
    SlurmWatch(lambda argv: (127, "", "sinfo: command not found")).preflight(SlurmSpec(cpus_per_job=99))


# ----------------------------------------------------------------------------- submitit's warnings


def test_repeated_submitit_warnings_fold_into_one_line() -> None:
    logger = logging.getLogger("vaebench.test.submitit")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    fold = FoldRepeats()
    logger.addFilter(fold)
    try:
        for call in range(1, 13):
            logger.warning(
                f"Call #{call} - Bypassing sacct error Command '['sacct', '-o', 'JobID,State,NodeList', "
                "'--parsable2', '-j', '101']' returned non-zero exit status 1., status may be inaccurate."
            )
        logger.warning("Requeued job 101 (2 remaining timeouts)")
    finally:
        logger.removeFilter(fold)
        logger.removeHandler(handler)
    assert len(records) == 2 and records[0].startswith("Call #1 - Bypassing sacct error")
    assert fold.lines() == [
        "submitit: 'Bypassing sacct error ...' x12, shown once "
        "(no accounting: states come from squeue/scontrol)"
    ]


def test_the_folding_filter_is_installed_once_and_keeps_warnings_off_submitits_stdout() -> None:
    logger = logging.getLogger("submitit")
    out, err = logging.StreamHandler(), logging.StreamHandler()
    out.setLevel(logging.DEBUG)
    err.setLevel(logging.WARNING)
    saved = logger.handlers[:], logger.filters[:]
    logger.handlers[:] = [err, out]  # as submitit's logging config sets them
    try:
        fold = fold_submitit_warnings()
        assert fold_submitit_warnings() is fold
        assert sum(isinstance(f, FoldRepeats) for f in logger.filters) == 1
        record = logging.LogRecord("submitit", logging.WARNING, "", 0, "x", (), None)
        assert not out.filter(record) and err.filter(record)
        assert out.filter(logging.LogRecord("submitit", logging.INFO, "", 0, "x", (), None))
    finally:
        logger.handlers[:], logger.filters[:] = saved


# ----------------------------------------------------------------------------- job arrays and the pool


def test_jobs_group_into_one_array_per_distinct_slurm_section() -> None:
    a, b = SlurmSpec(partition="gpu"), SlurmSpec(partition="gpu", mem_gb=64)
    assert group_by_section([a, b, a, SlurmSpec(partition="gpu"), b]) == [[0, 2, 3], [1, 4]]


class FakeJob:
    def __init__(self, folder: Path) -> None:
        self.job_id: str | None = None
        self.paths = SimpleNamespace(result_pickle=folder / "never")
        self.cancelled = False

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


class FakeAutoExecutor:
    """submitit's AutoExecutor as far as SubmititExecutor uses it: parameters, submit, batch()."""

    sbatch: ClassVar[list[tuple[dict[str, Any], int]]] = []  # (parameters, jobs) per sbatch call
    next_id: ClassVar[int] = 900

    def __init__(self, folder: Path, cluster: str, **max_num_timeout: int) -> None:
        self.folder, self.params = Path(folder), {}
        self._batch: list[FakeJob] | None = None

    def update_parameters(self, **params: Any) -> None:
        self.params.update(params)

    def _sbatch(self, jobs: list[FakeJob]) -> None:
        if self.params.get("gpus_per_node", 0) > 4:  # sbatch: no node has that many
            from submitit.core.utils import FailedJobError

            raise FailedJobError(SBATCH_REFUSAL)
        FakeAutoExecutor.next_id += 1
        for k, job in enumerate(jobs):
            job.job_id = f"{self.next_id}_{k}" if len(jobs) > 1 else str(self.next_id)
        self.sbatch.append((dict(self.params), len(jobs)))

    @contextmanager
    def batch(self) -> Iterator[None]:
        self._batch = []
        yield
        self._sbatch(self._batch)
        self._batch = None

    def submit(self, fn: Any, *args: Any) -> FakeJob:
        job = FakeJob(self.folder)
        if self._batch is not None:
            self._batch.append(job)
        else:
            self._sbatch([job])
        return job


def fake_executor(tmp_path: Path, slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> SubmititExecutor:
    pytest.importorskip("submitit")
    monkeypatch.setattr(FakeAutoExecutor, "sbatch", [])
    monkeypatch.setattr(FakeAutoExecutor, "next_id", 900)
    executor = SubmititExecutor(tmp_path / "jobs", SlurmSpec())
    executor.submitit = SimpleNamespace(AutoExecutor=FakeAutoExecutor)
    executor.watch = SlurmWatch(slurm, every_s=0)
    return executor


def test_start_many_submits_one_array_per_slurm_section_and_keeps_each_job_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = fake_executor(tmp_path, FakeSlurm(sinfo=""), monkeypatch)
    small = SlurmSpec(gpus_per_job=1, array_parallelism=2)
    big = SlurmSpec(gpus_per_job=2)
    specs = [small, big, small, small, big, SlurmSpec(gpus_per_job=4)]
    jobs = [Job(f"/runs/e/v{i}/seed0", ["true"], tmp_path / f"{i}.log", slurm=s) for i, s in enumerate(specs)]
    handles = executor.start_many(jobs)

    sbatch = FakeAutoExecutor.sbatch
    assert [count for _, count in sbatch] == [3, 2, 1]  # small's array, big's array, a lone job
    assert sbatch[0][0]["slurm_array_parallelism"] == 2 and "slurm_array_parallelism" not in sbatch[1][0]
    assert sbatch[0][0]["name"].endswith("-x3") and len(sbatch[0][0]["name"]) <= 16
    assert sbatch[0][0]["name"][:8] != sbatch[1][0]["name"][:8]
    ids = [h.job.job_id for h in handles]  # type: ignore[attr-defined]
    assert ids[0] == ids[2][:-1] + "0" and ids[2].endswith("_1") and ids[3].endswith("_2")
    assert len(set(ids)) == 6 and executor.watch is not None and executor.watch.ids == set(ids)
    assert [h.run for h in handles] == jobs  # type: ignore[attr-defined]


def test_run_pool_starts_the_jobs_of_free_slots_together_where_the_executor_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers, "POLL_S", 0.0)

    class Done:
        def poll(self) -> int:
            return 0

        def stop(self) -> None: ...

        kill = stop

    class Many:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def start(self, job: Job, device: str | None) -> Done:
            self.calls.append([job.name])
            return Done()

        def start_many(self, jobs: list[Job]) -> list[Done]:
            self.calls.append([job.name for job in jobs])
            return [Done() for _ in jobs]

    queue = iter([Job(str(i), [], Path("log")) for i in range(5)])
    executor, ended = Many(), []

    def on_done(outcome: Outcome) -> tuple[str, str]:
        ended.append(outcome.job.name)
        return "finished", ""

    board = Board(Console(file=io.StringIO()), 5, plain=True)
    run_pool(lambda: next(queue, None), executor, [None] * 3, on_done, board)
    assert executor.calls == [["0", "1", "2"], ["3", "4"]] and sorted(ended) == list("01234")


def test_a_job_that_can_never_start_is_cancelled_with_its_section_and_the_pool_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs queued as one array pend with PartitionConfig (8 CPUs on a 2-CPU partition, found by
    SLURM since sinfo said nothing at submission): all three are cancelled and one paragraph says why."""
    squeue = "901_[0-2]|PENDING|PartitionConfig||vb-1a2b-v-x3\n902|RUNNING|None|node1|vb-9f9f-w-s0\n"
    slurm = FakeSlurm(squeue)
    executor, clock = fake_executor(tmp_path, slurm, monkeypatch), Clock()
    executor.watch = SlurmWatch(slurm, every_s=10, clock=clock)
    monkeypatch.setattr(workers, "POLL_S", 0.0)

    def a_poll_later() -> list[str]:  # SLURM is read every 10 s; the pool polls every 0.5 s
        clock.now += 10
        return []

    stuck, other = SlurmSpec(cpus_per_job=8, gpus_per_job=0), SlurmSpec(cpus_per_job=1, gpus_per_job=0)
    jobs = [Job(f"/runs/e/v/seed{i}", ["true"], tmp_path / f"{i}.log", slurm=stuck) for i in range(3)]
    jobs.append(Job("/runs/e/w/seed0", ["true"], tmp_path / "w.log", slurm=other))
    queue = iter(jobs)
    lines: list[str] = []
    board = Board(Console(file=io.StringIO()), 4, plain=True)
    board._print = lines.append  # type: ignore[method-assign]
    slurm.sinfo = SINFO.replace("debug*|2|", "debug*|16|")  # the preflight passes; SLURM still refuses
    with pytest.raises(UserError) as caught:
        run_pool(lambda: next(queue, None), executor, [None] * 4, lambda _: ("", ""), board, a_poll_later)
    message = str(caught.value)
    assert "SLURM job 901_0 (run /runs/e/v/seed0) can never start" in message
    assert "reason PartitionConfig" in message and "Cancelled it and 2 other queued jobs" in message
    assert [h.job.cancelled for h in executor.handles] == [True, True, True, False]
    assert any(line == "/runs/e/v/seed0: SLURM job 901_0 PENDING (PartitionConfig)" for line in lines), lines
    assert any("902 RUNNING (node1)" in line for line in lines)


def test_a_job_that_left_slurm_without_a_result_ends_as_slurm_says_after_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without accounting submitit never sees a timed-out job end; the handle does, from scontrol, once the
    result file has had RESULT_GRACE_S to appear on a shared filesystem."""
    slurm, clock = FakeSlurm("", {"901": SCONTROL_TIMEOUT.replace("JobId=104", "JobId=901")}, ""), Clock()
    executor = fake_executor(tmp_path, slurm, monkeypatch)
    executor.watch = SlurmWatch(slurm, every_s=10, clock=clock)
    handle = executor.start(Job("/runs/e/v/seed0", ["true"], tmp_path / "v.log"), None)
    assert handle.poll() is None and handle.describe() == "901 TIMEOUT"  # type: ignore[attr-defined]
    monkeypatch.setattr(workers, "RESULT_GRACE_S", 0.0)
    assert handle.poll() == 1 and handle.describe() == "901 TIMEOUT"  # type: ignore[attr-defined]
    assert executor.watch.ids == set()  # no longer asked about


def test_the_board_shows_slurm_jobs_and_counts_pending_ones_as_queued(tmp_path: Path) -> None:
    console = Console(width=140, record=True, file=io.StringIO())
    board = Board(console, total=2, plain=True)
    for name in ("/runs/e/v/seed0", "/runs/e/v/seed1"):
        board.started(Job(name, [], tmp_path / "log"), None)
    board.job_state("/runs/e/v/seed0", "901_0 PENDING (Resources)", queued=True)
    board.job_state("/runs/e/v/seed1", "901_1 RUNNING (node1)")
    board.job_state("/runs/e/v/seed1", "901_1 RUNNING (node1)")  # unchanged: no new line
    console.export_text()
    console.print(board._render())
    lines = console.export_text().splitlines()
    assert lines[0] == "runs of 2: 1 queued, 1 running"
    assert lines[1].split()[:3] == ["run", "job", "status"]
    assert "901_0 PENDING (Resources)  queued" in lines[2]
    assert re.search(r"901_1 RUNNING \(node1\) +running", lines[3])


def test_when_sbatch_refuses_one_section_the_arrays_already_queued_are_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = fake_executor(tmp_path, FakeSlurm(sinfo=""), monkeypatch)
    specs = [SlurmSpec(gpus_per_job=1)] * 2 + [SlurmSpec(gpus_per_job=8)] * 2
    jobs = [Job(f"/runs/e/v{i}/seed0", ["true"], tmp_path / f"{i}.log", slurm=s) for i, s in enumerate(specs)]
    with pytest.raises(UserError, match=r"sbatch refused the job of run /runs/e/v2/seed0 and 1 other run"):
        executor.start_many(jobs)
    assert [count for _, count in FakeAutoExecutor.sbatch] == [2]
    assert [h.job.cancelled for h in executor.handles] == [True, True]
