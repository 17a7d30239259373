"""Training and evaluation throughput: a naive baseline against vaebench's path, in one process.

    python benchmarks/throughput.py                     # reference model, 64x64, batch 16/32/128, IW K=100
    python benchmarks/throughput.py --quick             # a small model and few steps: minutes on a CPU
    python benchmarks/throughput.py --packing 4         # also 4 training processes sharing the device
    python benchmarks/throughput.py --parts eval        # only some parts (train, eval, packing)
    python benchmarks/throughput.py --dry-run           # every part at toy sizes, seconds on a CPU (CI)

(a) naive: what a newcomer writes. A Dataset that decodes the JPEGs with PIL (centre crop, resize,
    random flip, ToTensor) behind a DataLoader; the model in fp32 and the default memory format;
    torch.optim.Adam(foreach=False), one update per parameter tensor; loss.item() every step; the IW
    bound as a loop over samples, one decoder call per sample.
(b) vaebench: the package's own code. The prepared uint8 cache (`vaebench.data.prepare_cache`);
    `DeviceBatches` + `FastTrainStep` (`vaebench.train.fastpath`: the split on the device, bf16 autocast,
    fused Adam, torch.compile with CUDA graphs on a channels_last model, no host sync in the step);
    `vaebench.evaluation.evaluate.evaluate_model` (large forward passes, bf16 autocast on CUDA).

Both train the same model with the same loss (`vaebench.objectives`' ELBO, discretized likelihood) on
the same generated CelebA-size JPEGs (benchmarks/jpeg_folder.py). Images/s are timed after warm-up
steps (which include compilation, reported apart), with the device synchronised at both ends. FLOPs
are counted by torch.utils.flop_counter on one step: convolutions and matmuls, not elementwise work.
The fraction of peak is against the device's dense bf16 peak (benchmarks/machine.py), for both paths.

--packing N runs N processes of vaebench's training step (batch 32: --packing-batch) on the one device
at the same time, after a common barrier, for a fixed wall time, and compares their summed images/s with
one process alone: the way `vaebench run --parallel N --devices 0,0,...` shares a GPU between runs of
an ablation. Results go to the terminal and, section by section, to the --json file.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms as T
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jpeg_folder import make_celeba_folder
from machine import describe

from vaebench.config.spec import EvalSpec, RunSpec, TrainSpec
from vaebench.data import CachedImages, prepare_cache
from vaebench.data.spec import CelebADataSpec
from vaebench.evaluation.evaluate import EVAL_FORWARD_IMAGES_CUDA, evaluate_model
from vaebench.model.likelihoods import image_log_prob
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import VAE, build_model
from vaebench.objectives import TrainingLoss
from vaebench.objectives.elbo import ElboSpec
from vaebench.train.fastpath import DeviceBatches, FastTrainStep
from vaebench.train.loop import build_optimizer
from vaebench.train.steps import training_loss

IMAGE_SIZE = 64
CELEBA_TRAIN, CELEBA_TEST = 162_770, 19_962
QUICK_MODEL = ModelSpec(stem_channels=8, channels=[16, 32, 64, 64], latent_dim=32)  # the quickstart's
PARTS = ("train", "eval", "packing")
BATCH_SIZES = [16, 32, 128]
IW_SAMPLES = 100
console = Console(width=150)


# ----------------------------------------------------------------------------- settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, few steps (a CPU check)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES)
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default 30; quick 4)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5; quick 2)")
    parser.add_argument("--workers", type=int, help="naive DataLoader workers (default min(8, cores - 1))")
    parser.add_argument("--jpegs", type=int, help="generated JPEGs (default 2048; quick 512)")
    parser.add_argument("--iw-samples", type=int, default=IW_SAMPLES, help="K of the evaluation (both paths)")
    parser.add_argument("--eval-images", type=int, help="images evaluated (default 512; quick 32)")
    parser.add_argument("--k1000", action=argparse.BooleanOptionalAction, default=None,
                        help="also time vaebench's IW K=1000 (default: on unless --quick)")  # fmt: skip
    parser.add_argument("--large-k", type=int, help="the K of --k1000 (default 1000; dry run 16)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="train.compile")
    parser.add_argument("--packing", type=int, default=0, help="also N processes sharing the device")
    parser.add_argument(
        "--packing-seconds", type=float, help="timed window of each packing run (20; quick 8)"
    )
    parser.add_argument("--packing-batch", type=int, help="batch of each packing run (32; dry run 4)")
    parser.add_argument("--skip-naive", action="store_true", help="time vaebench's path only")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS),
        help="what to time: train (batch sizes), eval (IW K and --k1000), packing (with --packing N)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true",
        help="--quick at toy sizes (batch 4/8, 2 steps, 64 JPEGs, K=4, large K 16, 1 s packing at batch 4): "
        "runs every part in seconds on a CPU, to check the script, not to measure",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("throughput.json"), help="where results go")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.quick = True
        toy = {"steps": 2, "warmup": 1, "workers": 1, "jpegs": 64, "eval_images": 8, "large_k": 16,
               "packing_seconds": 1.0, "packing_batch": 4}  # fmt: skip
        for key, value in toy.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.batch_sizes == BATCH_SIZES:
            args.batch_sizes = [4, 8]
        if args.iw_samples == IW_SAMPLES:
            args.iw_samples = 4
        args.k1000 = True if args.k1000 is None else args.k1000
    quick = args.quick
    args.steps = args.steps or (4 if quick else 30)
    args.warmup = args.warmup or (2 if quick else 5)
    args.workers = args.workers if args.workers is not None else min(8, max(1, (os.cpu_count() or 2) - 1))
    args.jpegs = args.jpegs or (512 if quick else 2048)
    args.eval_images = args.eval_images or (32 if quick else 512)
    args.k1000 = (not quick) if args.k1000 is None else args.k1000
    args.packing_seconds = args.packing_seconds or (8.0 if quick else 20.0)
    args.large_k = args.large_k or 1000
    args.packing_batch = args.packing_batch or 32
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def run_spec(model: ModelSpec, batch_size: int, compile: str, root: Path) -> RunSpec:
    return RunSpec(
        data=CelebADataSpec(root=root, flip=True, num_workers=0),
        model=model,
        loss=ElboSpec(),
        train=TrainSpec(steps=1, batch_size=batch_size, compile=compile),  # type: ignore[arg-type]
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the `warmup` untimed steps, seconds of `steps` timed steps), synchronised at each end."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return warm, time.perf_counter() - start


# ----------------------------------------------------------------------------- FLOPs


def flops_per_image(model_spec: ModelSpec) -> dict[str, float]:
    """GFLOP per image of a forward pass, a training step (forward + backward) and a decoder pass (CPU)."""
    model = build_model(model_spec, IMAGE_SIZE)
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(x)
    with FlopCounterMode(display=False) as step:
        TrainingLoss(ElboSpec(), dataset_size=1)(model, x, 1.0)["loss"].backward()
    with FlopCounterMode(display=False) as decode, torch.no_grad():
        model.decode(torch.randn(2, model_spec.latent_dim))
    return {
        "forward": forward.get_total_flops() / 2e9,
        "train_step": step.get_total_flops() / 2e9,
        "decode": decode.get_total_flops() / 2e9,
        "params_million": sum(p.numel() for p in model.parameters()) / 1e6,
    }


# ----------------------------------------------------------------------------- (a) the naive baseline


class NaiveJPEGs(Dataset):
    """The tutorial Dataset: open the JPEG, crop, resize, flip, ToTensor (float in [0, 1])."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted(folder.glob("*.jpg"))
        self.transform = T.Compose(
            [T.CenterCrop(148), T.Resize(IMAGE_SIZE), T.RandomHorizontalFlip(), T.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def forever(loader: DataLoader) -> Iterator[Tensor]:
    while True:
        yield from loader


def naive_train(
    args: argparse.Namespace, model_spec: ModelSpec, folder: Path, batch: int
) -> dict[str, float]:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False  # the default a newcomer has
    torch.manual_seed(0)
    model = build_model(model_spec, IMAGE_SIZE).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=False)
    loader = DataLoader(
        NaiveJPEGs(folder), batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )  # fmt: skip
    batches = forever(loader)
    losses = []

    def step() -> None:
        x = next(batches).to(device)
        terms = TrainingLoss(ElboSpec(), dataset_size=1)(model, x, 1.0)
        optimizer.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        optimizer.step()
        losses.append(terms["loss"].item())  # logged every step: a host sync

    warm, seconds = timed(step, args.warmup, args.steps, device)
    return {"images_per_s": args.steps * batch / seconds, "warmup_s": warm, "last_loss": losses[-1]}


@torch.no_grad()
def naive_iw(model: VAE, images: Tensor, num_samples: int, device: torch.device, batch: int = 64) -> None:
    """The IW bound as a loop over samples, fp32, one decoder call of `batch` images per sample."""
    model.eval()
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device).float() / 255
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        log_w = []
        for _ in range(num_samples):
            eps = torch.randn_like(mu)
            z = mu + std * eps
            mean, log_scale = model.decode(z)
            log_px = image_log_prob(x, mean, log_scale, "discretized")
            log_pz = -0.5 * (z**2 + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * (eps**2 + logvar + math.log(2 * math.pi)).sum(1)
            log_w.append(log_px + log_pz - log_qz)
        bound = torch.logsumexp(torch.stack(log_w), 0) - math.log(num_samples)
        bound.sum().item()


# ----------------------------------------------------------------------------- (b) vaebench's path


def vaebench_train(args: argparse.Namespace, model_spec: ModelSpec, data: CachedImages, batch: int) -> dict:
    device = torch.device(args.device)
    spec = run_spec(model_spec, batch, args.compile, Path("."))
    torch.manual_seed(0)
    model = build_model(model_spec, IMAGE_SIZE).to(device)
    optimizer = build_optimizer(model, spec, device, fused=True)
    batches = DeviceBatches(data, batch, seed=0, flip=True, device=device, say=console.print)
    step = FastTrainStep(model, optimizer, spec, device, training_loss(spec, len(data), device))

    def one() -> None:
        step(*batches.next(), lr=1e-4, weight=1.0)

    warm, seconds = timed(one, args.warmup, args.steps, device)
    counts = step.read()  # what the trainer does every train.log_every steps
    return {
        "images_per_s": args.steps * batch / seconds,
        "warmup_s": warm,
        "compiled": step.compiled,
        "data_on": batches.where,
        "last_loss": counts.sums["loss"] / max(1, counts.sums["n"]),
    }


def vaebench_eval(model: VAE, data: CachedImages, num: int, num_samples: int, device: torch.device) -> float:
    """Seconds of vaebench.evaluation.evaluate.evaluate_model on the first `num` images (all its metrics)."""
    spec = EvalSpec(iw_samples=num_samples, batch_size=64, max_images=num, mi_batch_size=min(256, num))
    cuda = device.type == "cuda"
    start = time.perf_counter()
    evaluate_model(
        model, data, spec, "discretized", device,
        autocast=torch.bfloat16 if cuda else None, forward_images=EVAL_FORWARD_IMAGES_CUDA if cuda else None,
    )  # fmt: skip
    sync(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- packing


def _pack_worker(index: int, barrier: Any, results: Any, config: dict[str, Any]) -> None:
    """One of N training processes on the device: warm up, wait for all, train for a fixed wall time."""
    torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    model_spec = ModelSpec.model_validate(config["model"])
    spec = run_spec(model_spec, config["batch"], config["compile"], Path("."))
    data = CachedImages(Path(config["cache"]))
    torch.manual_seed(index)
    model = build_model(model_spec, IMAGE_SIZE).to(device)
    batches = DeviceBatches(data, config["batch"], seed=index, flip=True, device=device, say=lambda _: None)
    loss = training_loss(spec, len(data), device)
    step = FastTrainStep(model, build_optimizer(model, spec, device, fused=True), spec, device, loss)
    for _ in range(config["warmup"]):
        step(*batches.next(), lr=1e-4, weight=1.0)
    sync(device)
    barrier.wait(timeout=900)  # all warmed up (compiled): the timed windows overlap
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < config["seconds"]:
        for _ in range(5):  # check the clock every 5 steps: the queue stays full in between
            step(*batches.next(), lr=1e-4, weight=1.0)
        steps += 5
        sync(device)
    seconds = time.perf_counter() - start
    step.read()
    results.put(
        {"index": index, "images_per_s": steps * config["batch"] / seconds, "compiled": step.compiled}
    )


def packing(args: argparse.Namespace, model_spec: ModelSpec, cache: Path) -> dict[str, Any]:
    """Aggregate images/s of 1 and of args.packing concurrent training processes on the device."""
    context = mp.get_context("spawn")
    out: dict[str, Any] = {"batch": args.packing_batch, "seconds": args.packing_seconds}
    for procs in (1, args.packing):
        config = {
            "device": args.device, "model": model_spec.model_dump(mode="json"), "batch": args.packing_batch,
            "compile": args.compile, "cache": str(cache), "warmup": args.warmup,
            "seconds": args.packing_seconds, "threads": max(1, (os.cpu_count() or 1) // procs),
        }  # fmt: skip
        barrier, results = context.Barrier(procs), context.Queue()
        workers = [
            context.Process(target=_pack_worker, args=(i, barrier, results, config)) for i in range(procs)
        ]
        for w in workers:
            w.start()
        got: list[dict[str, Any]] = []
        while len(got) < procs:
            try:
                got.append(results.get(timeout=5))
            except queue.Empty:
                failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if failed:
                    for w in workers:
                        w.terminate()
                    raise RuntimeError(
                        f"a packing worker failed (exit codes {failed}); see its traceback above"
                    ) from None
        for w in workers:
            w.join()
        out[f"{procs}_processes"] = {
            "aggregate_images_per_s": sum(r["images_per_s"] for r in got),
            "per_process": sorted(r["images_per_s"] for r in got),
            "compiled": all(r["compiled"] for r in got),
        }
    one, many = out["1_processes"], out[f"{args.packing}_processes"]
    out["ratio"] = many["aggregate_images_per_s"] / one["aggregate_images_per_s"]
    return out


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def print_report(result: dict[str, Any]) -> None:
    peak = result["machine"].get("peak_bf16_tflops")
    table = Table(title=f"Throughput on {result['machine'].get('gpu', result['machine']['cpu'])}")
    for column in ("measure", "naive img/s", "vaebench img/s", "ratio", "GFLOP/img", "vaebench TFLOP/s",
                   "% of bf16 peak", "warm-up s"):  # fmt: skip
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in result["rows"]:
        tflops = row["vaebench"] * row["gflop_per_image"] / 1e3
        table.add_row(
            row["measure"], fmt(row.get("naive")), fmt(row["vaebench"]),
            fmt(row["vaebench"] / row["naive"], 1) + "x" if row.get("naive") else "n/a",
            fmt(row["gflop_per_image"], 2), fmt(tflops, 2), fmt(100 * tflops / peak, 1) if peak else "n/a",
            fmt(row.get("warmup_s"), 1),
        )  # fmt: skip
    console.print(table)
    for line in result.get("notes", []):
        console.print(line)


def write(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")


def add_row(result: dict[str, Any], row: dict[str, Any]) -> None:
    """Append a row with vaebench's TFLOP/s and fraction of the bf16 peak (None off a known GPU)."""
    peak = result["machine"].get("peak_bf16_tflops")
    tflops = row["vaebench"] * row["gflop_per_image"] / 1e3
    row |= {"vaebench_tflops": tflops, "fraction_of_bf16_peak": tflops / peak if peak else None}
    if row.get("naive"):
        row["ratio"] = row["vaebench"] / row["naive"]
    result["rows"].append(row)


def time_training(
    args: argparse.Namespace, model_spec: ModelSpec, result: dict[str, Any], data: CachedImages, folder: Path
) -> None:
    """One row per batch size: vaebench's fast path, then the naive loop; the epoch time at batch 32."""
    device = torch.device(args.device)
    for batch in args.batch_sizes:
        fast = vaebench_train(args, model_spec, data, batch)
        naive = None if args.skip_naive else naive_train(args, model_spec, folder, batch)
        add_row(result, {
            "measure": f"train, batch {batch}", "batch": batch,
            "naive": naive and naive["images_per_s"], "vaebench": fast["images_per_s"],
            "gflop_per_image": result["gflop_per_image"]["train_step"], "warmup_s": fast["warmup_s"],
            "naive_detail": naive, "vaebench_detail": fast,
        })  # fmt: skip
        console.print(result["rows"][-1])
        if batch == 32:
            row = result["rows"][-1]
            result["targets"]["train_ratio_at_batch_32"] = row.get("ratio")
            result["targets"]["celeba_epoch_s"] = CELEBA_TRAIN / row["vaebench"]
            naive_epoch = CELEBA_TRAIN / row["naive"] if row["naive"] else None
            result["notes"].append(
                f"One CelebA-64 epoch ({CELEBA_TRAIN:,} images) at batch 32, from the step rate: vaebench "
                f"{CELEBA_TRAIN / row['vaebench']:,.1f} s, naive {fmt(naive_epoch, 1)} s"
            )
        write(result, args.json)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def time_evaluation(
    args: argparse.Namespace, model_spec: ModelSpec, result: dict[str, Any], data: CachedImages
) -> None:
    """IW K=--iw-samples, naive vs vaebench, then vaebench at --large-k projected to CelebA's test split."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(model_spec, IMAGE_SIZE).to(device)
    flops = result["gflop_per_image"]
    images = torch.from_numpy(data.array[: args.eval_images].copy())
    num = len(images)
    eval_flops = flops["forward"] - flops["decode"]  # the encoder, once per image
    k = args.iw_samples
    warm = min(num, 64)  # one batch first: the same shapes, so cuDNN's and the allocator's first-time costs
    vaebench_eval(model, data, warm, k, device)
    seconds = vaebench_eval(model, data, num, k, device)
    naive_s = None
    if not args.skip_naive:
        naive_iw(model, images[:warm], k, device)
        start = time.perf_counter()
        naive_iw(model, images, k, device)
        sync(device)
        naive_s = time.perf_counter() - start
    add_row(result, {
        "measure": f"eval, IW K={k}", "naive": naive_s and num / naive_s, "vaebench": num / seconds,
        "gflop_per_image": eval_flops + (k + 2) * flops["decode"], "images": num,
    })  # fmt: skip
    write(result, args.json)
    if args.k1000:
        big = args.large_k
        vaebench_eval(model, data, warm, big, device)
        seconds = vaebench_eval(model, data, num, big, device)
        add_row(result, {
            "measure": f"eval, IW K={big}", "naive": None, "vaebench": num / seconds,
            "gflop_per_image": eval_flops + (big + 2) * flops["decode"], "images": num,
        })  # fmt: skip
        projected = CELEBA_TEST * seconds / num
        result["targets"] |= {"iw_large_k": big, "iw_large_k_test_split_s": projected}
        result["notes"].append(
            f"IW K={big} on CelebA's test split ({CELEBA_TEST:,} images), projected from {num} images: "
            f"{projected:,.0f} s"
        )
        write(result, args.json)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    model_spec = QUICK_MODEL if args.quick else ModelSpec()
    result: dict[str, Any] = {
        "machine": describe(device),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": model_spec.model_dump(mode="json"),
        "rows": [],
        "targets": {},  # the figures benchmarks/RESULTS.md's targets are about, as measured here
        "notes": [],
    }
    flops = flops_per_image(model_spec)
    result["gflop_per_image"] = flops
    console.print(f"{describe(device)}\nGFLOP per image: {flops}")

    with tempfile.TemporaryDirectory(prefix="vaebench-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_celeba_folder(root, train=args.jpegs)
        data_spec = CelebADataSpec(root=root, num_workers=min(8, os.cpu_count() or 1))
        cache = prepare_cache(data_spec, splits=("train",), progress=False)["train"]
        data = CachedImages(cache)
        result["notes"].append(
            f"{args.jpegs} JPEGs generated and cached in {time.perf_counter() - start:.1f} s"
        )
        write(result, args.json)
        if "train" in args.parts:
            time_training(args, model_spec, result, data, root / "celeba" / "img_align_celeba")
        if "eval" in args.parts:
            time_evaluation(args, model_spec, result, data)
        if "packing" in args.parts and args.packing > 1:
            pack = packing(args, model_spec, cache)
            result["packing"] = pack
            result["targets"]["packing_ratio"] = pack["ratio"]
            one, many = pack["1_processes"], pack[f"{args.packing}_processes"]
            result["notes"].append(
                f"Packing at batch {args.packing_batch}: 1 process "
                f"{one['aggregate_images_per_s']:,.0f} img/s, {args.packing} processes "
                f"{many['aggregate_images_per_s']:,.0f} img/s together "
                f"({pack['ratio']:.2f}x; per process {', '.join(f'{v:,.0f}' for v in many['per_process'])})"
            )
        write(result, args.json)
    print_report(result)
    console.print(f"results: {args.json}")


if __name__ == "__main__":
    main()
