"""Throughput of the quality metrics' feature extractors: images/s, FLOPs per image, projected times.

    python benchmarks/features.py                    # on the GPU when there is one (CPU otherwise)
    python benchmarks/features.py --dry-run          # toy sizes on the CPU: checks the script runs

For each extractor (torch-fidelity's Inception-v3 at 299 px, its VGG16 fc2 at 224 px, LPIPS-VGG at
64 px; seeded random weights: speed does not depend on the values) it measures images/s at the
evaluation's batch size after one warm-up batch, counts FLOPs per image (torch.utils.flop_counter),
and projects the time of a CelebA evaluation: 10k and 50k prior samples plus the 19,962-image test
split (extracted once and cached). On a CPU it also projects the H100 time from the FLOPs at an
assumed effective rate (EFFECTIVE_H100_TFLOPS, stated in the output), since only a GPU can measure it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vaebench.evaluation.quality import extractors

CELEBA_TEST = 19_962
EFFECTIVE_H100_TFLOPS = 100.0
"""An assumed effective rate of fp32 convolutions on an H100 with TF32 tensor cores (PyTorch's default
for cuDNN convolutions): about a fifth of the TF32 peak, for the projection from a CPU measurement."""


def flops_per_image(run: object, image: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        run(image)  # type: ignore[operator]
    return counter.get_total_flops() / len(image)


def measure(name: str, run: object, images: torch.Tensor, batch: int) -> dict[str, float]:
    run(images[:batch])  # type: ignore[operator]  # warm-up: cuDNN's algorithm search, allocations
    if images.is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for chunk in images.split(batch):
        run(chunk)  # type: ignore[operator]
    if images.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    per_s = len(images) / seconds
    flops = flops_per_image(run, images[:1])
    result = {"images_per_s": per_s, "gflops_per_image": flops / 1e9, "batch": batch, "images": len(images)}
    for samples in (10_000, 50_000):
        result[f"seconds_{samples // 1000}k_plus_test"] = (samples + CELEBA_TEST) / per_s
        result[f"h100_projected_s_{samples // 1000}k_plus_test"] = (
            (samples + CELEBA_TEST) * flops / (EFFECTIVE_H100_TFLOPS * 1e12)
        )
    return result


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--images", type=int, default=None, help="images timed per extractor")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    batch = 500 if device.type == "cuda" else (2 if args.dry_run else 50)
    count = args.images or (1_000 if device.type == "cuda" else (2 if args.dry_run else 100))
    torch.set_grad_enabled(False)
    images = (torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    images = images.to(device)
    results: dict[str, object] = {"device": str(device), "torch": torch.__version__, "dry_run": args.dry_run}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as folder:
        for name in ("inception", "vgg16"):
            path = extractors.random_weights_file(name, Path(folder))
            network = extractors.build_extractor(name, path, device)  # type: ignore[arg-type]
            results[name] = measure(name, lambda x, n=network: n(x), images, batch)
            del network
        lpips = extractors.LPIPS(extractors.random_weights_file("vgg16", Path(folder))).to(device)
        results["lpips"] = measure("lpips", lambda x: lpips(x, x.flip(0)), images, batch)
    results["effective_h100_tflops_assumed"] = EFFECTIVE_H100_TFLOPS
    print(f"device {device}; {count} images per extractor, batch {batch}")
    print(
        f"{'extractor':<10} {'images/s':>10} {'GFLOP/img':>10} {'10k+test':>10} {'50k+test':>10} "
        f"{'H100 10k/50k (proj.)':>22}"
    )
    for name in ("inception", "vgg16", "lpips"):
        r = results[name]
        assert isinstance(r, dict)
        print(
            f"{name:<10} {r['images_per_s']:>10.1f} {r['gflops_per_image']:>10.2f} "
            f"{r['seconds_10k_plus_test']:>9.0f}s {r['seconds_50k_plus_test']:>9.0f}s "
            f"{r['h100_projected_s_10k_plus_test']:>10.1f}s/{r['h100_projected_s_50k_plus_test']:.1f}s"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
