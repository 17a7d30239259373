"""Each registered objective, compiled whole on the fast path: no fallback to eager, no recompilation.

    python benchmarks/compiled_objectives.py --json objectives.json            # CUDA: inductor + CUDA graphs
    python benchmarks/compiled_objectives.py --dry-run --json objectives.json  # CPU: aot_eager, a tiny model

For every objective in `vaebench.objectives.OBJECTIVES` (with its default settings), --steps training
steps (20) of the quick model (the quickstart's, 64x64, batch 32) through the trainer's own fast path:
`DeviceBatches` + `FastTrainStep` with a fused Adam, compiled with fullgraph=True so that a graph
break is an error rather than a silently split step. After --warmup steps (3: compilation, then CUDA
graph warm-up and recording), `torch.compiler.set_stance("fail_on_recompile")` turns any further
compilation into an error. The learning rate and the annealing weight change every step and the data
crosses an epoch boundary after the warm-up, as in training: none of that may recompile.

An objective passes when every step ran compiled (no CompileWarning, `FastTrainStep.compiled`), no
graph was compiled after the warm-up, and its losses are finite. When fullgraph=True fails, it is
compiled again without it to record the graph breaks (a failure either way). For each objective the
JSON records the status, the compile seconds (the first step, which compiles), the warm-up seconds,
the steady ms per step, the number of graphs, CUDA-graph skips and their reasons, and any error.

Each objective runs in its own process (a fresh dynamo and inductor state), --jobs at a time (4 on
CUDA: compiling is mostly single-threaded Python, so the four compile side by side in about the time
of one; their compile seconds are then each the time of a shared machine). Exit status 0 when all pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaebench.config.spec import RunSpec, TrainSpec
from vaebench.data import build_dataset
from vaebench.data.spec import SyntheticDataSpec
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import build_model
from vaebench.objectives import OBJECTIVES
from vaebench.train.fastpath import CompileWarning, DeviceBatches, FastTrainStep
from vaebench.train.loop import build_optimizer
from vaebench.train.steps import training_loss

QUICK_MODEL = ModelSpec(stem_channels=8, channels=[16, 32, 64, 64], latent_dim=32)  # the quickstart's
TINY_MODEL = ModelSpec(stem_channels=4, channels=[8, 16], latent_dim=8)  # --dry-run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", nargs="+", choices=sorted(OBJECTIVES), help="default: all registered")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--backend", help="torch.compile backend (inductor; dry run aot_eager)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per objective")
    parser.add_argument("--warmup", type=int, default=3, help="steps before recompiling becomes an error")
    parser.add_argument("--batch", type=int, help="batch size (32; dry run 8)")
    parser.add_argument(
        "--jobs", type=int, help="objectives compiled at once, one process each (CUDA 4, else 1)"
    )
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction,
        help="convert the model to channels_last, as the fast path does when it compiles (default: on CUDA)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, aot_eager, a tiny model at 32x32: seconds"
    )
    parser.add_argument("--json", type=Path, default=Path("objectives.json"), help="where results go")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    args.backend = args.backend or ("aot_eager" if args.dry_run else "inductor")
    args.batch = args.batch or (8 if args.dry_run else 32)
    # Not on the CPU: there aot_eager runs a channels_last model's graph with the strides that torch's fake
    # tensors predicted, and for the encoder's flatten they differ from what the CPU kernels return ("view
    # size is not compatible with input tensor's size and stride"). Inductor on CUDA lays tensors out itself.
    if args.channels_last is None:
        args.channels_last = args.device.startswith("cuda")
    args.objective = args.objective or sorted(OBJECTIVES)
    args.jobs = args.jobs or (min(4, len(args.objective)) if args.device.startswith("cuda") else 1)
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SkipReasons(logging.Handler):
    """Collects inductor's "skipping cudagraphs due to ..." messages (its `cudagraphs` log artifact)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:300])


def train_compiled(kind: str, args: argparse.Namespace, fullgraph: bool) -> dict[str, Any]:
    """--steps fast-path steps of objective `kind`, compiled; what happened, as a JSON-able dict."""
    from torch._dynamo.utils import counters

    device = torch.device(args.device)
    image_size = 32 if args.dry_run else 64
    spec = RunSpec(
        # 8 batches per epoch: the epoch boundary (a new order and flips on the device) comes after warm-up
        data=SyntheticDataSpec(train_size=8 * args.batch, image_size=image_size, flip=True),
        model=TINY_MODEL if args.dry_run else QUICK_MODEL,
        loss=OBJECTIVES[kind].spec(),
        train=TrainSpec(steps=args.steps, batch_size=args.batch, compile="on"),
    )
    torch.manual_seed(0)
    data = build_dataset(spec.data, "train")
    model = build_model(spec.model, image_size).to(device)
    optimizer = build_optimizer(model, spec, device, fused=True)
    batches = DeviceBatches(data, args.batch, seed=0, flip=True, device=device, say=print)
    loss = training_loss(spec, len(data), device)
    step = FastTrainStep(
        model, optimizer, spec, device, loss,
        compile=True, backend=args.backend, fullgraph=fullgraph, channels_last=args.channels_last,
    )  # fmt: skip
    counters.clear()
    skips = SkipReasons()
    cudagraph_log = logging.getLogger("torch._inductor.cudagraph_utils.__cudagraphs")
    cudagraph_log.addHandler(skips)
    out: dict[str, Any] = {"objective": kind, "fullgraph": fullgraph, "backend": args.backend,
                           "channels_last": args.channels_last}  # fmt: skip
    seconds: list[float] = []
    graphs_after_warmup = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CompileWarning)
            for i in range(args.steps):
                if i == args.warmup:
                    graphs_after_warmup = counters["stats"]["unique_graphs"]
                    torch.compiler.set_stance("fail_on_recompile")
                start = time.perf_counter()
                # lr and weight change every step, as the schedules make them: device tensors, no recompile
                step(*batches.next(), lr=1e-3 * (1 + i % 3) / 3, weight=(i + 1) / args.steps)
                sync(device)
                seconds.append(time.perf_counter() - start)
        counts = step.read()
        out["fallback_warnings"] = [str(w.message)[:500] for w in caught if w.category is CompileWarning]
        out["mean_loss"] = counts.sums["loss"] / max(1, counts.sums["n"])
        out["skipped_steps"] = counts.skipped
    except Exception as error:  # a recompilation under fail_on_recompile, or a failure eager mode has too
        out["error"] = f"{type(error).__name__}: {str(error).strip()[:1500]}"
        out["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
    finally:
        torch.compiler.set_stance("default")
        cudagraph_log.removeHandler(skips)
    steady = seconds[args.warmup :]
    out |= {
        "steps_run": len(seconds),
        "compiled_at_end": step.compiled,
        "compile_s": seconds[0] if seconds else None,  # the first step: tracing, compiling, one run
        "warmup_s": sum(seconds[: args.warmup]),
        "steady_ms_per_step": 1e3 * statistics.median(steady) if steady else None,
        "images_per_s": args.batch / statistics.median(steady) if steady else None,
        "graphs": counters["stats"]["unique_graphs"],
        "graphs_after_warmup": (
            counters["stats"]["unique_graphs"] - graphs_after_warmup
            if graphs_after_warmup is not None
            else None
        ),
        "graph_breaks": dict(counters["graph_break"]),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
        "cudagraph_skip_reasons": sorted(set(skips.messages)),
    }
    return out


def check_objective(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One objective: compiled with fullgraph=True; if that fails, again without it to see the breaks."""
    whole = train_compiled(kind, args, fullgraph=True)
    problems = []
    if whole.get("error"):
        problems.append("error")
    if whole.get("fallback_warnings") or not whole["compiled_at_end"]:
        problems.append("fell back to eager")
    if whole["graphs_after_warmup"]:
        problems.append(f"{whole['graphs_after_warmup']} graph(s) compiled after the warm-up")
    if whole.get("mean_loss") is not None and not math.isfinite(whole["mean_loss"]):
        problems.append("non-finite loss")
    if whole.get("skipped_steps"):
        problems.append(f"{whole['skipped_steps']} step(s) skipped as non-finite")
    if whole["cudagraph_skips"]:
        problems.append(f"{whole['cudagraph_skips']} CUDA-graph skip(s)")
    result: dict[str, Any] = {"objective": kind, "status": "ok" if not problems else "failed"}
    result["problems"] = problems
    result["fullgraph_run"] = whole
    if whole.get("fallback_warnings") and not whole.get("error"):
        result["split_run"] = train_compiled(kind, args, fullgraph=False)  # where the graph breaks are
    return result


def describe(kind: str, result: dict[str, Any]) -> str:
    whole = result.get("fullgraph_run") or {}
    return (
        f"{kind}: {result['status']} {result.get('problems') or ''} "
        f"compile {whole.get('compile_s') or 0:.1f} s, "
        f"steady {whole.get('steady_ms_per_step') or math.nan:.2f} ms/step, graphs {whole.get('graphs')}, "
        f"CUDA-graph skips {whole.get('cudagraph_skips')}"
    )


def in_subprocesses(args: argparse.Namespace, record: Callable[[str, dict[str, Any]], None]) -> None:
    """Each objective in its own process (--jobs at a time); their output is printed as each ends."""
    pending = list(args.objective)
    running: dict[str, tuple[subprocess.Popen, Path, Any, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vaebench-objectives-") as tmp:
        while pending or running:
            while pending and len(running) < args.jobs:
                kind = pending.pop(0)
                out, log = Path(tmp) / f"{kind}.json", open(Path(tmp) / f"{kind}.log", "w+")
                command = [sys.executable, __file__, "--objective", kind, "--json", str(out), "--jobs", "1",
                           "--device", args.device, "--backend", args.backend, "--steps", str(args.steps),
                           "--warmup", str(args.warmup), "--batch", str(args.batch),
                           "--channels-last" if args.channels_last else "--no-channels-last"]  # fmt: skip
                command += ["--dry-run"] if args.dry_run else []
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                running[kind] = (proc, out, log, time.perf_counter())
            time.sleep(0.2)
            for kind, (proc, out, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[kind]
                log.seek(0)
                text = log.read()
                log.close()
                print(
                    f"----- {kind} (exit {proc.returncode}, {time.perf_counter() - start:.0f} s)\n{text}",
                    end="",
                )
                if out.exists():
                    result = json.loads(out.read_text())["objectives"][kind]
                else:
                    result = {"objective": kind, "status": "crashed", "exit_code": proc.returncode,
                              "log_tail": text.strip().splitlines()[-15:]}  # fmt: skip
                result["process_s"] = time.perf_counter() - start
                record(kind, result)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary: dict[str, Any] = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "objectives": {},
    }

    def record(kind: str, result: dict[str, Any]) -> None:
        summary["objectives"][kind] = result
        args.json.write_text(json.dumps(summary, indent=2) + "\n")

    if args.jobs > 1:
        in_subprocesses(args, record)
    else:
        for kind in args.objective:  # one process: FastTrainStep resets dynamo for each
            start = time.perf_counter()
            result = check_objective(kind, args)
            result["process_s"] = time.perf_counter() - start
            record(kind, result)
            print(describe(kind, result), flush=True)
    statuses = {k: r["status"] for k, r in summary["objectives"].items()}
    print(f"objectives: {statuses}")
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
