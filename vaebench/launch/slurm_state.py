"""What SLURM says about submitted jobs, read without accounting, and what to do when one can never start.

submitit reads job states through `sacct`, which many clusters (and every test cluster) run without:
each call then fails, submitit logs "Bypassing sacct error" and a job that never starts waits forever.
Here states come from `squeue` (queued and running jobs: state, pending reason, node), then
`scontrol show job` (jobs that left the queue, kept a while by MinJobAge), then `sacct` only when the
cluster has accounting (probed once). `SlurmWatch` reads all the submitted jobs in one call every
`REFRESH_S` seconds, however often the pool polls.

A PENDING job either waits for something that comes (Resources, Priority, a group limit: other jobs
end) or for something that never does (PartitionConfig: it asks what its partition never offers; a
per-job limit of its QOS or account). `never_starts(reason)` tells them apart; `request_problems`
compares a job's request with the partition's nodes as `sinfo` lists them, before submitting (the
preflight) and while a job pends. The messages name the `slurm.*` fields to change and the
partition's limits, in one paragraph.

Also here: short distinct job names (squeue shows 8 characters), the status text of a job for the
progress table, and a logging filter that folds submitit's repeated warnings into one line.
Parsing is pure (tested on captured SLURM 22.05 output); commands run through a `Runner`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vaebench.config.spec import SlurmSpec
from vaebench.core.errors import UserError

REFRESH_S = 10.0  # how often SlurmWatch asks SLURM (one squeue call for every job)
CONFIRM_REFRESHES = 2  # a never-resolving reason must be seen this many times in a row (not a transient)
COMMAND_TIMEOUT_S = 30.0

Runner = Callable[[Sequence[str]], tuple[int, str, str]]  # argv -> (exit status, stdout, stderr)

# States in which a job may still run; any other known state is final for this submission.
ACTIVE_STATES = frozenset(
    "PENDING CONFIGURING RUNNING COMPLETING REQUEUED REQUEUE_FED REQUEUE_HOLD RESIZING SUSPENDED "
    "STOPPED SIGNALING STAGE_OUT RESV_DEL_HOLD SPECIAL_EXIT".split()
)

# Pending reasons that waiting never resolves, besides Partition*Limit and the per-job/per-node limits.
NEVER_BY_WAITING = frozenset(
    {"PartitionConfig", "BadConstraints", "InvalidAccount", "InvalidQOS", "AccountNotAllowed",
     "QOSNotAllowed", "DependencyNeverSatisfied"}
)  # fmt: skip


def run_command(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run a SLURM command; (127, '', why) when it is not installed, (124, '', why) when it hangs."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S:.0f} s"
    return done.returncode, done.stdout, done.stderr


# ----------------------------------------------------------------------------- job states


@dataclass(frozen=True)
class JobState:
    """One job as SLURM reports it. job_id: '1234', or '1234_5' for task 5 of array job 1234."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, TIMEOUT, PREEMPTED, CANCELLED, OUT_OF_MEMORY, FAILED, ...
    reason: str = ""  # why it pends (Resources, PartitionConfig...); '' for none
    node: str = ""  # where it runs or ran ('' while pending)
    exit_code: int | None = None  # of the batch script, when SLURM says
    signal: int | None = None  # that ended it, when SLURM says
    restarts: int = 0  # requeues so far (scontrol only)

    @property
    def gone(self) -> bool:
        """It ended (any final state), or SLURM no longer knows it (UNKNOWN)."""
        return self.state not in ACTIVE_STATES


def expand_job_id(text: str) -> list[str]:
    """The job ids a listing names: '1234' and '1234_5' as they are; a pending array's '1234_[2-5%2]',
    '1234_[1,3]' or '1234_[0-6:3]' (the %limit dropped) as one id per task."""
    match = re.fullmatch(r"(\d+)_\[([^\]]*)\]", text.strip())
    if match is None:
        return [text.strip()]
    base, tasks = match.group(1), match.group(2).split("%")[0]
    ids: list[str] = []
    for part in tasks.split(","):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        ids += [f"{base}_{k}" for k in range(int(first), int(last or first) + 1, int(step or 1))]
    return ids


def _exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    return (int(code) if code.isdigit() else None), (int(sig) if sig.isdigit() else None)


def _reason(text: str) -> str:
    return "" if text.strip() in ("", "None", "(null)") else text.strip()


def parse_squeue(text: str) -> dict[str, JobState]:
    """`squeue -h -o '%i|%T|%r|%N|%j'` by job id (array ranges expanded)."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        fields = line.split("|", 4)
        if len(fields) < 4:
            continue
        ids, state, reason, node = fields[:4]
        for job_id in expand_job_id(ids):
            states[job_id] = JobState(job_id, state.strip(), _reason(reason), node.strip())
    return states


_PAIR = re.compile(r"([A-Za-z][\w/:.]*)=(.*?)(?=\s+[A-Za-z][\w/:.]*=|\s*$)", re.S)


def scontrol_pairs(text: str) -> dict[str, str]:
    """The Key=Value fields of one `scontrol show job` record (values may hold spaces)."""
    return dict(_PAIR.findall(text))


def parse_scontrol(text: str) -> dict[str, JobState]:
    """`scontrol show job ID` (one record per job, key=value pairs) by job id; an array's pending record
    (ArrayTaskId=2-5%2) stands for each of its tasks."""
    states: dict[str, JobState] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        pairs = scontrol_pairs(block)
        if "JobState" not in pairs:
            continue
        ids = [pairs.get("JobId", "")]
        if pairs.get("ArrayJobId") and pairs.get("ArrayTaskId"):
            ids = expand_job_id(f"{pairs['ArrayJobId']}_[{pairs['ArrayTaskId']}]")
        code, sig = _exit(pairs.get("ExitCode", ""))
        node = "" if pairs.get("NodeList", "(null)") == "(null)" else pairs["NodeList"]
        restarts = int(pairs["Restarts"]) if pairs.get("Restarts", "").isdigit() else 0
        for job_id in ids:
            states[job_id] = JobState(
                job_id, pairs["JobState"], _reason(pairs.get("Reason", "")), node, code, sig, restarts
            )
    return states


def parse_sacct(text: str) -> dict[str, JobState]:
    """`sacct -n -P -o JobID,State,ExitCode,Reason,NodeList` by job id (steps such as 1234.batch skipped;
    'CANCELLED by 1000' read as CANCELLED)."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or "." in fields[0] or "+" in fields[0]:
            continue
        ids, state, exit_code, reason, node = fields[:5]
        code, sig = _exit(exit_code)
        node = "" if node in ("None assigned", "(null)") else node
        for job_id in expand_job_id(ids):
            states[job_id] = JobState(
                job_id, state.split()[0] if state else "UNKNOWN", _reason(reason), node, code, sig
            )
    return states


def accounting_disabled(stderr: str) -> bool:
    return "accounting storage is disabled" in stderr.lower()


def never_starts(reason: str) -> bool:
    """Whether a PENDING job with this reason can never start by waiting: it asks what its partition,
    QOS or account never allows (PartitionConfig, BadConstraints, InvalidAccount, Partition*Limit,
    QOSMaxCpuPerJobLimit and other per-job or per-node limits, QOSMin*). Resources, Priority, group
    limits (AssocGrp*, QOSGrp*: other jobs end), ReqNodeNotAvail (nodes come back), BeginTime,
    Dependency, held jobs and any reason not known here wait."""
    name = reason.split(",")[0].strip()
    if name in NEVER_BY_WAITING or (name.startswith("Partition") and name.endswith("Limit")):
        return True
    if "Grp" in name or "PerUser" in name or "PerAccount" in name:
        return False
    return "PerJob" in name or "PerNode" in name or name.startswith(("QOSMin", "AssocMin"))


# ----------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of a partition alike in CPUs, memory and GRES (one line of sinfo)."""

    count: int
    cpus: int
    mem_mb: int
    gpus: int
    gres: str  # as sinfo writes it ('' for none)


@dataclass(frozen=True)
class Partition:
    name: str
    groups: tuple[NodeGroup, ...]
    time_limit: str  # as sinfo writes it: 'infinite', '1-00:00:00', '30:00'

    @property
    def time_limit_min(self) -> float | None:
        """The time limit in minutes (None: infinite)."""
        if self.time_limit.lower() in ("infinite", "unlimited", "n/a", ""):
            return None
        days, _, clock = self.time_limit.rpartition("-")  # [D-]HH:MM:SS, MM:SS or minutes
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 1:
            parts = [0, parts[0], 0]
        hours, minutes, seconds = [0] * (3 - len(parts)) + parts
        return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60

    def describe(self) -> str:
        """'partition debug: 1 node, 2 CPUs, 23,000 MB, no GPUs, time limit infinite'."""
        groups = []
        for g in self.groups:
            nodes = f"{g.count} node{'s' if g.count != 1 else ''}"
            gpus = "no GPUs" if g.gpus == 0 else f"{g.gpus} GPU{'s' if g.gpus != 1 else ''}"
            if g.gres and g.gres != f"gpu:{g.gpus}" and g.gpus:
                gpus += f" ({g.gres})"
            each = " each" if g.count != 1 else ""
            groups.append(f"{nodes}, {g.cpus} CPUs, {g.mem_mb:,} MB, {gpus}{each}")
        return f"partition {self.name}: {'; '.join(groups) or 'no nodes'}, time limit {self.time_limit}"


def _count(text: str) -> int:
    digits = re.match(r"\d+", text.strip())
    return int(digits.group()) if digits else 0


def gpu_count(gres: str) -> int:
    """GPUs per node in a GRES string: 'gpu:a100:8(S:0-1)' -> 8, 'gpu:4,shard:8' -> 4, '(null)' -> 0."""
    total = 0
    for item in re.split(r",(?![^()]*\))", gres):
        fields = re.sub(r"\(.*?\)", "", item).split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_sinfo(text: str, partition: str | None) -> Partition | None:
    """`sinfo -h -o '%P|%c|%m|%G|%l|%D'`: the named partition, or the default one (marked '*') for None;
    None when sinfo lists no such partition."""
    groups: list[NodeGroup] = []
    name, limit = partition, ""
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        listed, cpus, mem, gres, time_limit, count = (f.strip() for f in fields[:6])
        if (listed.rstrip("*") != partition) if partition else not listed.endswith("*"):
            continue
        name, limit = listed.rstrip("*"), time_limit
        clean = re.sub(r"\(.*?\)", "", gres) if gres != "(null)" else ""
        groups.append(NodeGroup(_count(count), _count(cpus), _count(mem), gpu_count(gres), clean))
    return Partition(name, tuple(groups), limit) if groups and name else None


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def request_problems(spec: SlurmSpec, part: Partition) -> list[tuple[str, str]]:
    """What in the request no node of the partition offers, as (slurm.* fields, why); [] when one fits.

    One job is one task on one node: its CPUs, GPUs and memory must fit one node together. Memory: submitit
    asks `--mem=<mem_gb>GB`, which SLURM reads as mem_gb x 1024 MB; sinfo gives each node's in MB.
    """
    problems: list[tuple[str, str]] = []
    limit = part.time_limit_min
    if limit is not None and spec.time_min > limit:
        problems.append(
            ("time_min", f"slurm.time_min {spec.time_min} is over its time limit ({part.time_limit})")
        )
    need_mb = (spec.mem_gb or 0) * 1024
    fits = [
        g
        for g in part.groups
        if g.cpus >= spec.cpus_per_job and g.gpus >= spec.gpus_per_job and g.mem_mb >= need_mb
    ]
    if fits or not part.groups:
        return problems
    cpus, gpus, mem = (max(getattr(g, a) for g in part.groups) for a in ("cpus", "gpus", "mem_mb"))
    before = len(problems)
    if spec.cpus_per_job > cpus:
        problems.append(
            ("cpus_per_job", f"slurm.cpus_per_job {spec.cpus_per_job} is more than any node has ({cpus})")
        )
    if spec.gpus_per_job > gpus:
        problems.append(
            ("gpus_per_job", f"slurm.gpus_per_job {spec.gpus_per_job} is more than any node has ({gpus})")
        )
    if need_mb > mem:
        problems.append(
            ("mem_gb", f"slurm.mem_gb {spec.mem_gb} ({need_mb:,} MB) is more than any node has ({mem:,} MB)")
        )
    if len(problems) == before:  # each fits some node, but no node has them all
        asked = [f"{spec.cpus_per_job} CPUs", _plural(spec.gpus_per_job, "GPU")]
        together = " and ".join(asked + [f"{need_mb:,} MB"] * bool(need_mb))
        problems.append(("cpus_per_job gpus_per_job mem_gb", f"no node has {together} together"))
    return problems


# ----------------------------------------------------------------------------- messages

# Which slurm.* fields a reason or an sbatch error is about (matched in lower case, first wins per word).
_REASON_FIELDS = (
    ("timelimit", ("time_min", "partition")),
    ("wallduration", ("time_min",)),
    ("time limit", ("time_min", "partition")),
    ("cpu", ("cpus_per_job",)),
    ("processors", ("cpus_per_job",)),
    ("gres", ("gpus_per_job",)),
    ("mem", ("mem_gb",)),
    ("account", ("account", "partition")),
    ("qos", ("account", "partition")),
    ("node count", ("partition",)),
    ("nodelimit", ("partition",)),
    ("invalid partition", ("partition",)),
)
_ALL_RESOURCES = ("cpus_per_job", "gpus_per_job", "mem_gb", "time_min", "account", "partition")


def fields_for(text: str) -> list[str]:
    """The slurm.* fields (without the prefix) a pending reason or sbatch error is about; all the resources
    when it does not say (PartitionConfig, BadConstraints, 'node configuration is not available')."""
    low = text.lower()
    found = [f for word, fields in _REASON_FIELDS if word in low for f in fields]
    return list(dict.fromkeys(found)) or list(_ALL_RESOURCES)


def request_text(spec: SlurmSpec) -> str:
    """'8 CPUs, 1 GPU, the default memory and 1440 min on partition debug'."""
    gpus = _plural(spec.gpus_per_job, "GPU")
    mem = f"{spec.mem_gb} GB" if spec.mem_gb else "the default memory"
    where = f"partition {spec.partition}" if spec.partition else "the default partition"
    account = f", account {spec.account}" if spec.account else ""
    return f"{spec.cpus_per_job} CPUs, {gpus}, {mem} and {spec.time_min} min on {where}{account}"


def resources_message(
    head: str, spec: SlurmSpec, part: Partition | None, problems: list[tuple[str, str]], about: str, tail: str
) -> str:
    """One paragraph: what happened (`head`), the request, the partition's limits, what exceeds them,
    the slurm.* fields to change (from `problems`, else from `about`: SLURM's reason or error), `tail`."""
    fields = list(dict.fromkeys([f for named, _ in problems for f in named.split()] or fields_for(about)))
    if "partition" not in fields:
        fields.append("partition")
    limits = part.describe() if part else "sinfo did not describe the partition"
    found = f" {'; '.join(why for _, why in problems)}." if problems else ""
    change = ", ".join(f"slurm.{f}" for f in fields if f != "partition")
    fix = (
        f"Change {change} (the spec's `slurm` section, --set slurm.<field>=... or the --slurm-* flags), "
        "or pick another partition with slurm.partition."
        if change
        else "Pick another partition with slurm.partition."
    )
    return f"{head} Each asks for {request_text(spec)}; {limits}.{found} {fix}{' ' + tail if tail else ''}"


def stuck_message(
    run: str,
    state: JobState,
    spec: SlurmSpec,
    part: Partition | None,
    problems: list[tuple[str, str]],
    cancelled: int,
) -> str:
    """A PENDING job that can never start, cancelled with `cancelled` other queued jobs of its resources."""
    why = (
        "which waiting never resolves"
        if never_starts(state.reason)
        else "but it asks for more than any node of its partition has"
    )
    reason = state.reason or "None"
    head = f"SLURM job {state.job_id} (run {run}) can never start: it pends with reason {reason}, {why}."
    others = (
        f" and {cancelled} other queued job{'s' if cancelled != 1 else ''} asking for the same"
        if cancelled
        else ""
    )
    tail = f"Cancelled it{others}; rerunning the command after the change resubmits them."
    return resources_message(head, spec, part, problems, state.reason, tail)


def refusal_message(runs: Sequence[str], error: str, spec: SlurmSpec, part: Partition | None) -> str:
    """sbatch refused the job(s) of `runs`: `error` is what submitit raised (sbatch's stderr)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = next((line for line in lines if "submission failed" in line.lower()), lines[-1] if lines else "")
    said = re.sub(r"^sbatch: error: ", "", said)
    others = (
        f" and {len(runs) - 1} other run{'s' if len(runs) > 2 else ''} with the same slurm section"
        if len(runs) > 1
        else ""
    )
    head = f"sbatch refused the job of run {runs[0]}{others}: {said.rstrip('.')}."
    problems = request_problems(spec, part) if part else []
    return resources_message(head, spec, part, problems, said, "Nothing of it was submitted.")


def status_text(state: JobState | None, job_id: str, returncode: int | None = None, error: str = "") -> str:
    """The job in the progress table: '1234 PENDING (Resources)', '1234 RUNNING (node1)', '1234 TIMEOUT',
    '1234 FAILED (exit 1: <error line>)' (returncode: the run's exit status once known, error: its log's
    error line), '1234 submitted' before SLURM has said anything."""
    if returncode is not None:
        detail = f" (exit {returncode}{': ' + error if error else ''})" if returncode else ""
        return f"{job_id} {'FAILED' if returncode else 'COMPLETED'}{detail}"
    if state is None:
        return f"{job_id} submitted"
    detail = {"PENDING": state.reason, "RUNNING": state.node, "COMPLETING": state.node}.get(state.state, "")
    if state.state == "FAILED":
        detail = f"exit {state.exit_code}{': ' + error if error else ''}"
    if state.restarts:
        detail = ", ".join(filter(None, [detail, f"restart {state.restarts}"]))
    return f"{job_id} {state.state}{f' ({detail})' if detail else ''}"


# ----------------------------------------------------------------------------- job names


def _name_parts(run: str) -> tuple[str, str]:
    """(label, number) of a run name: '.../beta4/seed1' -> ('beta4', 's1'); 'grid-007' -> ('grid', '007')."""
    parts = [p for p in run.replace("\\", "/").split("/") if p]
    last = parts[-1] if parts else "run"
    seed = re.fullmatch(r"seed(\d+)", last)
    if seed and len(parts) > 1:
        head, tail = parts[-2], f"s{seed.group(1)}"
    elif (numbered := re.fullmatch(r"(.*?[^-_])[-_]?(\d+)", last)) is not None:
        head, tail = numbered.groups()
    else:
        head, tail = last, ""
    return re.sub(r"[^A-Za-z0-9+._-]", "-", head), tail


def job_name(run: str, taken: set[str] | None = None, count: int = 1, width: int = 16) -> str:
    """A SLURM job name of at most `width` characters whose first 8 (what squeue shows by default) tell
    the jobs of different runs apart: 'vb-<hash4>-<label>', the hash of the run name, bumped past the
    prefixes in `taken` (which gets this one). count > 1: an array of that many runs ('vb-3f2a-beta-x8')."""
    head, tail = _name_parts(run)
    if count > 1:
        tail = f"x{count}"
    salt = 0
    while True:
        digest = hashlib.sha1(f"{run}#{salt}".encode() if salt else run.encode()).hexdigest()[:4]
        prefix = f"vb-{digest}-"
        if taken is None or prefix not in taken:
            break
        salt += 1
    if taken is not None:
        taken.add(prefix)
    room = width - len(prefix)
    label = f"{head[: max(room - len(tail) - 1, 0)].rstrip('-_.')}-{tail}".strip("-") if tail else head[:room]
    return (prefix + label)[:width].rstrip("-")


# ----------------------------------------------------------------------------- grouping


def section_key(spec: SlurmSpec) -> str:
    return spec.model_dump_json()


def group_by_section(specs: Sequence[SlurmSpec]) -> list[list[int]]:
    """Indices of `specs` grouped by equal slurm section (one job array each), in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(section_key(spec), []).append(i)
    return list(groups.values())


# ----------------------------------------------------------------------------- the watch


class SlurmWatch:
    """The states of the submitted jobs, read every `every_s` seconds for all of them at once: squeue,
    then scontrol for those that left the queue, then sacct (when the cluster has accounting) for those
    scontrol forgot. `state(id)` answers from the last reading; None before SLURM has said anything."""

    def __init__(self, run: Runner = run_command, every_s: float = REFRESH_S, clock=time.monotonic) -> None:
        self.run, self.every_s, self.clock = run, every_s, clock
        self.ids: set[str] = set()
        self.states: dict[str, JobState] = {}
        self.accounting: bool | None = None  # None: not probed yet
        self._partitions: dict[str | None, Partition | None] = {}
        self._checked: set[str] = set()
        self._stuck_seen: dict[str, int] = {}
        self._last = -math.inf

    def watch(self, job_id: str) -> None:
        self.ids.add(job_id)
        self._last = -math.inf  # read it at the next question

    def forget(self, job_id: str) -> None:
        self.ids.discard(job_id)

    def state(self, job_id: str) -> JobState | None:
        if self.clock() - self._last >= self.every_s:
            self.refresh()
        return self.states.get(job_id)

    def refresh(self) -> None:
        self._last = self.clock()
        ids = sorted(self.ids)
        if not ids:
            return
        code, out, err = self.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r|%N|%j"])
        if code != 0 and "invalid job id" not in err.lower():
            return  # the controller did not answer: keep what we knew
        fresh = {k: v for k, v in parse_squeue(out if code == 0 else "").items() if k in self.ids}
        for job_id in (i for i in ids if i not in fresh):
            code, out, _ = self.run(["scontrol", "show", "job", job_id])
            fresh |= {k: v for k, v in parse_scontrol(out if code == 0 else "").items() if k == job_id}
        missing = [i for i in ids if i not in fresh]
        if missing and self.accounting is not False:
            code, out, err = self.run(
                ["sacct", "-n", "-P", "-j", ",".join(missing), "-o", "JobID,State,ExitCode,Reason,NodeList"]
            )
            self.accounting = not (code != 0 and accounting_disabled(err))
            fresh |= {k: v for k, v in parse_sacct(out if code == 0 else "").items() if k in missing}
        for job_id in ids:
            state = fresh.setdefault(job_id, JobState(job_id, "UNKNOWN"))
            stuck = state.state == "PENDING" and never_starts(state.reason)
            self._stuck_seen[job_id] = self._stuck_seen.get(job_id, 0) + 1 if stuck else 0
        self.states.update(fresh)

    def partition(self, name: str | None) -> Partition | None:
        """The partition as sinfo lists it (None: the default one), asked once; None when sinfo cannot say."""
        if name not in self._partitions:
            argv = ["sinfo", "-h", "-o", "%P|%c|%m|%G|%l|%D", *(["-p", name] if name else [])]
            code, out, _ = self.run(argv)
            self._partitions[name] = parse_sinfo(out, name) if code == 0 else None
        return self._partitions[name]

    def preflight(self, spec: SlurmSpec) -> None:
        """Before submitting jobs of this slurm section (once per section): a UserError when no node of its
        partition could ever run one. Says nothing when sinfo cannot tell."""
        if section_key(spec) in self._checked:
            return
        self._checked.add(section_key(spec))
        part = self.partition(spec.partition)
        problems = request_problems(spec, part) if part else []
        if problems:
            where = f"partition {part.name}" if part else "their partition"
            head = f"The SLURM jobs of this slurm section could never start on {where}."
            raise UserError(resources_message(head, spec, part, problems, "", "Nothing was submitted."))

    def stuck(self, state: JobState, spec: SlurmSpec) -> list[tuple[str, str]] | None:
        """For a PENDING job: None while it may still start; else what in its request no node offers ([]
        when SLURM's reason alone says it: seen CONFIRM_REFRESHES readings in a row)."""
        if state.state != "PENDING":
            return None
        part = self.partition(spec.partition)
        problems = request_problems(spec, part) if part else []
        if problems or self._stuck_seen.get(state.job_id, 0) >= CONFIRM_REFRESHES:
            return problems
        return None


# ----------------------------------------------------------------------------- submitit's warnings


class FoldRepeats(logging.Filter):
    """On submitit's logger: lets the first 'Bypassing <x> error' through and counts the rest, which
    `lines()` sums up (the progress table's footer). Without accounting submitit logs one per sacct call."""

    PATTERN = re.compile(r"Bypassing (\w+) error")

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        match = self.PATTERN.search(record.getMessage())
        if match is None:
            return True
        self.counts[match.group(0)] = self.counts.get(match.group(0), 0) + 1
        return self.counts[match.group(0)] == 1

    def lines(self) -> list[str]:
        notes = []
        for key, n in self.counts.items():
            if n > 1:
                why = " (no accounting: states come from squeue/scontrol)" if "sacct" in key else ""
                notes.append(f"submitit: '{key} ...' x{n}, shown once{why}")
        return notes


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def fold_submitit_warnings() -> FoldRepeats:
    """Install (once) the folding filter on submitit's logger, and keep its warnings off its stdout
    handler (submitit's logging config writes each warning to both stdout and stderr)."""
    logger = logging.getLogger("submitit")
    fold = next((f for f in logger.filters if isinstance(f, FoldRepeats)), None)
    if fold is None:
        fold = FoldRepeats()
        logger.addFilter(fold)
    if any(h.level >= logging.WARNING for h in logger.handlers):  # warnings have a handler of their own
        for handler in logger.handlers:
            if handler.level < logging.WARNING and not any(
                isinstance(f, _BelowWarning) for f in handler.filters
            ):
                handler.addFilter(_BelowWarning())
    return fold


def folded_warnings() -> list[str]:
    """The footer lines of the folding filter, if installed."""
    logger = logging.getLogger("submitit")
    return [line for f in logger.filters if isinstance(f, FoldRepeats) for line in f.lines()]
