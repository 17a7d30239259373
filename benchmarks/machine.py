"""What a benchmark ran on (recorded with every result) and the peak bf16 rate of known GPUs."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any

import torch

# Dense bf16 tensor-core peak, TFLOP/s (no sparsity), from the vendors' data sheets. Matched against
# torch.cuda.get_device_name(): "NVIDIA H100 80GB HBM3" is the SXM part, "NVIDIA H100 PCIe" the PCIe one.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (HBM3)
    ("A100", 312.0),
    ("L40S", 362.0),
)


def peak_bf16_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when it is not in PEAK_BF16_TFLOPS (or a CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(device: torch.device) -> dict[str, Any]:
    """Machine, software and load at the start of a benchmark: what its numbers depend on."""
    info: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "gpu_memory_gb": round(props.total_memory / 1e9, 1),
            "cuda": torch.version.cuda,
            "peak_bf16_tflops": peak_bf16_tflops(device),
        }
    return info
