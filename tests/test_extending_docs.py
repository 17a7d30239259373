"""The README's "Extending vaebench" examples work as written: each, dropped into its package as one new
file, is picked up by the registry with no other change (checked in a fresh process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vaebench.evaluation.metrics
import vaebench.objectives

README = Path(__file__).resolve().parents[1] / "README.md"


def example(heading: str) -> str:
    """The first ```python block after `### <heading>` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(f"### {heading}") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, f"no python example under {heading!r}"
    return match.group(1)


def run_with_entry(package: object, name: str, source: str, code: str) -> subprocess.CompletedProcess[str]:
    entry = Path(package.__path__[0]) / f"zz_readme_{name}_{os.getpid()}.py"  # type: ignore[attr-defined]
    entry.write_text(source, encoding="utf-8")
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    finally:
        entry.unlink()


@pytest.mark.slow
def test_the_objective_example_is_a_loss_kind_that_trains_a_step() -> None:
    code = """
import torch
from vaebench.objectives import TrainingLoss
from vaebench.model.spec import ModelSpec
from vaebench.config.spec import RunSpec
from vaebench.config.experiments import apply_overrides
from vaebench.model.vae import build_model
tree = apply_overrides({"loss": {"beta": 2.0, "likelihood": "continuous"}}, {"loss.kind": "kl_capacity"})
spec = RunSpec.model_validate(tree).loss
assert spec.kind == "kl_capacity" and spec.likelihood == "continuous", spec
model = build_model(ModelSpec(stem_channels=4, channels=[8], latent_dim=4, blocks_per_level=0), 16)
loss = TrainingLoss(spec, dataset_size=8)
terms = loss(model, torch.rand(2, 3, 16, 16), 0.5)
terms["loss"].backward()
print(sorted(terms), loss.terms)
"""
    done = run_with_entry(vaebench.objectives, "objective", example("Adding an objective"), code)
    assert done.returncode == 0, done.stderr
    assert "['capacity_gap', 'kl', 'loss', 'recon']" in done.stdout


@pytest.mark.slow
def test_the_metric_example_is_evaluated_printed_and_a_rank_choice() -> None:
    code = """
from vaebench.cli import RankChoice
from vaebench.evaluation.metrics import METRICS
from vaebench.report.columns import REPORT_METRICS
import torch
from vaebench.data import build_dataset
from vaebench.evaluation.evaluate import evaluate_model
from vaebench.config.spec import EvalSpec
from vaebench.model.spec import ModelSpec
from vaebench.data.spec import SyntheticDataSpec
from vaebench.model.vae import build_model
assert "recon_rmse" in METRICS and "recon_rmse" in [m.key for m in REPORT_METRICS]
data = build_dataset(SyntheticDataSpec(image_size=16, train_size=8, val_size=8, test_size=8), "test")
model = build_model(ModelSpec(stem_channels=4, channels=[8], latent_dim=4, blocks_per_level=0), 16)
spec = EvalSpec(iw_samples=2, mi_batch_size=4)
m = evaluate_model(model, data, spec, "discretized", torch.device("cpu")).metrics
assert abs(m["test/recon_rmse"] - m["test/recon_mse"] ** 0.5) < 1e-12, m
print(RankChoice("recon_rmse").value)
"""
    done = run_with_entry(vaebench.evaluation.metrics, "metric", example("Adding a metric"), code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "recon_rmse"
