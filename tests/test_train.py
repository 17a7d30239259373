"""`vaebench run` and the trainer, on tiny CPU runs of the real quickstart experiment.

What a run leaves behind (the run folder), that resuming after any interruption (stop, Ctrl-C,
kill -9, a numerical fault) ends bit-identical to a run never interrupted, that numerical faults stop
a run cleanly, that W&B can never stop one, and what the command line does with a queue of runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import vaebench.train.loop as train_module
from tiny import QUICKSTART, TINY, inf_gradient, nan_loss, on_training_calls, set_args, tiny_variant
from vaebench.cli import app
from vaebench.config.experiments import load_experiment, select
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.core.progress import PlainProgress
from vaebench.evaluation.figures import TEMPERATURES
from vaebench.launch.runner import plan_runs, run_one, run_queue
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.metrics_log import read_metrics
from vaebench.runs.tracking import TrackingWarning
from vaebench.train.loop import NumericalFault

TOTAL = 12
LOGGED = [2, 4, 6, 8, 10, 12]
VALIDATED = [4, 8, 12]
runner = CliRunner()


def run_cli(*args: str | Path) -> Any:
    """Invoke `vaebench run` in-process (its output is not a terminal, so table cells are never folded)."""
    return runner.invoke(app, ["run", *map(str, args)])


def steps(run_dir: Path) -> list[int]:
    return [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")]


def last(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Same structure and bit-identical tensors (torch.equal), numbers and strings, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"tensors differ at {where}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"keys differ at {where}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"lengths differ at {where}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{a!r} != {b!r} at {where}"


def assert_same_final_state(run: Path, reference: Path) -> None:
    """The final checkpoints hold bit-identical parameters, optimizer state and loop counters."""
    got, want = last(run), last(reference)
    assert got["loop"]["step"] == want["loop"]["step"] == TOTAL
    assert_identical(got["model"], want["model"], "model")
    assert_identical(got["optimizer"], want["optimizer"], "optimizer")
    assert_identical(got["loop"]["best_val"], want["loop"]["best_val"], "loop.best_val")
    assert_identical(got["loop"].get("best_step"), want["loop"].get("best_step"), "loop.best_step")


def assert_same_metrics(run: Path, reference: Path) -> None:
    """metrics.jsonl rows equal the reference's, throughput (a wall-clock measure) aside."""
    got, want = read_metrics(run / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want, strict=True):
        g.pop("images_per_s"), w.pop("images_per_s")
        assert g == w, f"row at step {g['step']} differs"


class Recorder:
    """A Reporter that keeps what the trainer tells it."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.updates: list[tuple[int, dict[str, float]]] = []

    def start(self, name: str, total: int, initial: int) -> None:
        self.messages.append(f"start {name} {initial}/{total}")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.updates.append((step, metrics))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def finish(self) -> None: ...


# ----------------------------------------------------------------------------- one CLI queue, shared


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """`vaebench run quickstart --variant isotropic --seed 0 --seed 1 --quiet` with the TINY overrides."""
    runs = tmp_path_factory.mktemp("cli") / "runs"
    result = run_cli(
        QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--seed", "0", "--seed", "1",
        "--runs-dir", runs, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result, runs


@pytest.fixture(scope="module")
def reference(queue: tuple[Any, Path]) -> Path:
    """An uninterrupted run of the tiny spec, seed 0: what every resumed run must reproduce exactly."""
    return queue[1] / "quickstart" / "isotropic" / "seed0"


def test_run_makes_one_folder_per_selected_variant_and_seed(queue: tuple[Any, Path]) -> None:
    _, runs = queue
    assert sorted(p.relative_to(runs).as_posix() for p in runs.glob("*/*/*")) == [
        "quickstart/isotropic/seed0",
        "quickstart/isotropic/seed1",
    ]  # --variant isotropic left out the variance variant; --seed replaced the spec's seeds [0]
    for seed in (0, 1):
        assert (runs / "quickstart" / "isotropic" / f"seed{seed}" / "DONE").is_file()


def test_final_table_lists_each_run_folder_with_its_status(queue: tuple[Any, Path]) -> None:
    result, runs = queue
    for seed in (0, 1):
        folder = runs / "quickstart" / "isotropic" / f"seed{seed}"
        row = next(line for line in result.output.splitlines() if str(folder) + " " in line)
        assert "finished" in row
        summary = json.loads((folder / "summary.json").read_text())
        assert f"{summary['val/bpd_elbo']:.4f}" in row


def test_quiet_prints_one_plain_line_per_logged_step(queue: tuple[Any, Path]) -> None:
    result, _ = queue
    assert "\x1b[" not in result.output  # no terminal control codes
    lines = result.output.splitlines()
    assert lines[0] == "[1/2] isotropic/seed0: steps 0..12"
    assert "[2/2] isotropic/seed1: steps 0..12" in lines
    for seed in (0, 1):
        logged = [
            re.fullmatch(rf"isotropic/seed{seed} step (\d+)/12 loss \S+  kl \S+  beta .*", x) for x in lines
        ]
        assert [int(m.group(1)) for m in logged if m] == LOGGED
        val_lines = [x for x in lines if x.startswith(f"isotropic/seed{seed} step") and "val bpd" in x]
        assert [int(x.split()[2].split("/")[0]) for x in val_lines] == VALIDATED


def test_plain_lines_are_never_wrapped_even_in_an_80_column_log() -> None:
    """SLURM logs have no terminal: rich assumes 80 columns, but a log line must stay one line for grep."""
    out = io.StringIO()
    progress = PlainProgress(Console(file=out, width=80))
    name = "decoder-variance_perceptual-on_anneal-cyclical_batch-32/seed0"
    progress.queue(16)
    progress.start(name, 20000, 0)
    metrics = {"train/loss": 4321.5, "train/kl": 31.25, "train/beta": 0.5, "val/bpd_elbo": 4.1234}
    progress.update(500, metrics | {"images_per_s": 1234.0})
    progress.message(f"runs/ablation/{name}: failed: " + "x" * 100)
    assert out.getvalue().splitlines() == [
        f"[1/16] {name}: steps 0..20000",
        f"{name} step 500/20000 loss 4322  kl 31.2  beta 0.5  val bpd 4.1234  img/s 1234",
        f"runs/ablation/{name}: failed: " + "x" * 100,
    ]


def test_spec_yaml_holds_the_fully_resolved_spec(reference: Path) -> None:
    doc = yaml.safe_load((reference / "spec.yaml").read_text())
    assert (doc["experiment"], doc["variant"], doc["seed"]) == ("quickstart", "isotropic", 0)
    resolved = doc["spec"]
    # Every section is written out, defaults included, so the file rebuilds the run on its own.
    assert set(resolved) == set(RunSpec.model_fields)
    assert resolved["optim"]["betas"] == [0.9, 0.999]  # a default nobody set
    assert resolved["model"]["channels"] == [8] and resolved["model"]["latent_dim"] == 4  # --set
    assert resolved["optim"]["lr"] == 2e-3  # the quickstart base
    assert RunSpec.model_validate(resolved) == tiny_variant().spec


def test_metrics_jsonl_has_one_row_per_logged_step_with_train_and_val_values(reference: Path) -> None:
    rows = read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in rows] == LOGGED
    for r in rows:
        assert {
            "step",
            "epoch",
            "train/loss",
            "train/recon",
            "train/kl",
            "train/beta",
            "lr",
            "images_per_s",
        } <= set(r)
        assert r["epoch"] == r["step"] / 8  # 64 images in batches of 8
        assert r["lr"] == 2e-3
        # Linear KL warm-up over 200 steps; the row's beta is that of its last step (0-based step - 1).
        assert r["train/beta"] == pytest.approx((r["step"] - 1) / 200)
        assert r["images_per_s"] > 0 and math.isfinite(r["train/loss"])
        assert r["train/recon"] > 0 and r["train/kl"] >= 0
    assert [r["step"] for r in rows if "val/loss" in r] == VALIDATED
    for r in rows:
        if "val/loss" in r:
            assert r["val/loss"] == pytest.approx(r["val/recon"] + 1.0 * r["val/kl"])
            assert r["val/bpd_elbo"] == pytest.approx(
                (r["val/recon"] + r["val/kl"]) / (3 * 16 * 16 * math.log(2))
            )


def test_summary_and_checkpoints_hold_the_last_and_the_best_step(reference: Path) -> None:
    rows = read_metrics(reference / "metrics.jsonl")
    val = {r["step"]: r["val/loss"] for r in rows if "val/loss" in r}
    best_step = min(val, key=val.__getitem__)
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["step"] == TOTAL
    assert summary["best_step"] == best_step
    assert summary["best/val_loss"] == val[best_step]
    assert summary["val/bpd_elbo"] == rows[-1]["val/bpd_elbo"]
    assert summary["train/loss"] == rows[-1]["train/loss"]
    assert last(reference)["loop"]["step"] == TOTAL
    best = load_checkpoint(reference / "checkpoints" / "best.pt")
    assert best["loop"]["step"] == best_step
    assert best["spec"]["spec"] == yaml.safe_load((reference / "spec.yaml").read_text())["spec"]


@pytest.mark.parametrize(
    ("name", "grid"),  # grid: (columns, rows) of 16x16 tiles with 2-pixel padding
    [("reconstructions", (8, 2)), ("samples", (4, 4)), ("interpolation", (8, 4)), ("temperature", (8, 6))],
)
def test_figures_are_pngs_that_decode_and_are_not_blank(
    reference: Path, name: str, grid: tuple[int, int]
) -> None:
    with Image.open(reference / "figures" / f"{name}.png") as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    cols, rows = grid
    assert pixels.shape == (rows * 18 + 2, cols * 18 + 2, 3)
    tiles = [
        pixels[2 + 18 * r : 18 * (r + 1), 2 + 18 * c : 18 * (c + 1)] for r in range(rows) for c in range(cols)
    ]
    # Not blank: the tiles hold images with structure, not one flat colour (padding excluded).
    assert max(t.std() for t in tiles) > 2.0
    assert np.mean([t.mean() for t in tiles]) < 250  # not all white either


def test_a_finished_run_records_how_much_its_temperature_grid_varies_beside_it(reference: Path) -> None:
    """figures/temperature.json: the spread of 64 prior samples at each of the grid's temperatures,
    measured on the model the figures show (last.pt), and spread(0.5) / spread(1)."""
    record = json.loads((reference / "figures" / "temperature.json").read_text())
    assert record["temperatures"] == list(TEMPERATURES) and record["samples"] == 64
    assert record["step"] == last(reference)["loop"]["step"]
    spread = dict(zip(record["temperatures"], record["spread"], strict=True))
    assert spread[0.0] == pytest.approx(0, abs=1e-7)  # z = 0 in every column: one image
    assert spread[1.0] > 0
    assert record["spread_ratio_0.5_1"] == pytest.approx(spread[0.5] / spread[1.0])
    assert record["change"][0] is None and all(c >= 0 for c in record["change"][1:])


def test_env_json_records_code_packages_device_and_command_line(reference: Path) -> None:
    env = json.loads((reference / "env.json").read_text())
    source = Path(train_module.__file__).parent
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True)
    assert env["git_commit"] == (git.stdout.strip() if git.returncode == 0 else None)  # None: not a checkout
    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["vaebench"] == "0.1.0"
    assert env["device"] == "cpu"
    assert env["argv"] == sys.argv  # in-process here; the kill -9 test checks a real command line


def test_short_cpu_training_lowers_the_loss(queue: tuple[Any, Path]) -> None:
    _, runs = queue
    for seed in (0, 1):
        rows = read_metrics(runs / "quickstart" / "isotropic" / f"seed{seed}" / "metrics.jsonl")
        train_loss = [r["train/loss"] for r in rows]  # nats per image, each row the mean of 2 steps
        assert np.mean(train_loss[-2:]) < 0.97 * np.mean(train_loss[:2])
        val = [r["val/bpd_elbo"] for r in rows if "val/bpd_elbo" in r]  # after steps 4, 8 and 12
        assert val[-1] < val[0] - 0.1  # bits/dim (about 8.5 -> 8.3 in 8 steps)


def test_seeds_give_different_runs(queue: tuple[Any, Path]) -> None:
    _, runs = queue
    a, b = (last(runs / "quickstart" / "isotropic" / f"seed{s}")["model"] for s in (0, 1))
    assert not torch.equal(a["encoder.fc_mu.weight"], b["encoder.fc_mu.weight"])


# ----------------------------------------------------------------------------- CLI options


def test_set_and_wandb_agent_overrides_reach_the_model(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = run_cli(
        QUICKSTART, *set_args(TINY), "--set", "model.latent_dim=5", "--set", "train.steps=2",
        "--variant", "variance", "--runs-dir", runs, "--device", "cpu", "--quiet",
        "--loss.beta=2.0",  # what `wandb agent` appends
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = runs / "quickstart" / "variance" / "seed0"
    assert last(run)["model"]["encoder.fc_mu.weight"].shape == (5, 8 * 8 * 8)  # 5 latents from 8ch x 8x8
    spec = RunSpec.model_validate(yaml.safe_load((run / "spec.yaml").read_text())["spec"])
    assert (spec.loss.beta, spec.model.latent_dim, spec.model.decoder.kind) == (2.0, 5, "variance")
    assert steps(run) == [2]


def test_rerun_skips_a_finished_run_and_force_keeps_the_old_folder(reference: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = runs / "quickstart" / "isotropic" / "seed0"
    shutil.copytree(reference, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    args = [
        QUICKSTART,
        *set_args(TINY),
        "--variant",
        "isotropic",
        "--runs-dir",
        runs,
        "--device",
        "cpu",
        "--quiet",
    ]

    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "steps 0..12" not in result.output  # nothing was trained
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    result = run_cli(*args, "--force")
    assert result.exit_code == 0, result.output
    (old,) = runs.glob("quickstart/isotropic/seed0.replaced-*")
    assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before
    assert (run / "DONE").read_text() != before[Path("DONE")].decode()  # a new run, finished later
    assert_same_final_state(run, old)  # same seed, same spec: the same parameters again


def test_rerun_with_a_different_spec_refuses_to_mix_it_into_the_existing_run(
    reference: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    run = runs / "quickstart" / "isotropic" / "seed0"
    shutil.copytree(reference, run)
    args = [QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--runs-dir", runs, "--device", "cpu"]
    result = run_cli(*args, "--set", "optim.lr=0.01")
    assert result.exit_code == 1
    assert str(run) in result.output and "optim.lr" in result.output and "--force" in result.output
    assert last(run)["loop"]["step"] == TOTAL and (run / "DONE").exists()  # untouched


def test_queue_goes_on_after_a_failed_run_and_the_command_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_training_calls(monkeypatch, {3}, nan_loss)  # the third step of the first run
    runs = tmp_path / "runs"
    result = run_cli(
        QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--seed", "0", "--seed", "1",
        "--runs-dir", runs, "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 1
    failed, finished = (
        runs / "quickstart" / "isotropic" / "seed0",
        runs / "quickstart" / "isotropic" / "seed1",
    )
    assert not (failed / "DONE").exists() and (finished / "DONE").exists()
    assert steps(finished) == LOGGED
    rows = {s: next(x for x in result.output.splitlines() if str(s) + " " in x) for s in (failed, finished)}
    assert "failed" in rows[failed] and "finished" in rows[finished]
    assert "Non-finite training at step 2" in result.output


# ----------------------------------------------------------------------------- resumption


def test_stopped_and_crashed_runs_resume_bit_identical_without_duplicate_rows(
    reference: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    variant = tiny_variant()
    first = run_one(variant, 0, run, device="cpu", stop_after=4)
    assert first.status == "stopped" and steps(run) == [2, 4] and not (run / "DONE").exists()
    at_step_4 = (run / "checkpoints" / "last.pt").read_bytes()

    second = run_one(variant, 0, run, device="cpu", stop_after=9)  # resumes at 4, stops between checkpoints
    assert second.status == "stopped" and last(run)["loop"]["step"] == 9 and steps(run) == [2, 4, 6, 8]

    # A crash after metrics rows 6 and 8 were written but before any later checkpoint survived:
    (run / "checkpoints" / "last.pt").write_bytes(at_step_4)
    recorder = Recorder()
    third = run_one(variant, 0, run, device="cpu", reporter=recorder)
    assert third.status == "finished"
    assert f"resuming {run} from step 4" in recorder.messages
    assert steps(run) == LOGGED  # rows 6 and 8 were dropped and written again, once
    assert_same_final_state(run, reference)
    assert_same_metrics(run, reference)
    best, best_ref = (load_checkpoint(r / "checkpoints" / "best.pt") for r in (run, reference))
    assert_identical(best["model"], best_ref["model"], "best.model")


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_mid_step_resumes_bit_identical(
    presses: int, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands inside a step (where nearly all the time goes): once, the step finishes and is
    checkpointed; twice, training stops at once and resumes from the last periodic checkpoint."""

    def ctrl_c(terms: Any, out: Any) -> Any:  # after the forward pass has drawn its random numbers
        for _ in range(presses):
            signal.raise_signal(signal.SIGINT)
        return terms

    on_training_calls(monkeypatch, {7}, ctrl_c)
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run_one(tiny_variant(), 0, run, device="cpu")
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer put it back
    assert last(run)["loop"]["step"] == (7 if presses == 1 else 4)
    monkeypatch.undo()
    assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    assert_same_final_state(run, reference)
    assert_same_metrics(run, reference)


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if path.exists():
            try:
                step = load_checkpoint(path)["loop"]["step"]
            except UserError:  # only the atomic rename makes it appear, but be safe
                step = 0
            if step > 0:
                return step
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint at {path} after {timeout} s")


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_ends_bit_identical(tmp_path: Path) -> None:
    longer = {**TINY, "train.steps": 200, "train.val_every": 50, "train.checkpoint_every": 3}
    runs = tmp_path / "runs"
    args = ["run", str(QUICKSTART), *set_args(longer), "--variant", "isotropic", "--runs-dir", str(runs),
            "--device", "cpu", "--quiet"]  # fmt: skip
    run = runs / "quickstart" / "isotropic" / "seed0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaebench", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait_for_checkpoint(run / "checkpoints" / "last.pt", proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, output
    killed_at = last(run)["loop"]["step"]
    assert 0 < killed_at < 200 and not (run / "DONE").exists()
    assert json.loads((run / "env.json").read_text())["argv"][1:] == args  # the real command line

    result = runner.invoke(app, args)  # the same command again
    assert result.exit_code == 0, result.output
    assert f"from step {killed_at}" in result.output
    assert steps(run) == list(range(2, 201, 2))

    reference = tmp_path / "reference"
    run_one(select(load_experiment(QUICKSTART, longer), ["isotropic"])[0], 0, reference, device="cpu")
    got, want = last(run), last(reference)
    assert_identical(got["model"], want["model"], "model")
    assert_identical(got["optimizer"], want["optimizer"], "optimizer")
    assert_same_metrics(run, reference)


# ----------------------------------------------------------------------------- numerical faults


@pytest.mark.parametrize("fault", [nan_loss, inf_gradient], ids=["nan-loss", "inf-gradient"])
def test_a_non_finite_step_stops_the_run_naming_the_step_and_the_last_good_checkpoint(
    fault: Callable[[Any, Any], Any], reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_training_calls(monkeypatch, {7}, fault)  # the update from step 6 to 7
    run = tmp_path / "run"
    with pytest.raises(NumericalFault) as err:
        run_one(tiny_variant(), 0, run, device="cpu")
    message = str(err.value)
    assert "at step 6" in message
    assert f"{run / 'checkpoints' / 'last.pt'} (step 4)" in message
    assert not (run / "DONE").exists()
    assert steps(run) == [2, 4, 6]  # intact: every row up to the fault, nothing after it
    for name in ("last", "best"):
        ckpt = load_checkpoint(run / "checkpoints" / f"{name}.pt")
        assert ckpt["loop"]["step"] == 4
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    # The fault was transient: rerunning resumes from step 4 and ends exactly as a run without it.
    monkeypatch.undo()
    assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    assert_same_final_state(run, reference)


def test_skip_bad_batches_skips_up_to_n_and_keeps_logging_checkpointing_and_validating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_training_calls(monkeypatch, {4, 12}, nan_loss)  # a logged+validated step and the very last one
    run = tmp_path / "run"
    recorder = Recorder()
    result = run_one(tiny_variant(train__skip_bad_batches=2), 0, run, device="cpu", reporter=recorder)
    assert result.status == "finished"
    skipped = [m for m in recorder.messages if "batch skipped" in m]
    assert skipped == [
        "step 3: non-finite loss or gradient, batch skipped (1/2)",
        "step 11: non-finite loss or gradient, batch skipped (2/2)",
    ]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == LOGGED
    assert [r["step"] for r in rows if "val/loss" in r] == VALIDATED
    final = last(run)
    assert final["loop"]["step"] == TOTAL and final["loop"]["skipped_batches"] == 2
    assert all(torch.isfinite(t).all() for t in final["model"].values())
    assert json.loads((run / "summary.json").read_text())["step"] == TOTAL


def test_one_bad_batch_more_than_allowed_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_training_calls(monkeypatch, {2, 3}, nan_loss)
    with pytest.raises(NumericalFault, match="at step 2"):
        run_one(tiny_variant(train__skip_bad_batches=1), 0, tmp_path / "run", device="cpu")


# ----------------------------------------------------------------------------- W&B


@pytest.fixture
def fresh_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HOME and W&B folders of this test's own, and a W&B service started under them."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_env" / var.lower()))
    wandb = pytest.importorskip("wandb")
    wandb.teardown()
    yield home
    wandb.teardown()


@pytest.mark.slow
def test_wandb_offline_run_lives_inside_the_run_folder(fresh_wandb: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # W&B must work here, not fall back
        result = run_one(tiny_variant(tracking__mode="offline"), 0, run, device="cpu")
    assert result.status == "finished"
    run_id = (run / "wandb_id").read_text().strip()
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run_id}")
    assert (offline / f"run-{run_id}.wandb").stat().st_size > 0
    logged = sorted(p.name.split("_")[0] for p in (offline / "files" / "media" / "images").glob("*.png"))
    assert logged == ["interpolation", "reconstructions", "samples", "temperature"]
    assert list(fresh_wandb.rglob("*")) == []  # nothing in ~/.config, ~/.cache, ~/.netrc


def test_a_wandb_failure_does_not_stop_training(
    fresh_wandb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken_init(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated W&B outage")

    monkeypatch.setattr(wandb, "init", broken_init)
    run = tmp_path / "run"
    with pytest.warns(TrackingWarning, match="simulated W&B outage"):
        result = run_one(tiny_variant(tracking__mode="offline"), 0, run, device="cpu")
    assert result.status == "finished"
    assert steps(run) == LOGGED
    for name in (
        "DONE",
        "summary.json",
        "env.json",
        "spec.yaml",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "figures").glob("*.png")) == [
        "interpolation.png", "reconstructions.png", "samples.png", "temperature.png",
    ]  # fmt: skip
    assert not list(run.glob("wandb/offline-run-*"))


def test_run_queue_plans_every_variant_and_seed(tmp_path: Path) -> None:
    variants = load_experiment(QUICKSTART, {**TINY, "train.steps": 2, "seeds": [3, 4]})
    plan = plan_runs(variants, tmp_path)
    assert [p.run_dir.relative_to(tmp_path).as_posix() for p in plan] == [
        "quickstart/isotropic/seed3", "quickstart/isotropic/seed4",
        "quickstart/variance/seed3", "quickstart/variance/seed4",
    ]  # fmt: skip
    results = run_queue(plan[:1], device="cpu", force=False, reporter=Recorder())
    assert [r.status for r in results] == ["finished"] and steps(plan[0].run_dir) == [2]


@pytest.mark.parametrize("free_bits", [2.0, 0.0])
def test_a_checkpoint_from_before_objectives_with_free_bits_restarts_the_best_checkpoint_comparison(
    free_bits: float, tmp_path: Path
) -> None:
    """Its best_val left free bits out, today's val/loss has them: without the restart best.pt would
    never follow val/loss again after the resume. Without free bits the two agree: nothing restarts."""
    from vaebench.runs.checkpoint import RunCheckpoints
    from vaebench.runs.paths import RunPaths

    variant = tiny_variant(anneal__free_bits=free_bits)
    run = tmp_path / "run"
    assert run_one(variant, 0, run, device="cpu", stop_after=4).status == "stopped"
    paths = RunPaths(run)
    old = last(run)
    del old["loop"]["val_loss"]
    old["loop"]["best_val"] = -1e9  # lower than any val/loss: an old best that nothing would replace
    RunCheckpoints(paths, 2).save(paths.last, old)
    recorder = Recorder()
    assert run_one(variant, 0, run, device="cpu", reporter=recorder).status == "finished"
    restarted = any("val/loss now includes free bits" in m for m in recorder.messages)
    final = last(run)
    assert final["loop"]["val_loss"] == "objective"
    if free_bits > 0:
        assert restarted and final["loop"]["best_step"] > 4
    else:  # the old best (-1e9, lower than any val/loss) stands
        assert not restarted and final["loop"]["best_val"] == -1e9
