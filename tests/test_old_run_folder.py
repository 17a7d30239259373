"""A run folder written by vaebench 0.1 (commit 22bf997, before the layered package layout) still resumes,
finishes and evaluates, to the numbers that version would have reached.

The fixture (`tests/fixtures/run-v0.1/`) is the tiny quickstart variant (tests/tiny.py's TINY with the final
evaluation on) stopped at step 8 of 12 by that version; `expected.json` holds what the uninterrupted run
ended with under it: the metrics rows (without images/s), float64 sums and norms of last.pt's tensors, and
eval/test.json. Bit-identity is checked by hand for a refactor (same machine, same torch); here the
tolerance is 1e-5 relative, so that another CPU's kernels do not fail the test while a changed
computation (a different step, loss or schedule) does.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tiny import tiny_variant
from vaebench.launch.runner import run_one

FIXTURE = Path(__file__).parent / "fixtures" / "run-v0.1"


CLOCK = ("time_utc", "seconds", "wall_s")  # when and how long, not what was computed


def close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in (k for k in a if not k.endswith(CLOCK)):
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and not (math.isnan(a) and math.isnan(b)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), where
    else:
        assert a == b, where


def test_a_run_folder_from_vaebench_0_1_resumes_finishes_and_evaluates_to_its_numbers(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / "stopped", run)
    variant = tiny_variant(**{k.replace(".", "__"): v for k, v in expected["overrides"].items()})

    result = run_one(variant, 0, run, device="cpu")

    assert result.status == "finished" and (run / "DONE").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    close([{k: v for k, v in r.items() if k != "images_per_s"} for r in rows], expected["metrics"], "metrics")
    last = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    tensors = {
        k: [float(v.double().sum()), float(v.double().norm())]
        for k, v in last["model"].items()
        if v.is_floating_point()
    }
    close(tensors, expected["last_model"], "last.pt")
    evaluation = json.loads((run / "eval" / "test.json").read_text())
    close(evaluation["results"], expected["eval_test"]["results"], "eval/test.json")
