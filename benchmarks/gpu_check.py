"""The GPU check's stages, each in its own process group with its own time limit (gpu_check.sh runs this).

    bash benchmarks/gpu_check.sh [OUT_DIR]                          # every stage: about 5 minutes at most
    bash benchmarks/gpu_check.sh --only train packing [OUT_DIR]     # rerun some stages
    bash benchmarks/gpu_check.sh --only train --limit train=240     # with more time
    bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]                # on a CPU at toy sizes (CI): minutes
    python benchmarks/gpu_check.py --list                           # the stages and their limits

Stages, in order (see STAGES): env, tests, objectives, train, eval, packing, features, data. A stage that
fails or runs out of time does not stop the next ones (except env: nothing runs without vaebench importing).
OUT_DIR (default benchmarks/results) gets few files, so that they all come back from a machine that
returns at most 8:

    summary.json     per stage: status (ok, failed, timeout, skipped), seconds, limit, and its results
                     (test counts and failures, per-objective compile checks, throughput rows and targets,
                     data rates); rewritten after every stage, merged with an earlier summary.json there
    check.log        everything the stages printed, stage by stage
    stage-NAME.json  only while stage NAME runs (its results so far); merged into summary.json after it

This script uses only the standard library, so that it reports even when the stages cannot import.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# Run by the env stage: what the machine has, and that vaebench imports without W&B, submitit or sweeps.
ENV_PROBE = r"""
import importlib.metadata as md, json, subprocess, sys
out = {"python": sys.version.split()[0], "executable": sys.executable}
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
names = ["torch", "torchvision", "numpy", "pydantic", "pydantic-core", "typing-extensions", "typer", "rich",
         "pandas", "pyyaml", "pillow", "pytest", "triton", "wandb", "submitit"]
out["packages"] = {n: version(n) for n in names}
import torch
out["torch_cuda"] = torch.version.cuda
out["cuda_available"] = torch.cuda.is_available()
if out["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    out["gpu"] = {"name": p.name, "memory_gb": round(p.total_memory / 1e9, 1), "sms": p.multi_processor_count,
                  "capability": f"{p.major}.{p.minor}"}
    try:
        out["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"],
            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except Exception as e:
        out["nvidia_smi"] = repr(e)
import vaebench.cli
import vaebench.launch.runner
import vaebench.train.fastpath
import vaebench.evaluation.evaluate
import vaebench.train.loop
out["vaebench"] = vaebench.__file__
out["imported_but_should_not"] = [m for m in ("wandb", "submitit", "sweeps") if m in sys.modules]
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps(out, indent=2))
if out["imported_but_should_not"]:
    sys.exit(f"importing vaebench imported {out['imported_but_should_not']}: it must only when used")
if sys.argv[2] == "gpu" and not out["cuda_available"]:
    sys.exit("torch sees no CUDA device: on a machine without a GPU run gpu_check.sh --dry-run")
"""

TEST_FILES = [
    "tests/test_fastpath.py",  # the fast path, 2 CUDA tests
    "tests/test_evaluate.py",  # evaluation, 1 CUDA test (bf16, large forward passes)
    "tests/test_checkpoint.py",  # 1 CUDA test (RNG state)
    "tests/test_no_wandb.py",  # `python -m vaebench run` never imports W&B with tracking off
]


@dataclass(frozen=True)
class Stage:
    name: str
    limit_s: int  # on the GPU; the first full pass is the sum of these at most (TOTAL_LIMIT_S)
    dry_limit_s: int  # in --dry-run on a CPU: only a guard against hangs
    what: str
    command: list[str]  # {json} is the stage's results file, {gpu} "gpu" or "dry"
    dry_command: list[str]


BENCH = "benchmarks"
STAGES = [
    Stage("env", 20, 120, "versions, the GPU, vaebench imports without W&B",
          [PY, "-c", ENV_PROBE, "{json}", "{gpu}"], [PY, "-c", ENV_PROBE, "{json}", "{gpu}"]),
    Stage("tests", 60, 300, "the fast path's, evaluation's and checkpoint's tests, the 4 CUDA ones included",
          [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *TEST_FILES],
          [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *TEST_FILES, "-k", "cuda or wandb"]),
    Stage("objectives", 60, 300, "each objective: 20 compiled steps, whole graph, no recompilation",
          [PY, f"{BENCH}/compiled_objectives.py", "--json", "{json}"],
          [PY, f"{BENCH}/compiled_objectives.py", "--dry-run", "--json", "{json}"]),
    Stage("train", 90, 240, "train images/s at batch 16/32/128, naive vs vaebench, reference model",
          [PY, f"{BENCH}/throughput.py", "--parts", "train", "--steps", "20", "--json", "{json}"],
          [PY, f"{BENCH}/throughput.py", "--parts", "train", "--dry-run", "--json", "{json}"]),
    Stage("eval", 30, 240, "evaluation images/s at IW K=100 (naive vs vaebench), K=1000 projection",
          [PY, f"{BENCH}/throughput.py", "--parts", "eval", "--jpegs", "1024", "--json", "{json}"],
          [PY, f"{BENCH}/throughput.py", "--parts", "eval", "--dry-run", "--json", "{json}"]),
    Stage("packing", 40, 300, "4 training processes on the GPU vs 1 (batch 32, 10 s windows)",
          [PY, f"{BENCH}/throughput.py", "--parts", "packing", "--packing", "4", "--jpegs", "1024",
           "--packing-seconds", "10", "--json", "{json}"],
          [PY, f"{BENCH}/throughput.py", "--parts", "packing", "--packing", "2", "--dry-run",
           "--json", "{json}"]),
    Stage("features", 20, 240, "quality metrics' extractors: images/s, FLOPs, 10k/50k-sample projections",
          [PY, f"{BENCH}/features.py", "--json", "{json}"],
          [PY, f"{BENCH}/features.py", "--dry-run", "--json", "{json}"]),
    Stage("data", 20, 180, "the JPEG path against the prepared cache (CPU)",
          [PY, f"{BENCH}/data.py", "--images", "1000", "--seconds", "1", "--json", "{json}"],
          [PY, f"{BENCH}/data.py", "--images", "64", "--seconds", "0.2", "--workers", "1",
           "--json", "{json}"]),
]  # fmt: skip
BY_NAME = {s.name: s for s in STAGES}
TOTAL_LIMIT_S = sum(s.limit_s for s in STAGES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "benchmarks" / "results", help="OUT_DIR")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="STAGE", help="these stages only")
    parser.add_argument("--dry-run", action="store_true", help="on a CPU, toy sizes: checks the check")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="STAGE=SECONDS",
        help="another time limit (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="print the stages and their limits, run nothing")
    args = parser.parse_args(argv)
    args.limits = {}
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in BY_NAME or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--limit {item}: expected STAGE=SECONDS with STAGE one of {', '.join(BY_NAME)}")
        args.limits[name] = float(seconds)
    return args


def limit_of(stage: Stage, args: argparse.Namespace) -> float:
    return args.limits.get(stage.name, stage.dry_limit_s if args.dry_run else stage.limit_s)


# ----------------------------------------------------------------------------- running one stage


def pump(stream: IO[str], log: IO[str]) -> None:
    """Copy a stage's output to our stdout and check.log, line by line, as it comes."""
    for line in stream:
        sys.stdout.write(line)
        log.write(line)
    sys.stdout.flush()
    log.flush()


def run_stage(stage: Stage, args: argparse.Namespace, log: IO[str], results: Path) -> dict[str, Any]:
    """Run one stage in its own process group; on its time limit the whole group is ended."""
    limit = limit_of(stage, args)
    template = stage.dry_command if args.dry_run else stage.command
    command = [
        c.replace("{json}", str(results)).replace("{gpu}", "dry" if args.dry_run else "gpu") for c in template
    ]
    if stage.name == "tests":
        command += ["--junitxml", str(results.with_suffix(".xml"))]
    header = f"\n===== {stage.name} (limit {limit:.0f} s): {stage.what}\n"
    sys.stdout.write(header)
    log.write(header)
    log.flush()
    env = os.environ | {"PYTHONUNBUFFERED": "1", "VAEBENCH_QUIET": "1"}
    if args.dry_run:
        env.setdefault(
            "OMP_NUM_THREADS", "1"
        )  # a shared CPU: OpenMP threads spinning for a core cost minutes
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: DataLoader workers, compile workers, packing runs
    )  # fmt: skip
    reader = threading.Thread(target=pump, args=(proc.stdout, log), daemon=True)
    reader.start()
    status = "ok"
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        status = "timeout"
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
    reader.join(timeout=5)
    seconds = time.perf_counter() - start
    if status == "ok" and proc.returncode != 0:
        status = "failed"
    record: dict[str, Any] = {
        "status": status, "seconds": round(seconds, 1), "limit_s": limit, "exit_code": proc.returncode,
    }  # fmt: skip
    if stage.name == "tests":
        record["result"] = read_junit(results.with_suffix(".xml"))
    elif results.exists():
        try:
            record["result"] = json.loads(results.read_text())
        except json.JSONDecodeError as error:  # cut off mid-write by the time limit
            record["result"] = {"unreadable": str(error)}
    for path in (results, results.with_suffix(".xml")):
        path.unlink(missing_ok=True)
    line = f"===== {stage.name}: {status} in {seconds:.0f} s (limit {limit:.0f} s)\n"
    sys.stdout.write(line)
    log.write(line)
    log.flush()
    return record


def read_junit(path: Path) -> dict[str, Any]:
    """Counts, failed tests with the first line of their message, and skip reasons, from pytest's XML."""
    if not path.exists():
        return {"unreadable": "pytest wrote no report"}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed, skipped = [], []
    for case in ET.parse(path).getroot().iter("testcase"):
        counts["tests"] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for kind, key in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            node = case.find(kind)
            if node is not None:
                counts[key] += 1
                message = (node.get("message") or "").strip().splitlines()[:1]
                (skipped if kind == "skipped" else failed).append(f"{name}: {''.join(message)[:300]}")
    return counts | {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                     "failed": failed, "skipped_because": skipped}  # fmt: skip


# ----------------------------------------------------------------------------- the whole check


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None  # the machine's copy of the tree may have no .git


def headline(summary: dict[str, Any]) -> list[str]:
    """The figures benchmarks/RESULTS.md's targets are about, from whichever stages ran."""
    stages, lines = summary["stages"], []
    objectives = stages.get("objectives", {}).get("result", {}).get("objectives", {})
    if objectives:
        lines.append("objectives: " + ", ".join(f"{k} {r.get('status')}" for k, r in objectives.items()))
    for name in ("train", "eval", "packing"):
        targets = stages.get(name, {}).get("result", {}).get("targets", {})
        for key, value in targets.items():
            lines.append(f"{key}: {value:,.2f}" if isinstance(value, float) else f"{key}: {value}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [s for s in STAGES if not args.only or s.name in args.only]
    mode = "dry run (CPU, toy sizes)" if args.dry_run else "GPU"
    plan = ", ".join(f"{s.name} {limit_of(s, args):.0f} s" for s in selected)
    total = sum(limit_of(s, args) for s in selected)
    print(f"GPU check, {mode}: {plan}; at most {total:.0f} s ({total / 60:.1f} min) in all")
    if args.list:
        for s in STAGES:
            print(f"  {s.name:<11} {s.limit_s:>4} s on the GPU, {s.dry_limit_s:>4} s dry: {s.what}")
        return 0
    out: Path = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary: dict[str, Any] = {}
    if summary_path.exists():  # a rerun of some stages keeps the others' results
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = {}
        if summary.get("dry_run") != args.dry_run:
            summary = {}
    summary |= {"dry_run": args.dry_run, "commit": git_commit(), "python": PY,
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    summary.setdefault("stages", {})
    with open(out / "check.log", "a") as log:
        log.write(f"\n##### {summary['started_utc']} {mode}: {plan}\n")
        for stage in selected:
            if stage.name != "env" and summary["stages"].get("env", {}).get("status") not in (None, "ok"):
                summary["stages"][stage.name] = {"status": "skipped", "why": "the env stage failed"}
                continue
            summary["stages"][stage.name] = run_stage(stage, args, log, out / f"stage-{stage.name}.json")
            summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\n{'stage':<11} {'status':<8} {'seconds':>8} {'limit':>6}")
    for stage in selected:
        r = summary["stages"][stage.name]
        print(f"{stage.name:<11} {r['status']:<8} {r.get('seconds', 0):>8.0f} {r.get('limit_s', 0):>6.0f}")
    for line in headline(summary):
        print(line)
    bad = [s for s in selected if summary["stages"][s.name]["status"] != "ok"]
    print(f"results: {summary_path} and {out / 'check.log'}")
    if bad:
        rerun = ["bash", "benchmarks/gpu_check.sh", str(args.out), *(["--dry-run"] if args.dry_run else []),
                 "--only", *(s.name for s in bad)]  # fmt: skip
        for s in bad:  # a stage that ran out of time gets twice its limit
            if summary["stages"][s.name]["status"] == "timeout":
                rerun += ["--limit", f"{s.name}={2 * limit_of(s, args):.0f}"]
        print("rerun what did not pass: " + " ".join(rerun))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
