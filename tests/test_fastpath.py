"""The fast path (vaebench.train.fastpath) run on CPU: the plain path's data and numbers, faults found late
but
never checkpointed, compile failures that cost only speed, and evaluation in large forward passes.

On CUDA the same code adds bf16 autocast, inductor with CUDA graphs and a split resident in GPU memory;
those parts need a GPU and are measured by benchmarks/gpu_check.sh, not here.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tiny
from vaebench.config.experiments import Variant
from vaebench.config.spec import RunSpec
from vaebench.data import CachedImages, build_dataset
from vaebench.data.batches import flip_batch, train_batches
from vaebench.evaluation.evaluate import evaluate_model
from vaebench.launch.runner import run_one
from vaebench.model.vae import build_model
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.metrics_log import read_metrics
from vaebench.train.fastpath import (
    CompileWarning,
    DeviceBatches,
    FastTrainStep,
    compile_enabled,
    is_compiler_error,
)
from vaebench.train.loop import NumericalFault, build_optimizer

CPU = torch.device("cpu")


def tiny_variant(**overrides: Any) -> Variant:
    """The shared tiny run (12 steps of 8 images, 8 steps per epoch) with random flips on."""
    return tiny.tiny_variant(data__flip=True, **overrides)


def last(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def fault_on_calls(monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> list[int]:
    """Make the loss of the given training calls (1-based) NaN; returns the running call count."""
    return tiny.on_training_calls(monkeypatch, calls, tiny.nan_loss)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny spec trained on the plain path and on the fast path (eager, on CPU)."""
    root = tmp_path_factory.mktemp("fastpath")
    for name, fast in (("plain", False), ("fast", True)):
        assert run_one(tiny_variant(), 0, root / name, device="cpu", fast_path=fast).status == "finished"
    return {"plain": root / "plain", "fast": root / "fast"}


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize("source", ["in-memory", "memory-mapped cache"])
def test_device_batches_give_the_plain_order_and_flips_across_an_epoch_boundary(
    source: str, tmp_path: Path
) -> None:
    dataset = build_dataset(tiny_variant().spec.data, "train")  # 64 images: 8 steps per epoch of 8
    if source == "memory-mapped cache":
        np.save(tmp_path / "train.npy", dataset.images.numpy())
        dataset = CachedImages(tmp_path / "train.npy")
    batches = DeviceBatches(dataset, 8, seed=3, flip=True, device=CPU, start_step=5)
    assert batches.where == ("device" if source == "in-memory" else "host")
    plain = train_batches(dataset, 8, 3, 5, 0)
    for step in range(5, 5 + 12):  # steps 5-7 of epoch 0, all of epoch 1, step 16 of epoch 2
        x, flip = batches.next()
        assert flip is not None and flip.shape == (8,) and flip.dtype == torch.bool
        got = torch.where(flip[:, None, None, None], x.flip(-1), x)
        assert torch.equal(got, flip_batch(next(plain), 3, step)), f"step {step}"


def test_without_flips_the_batches_come_with_no_mask() -> None:
    dataset = build_dataset(tiny_variant().spec.data, "train")
    x, flip = DeviceBatches(dataset, 8, seed=0, flip=False, device=CPU).next()
    assert flip is None and torch.equal(x, next(train_batches(dataset, 8, 0, 0, 0)))


# ----------------------------------------------------------------------------- the step


def test_the_fast_path_trains_to_the_plain_paths_numbers(runs: dict[str, Path]) -> None:
    plain, fast = (read_metrics(runs[k] / "metrics.jsonl") for k in ("plain", "fast"))
    assert [r["step"] for r in fast] == [r["step"] for r in plain] == [2, 4, 6, 8, 10, 12]
    for p, f in zip(plain, fast, strict=True):  # channels_last convs and fused Adam round differently
        for key in ("train/loss", "train/recon", "train/kl", "train/grad_norm", "val/loss"):
            if key in p:
                assert f[key] == pytest.approx(p[key], rel=1e-5), (p["step"], key)
    got, want = last(runs["fast"]), last(runs["plain"])
    assert got["loop"]["skipped_batches"] == want["loop"]["skipped_batches"] == 0
    for name, value in want["model"].items():
        assert torch.allclose(got["model"][name].float(), value.float(), atol=1e-5), name
    # The fast run's checkpoint (channels_last, a tensor lr) loads into a plain model and optimizer.
    model = build_model(tiny_variant().spec.model, 16)
    model.load_state_dict(got["model"])
    build_optimizer(model, tiny_variant().spec, CPU).load_state_dict(got["optimizer"])


def test_a_compiled_step_gives_the_eager_steps_numbers() -> None:
    """torch.compile's code path with the "eager" backend (inductor on CPU compiles for ~30 s); compiled
    steps run the model in channels_last, eager ones in the default layout."""
    spec = tiny_variant().spec
    dataset = build_dataset(spec.data, "train")
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(spec.model, 16)
        optimizer = build_optimizer(model, spec, CPU, fused=True)
        step = FastTrainStep(
            model, optimizer, spec, CPU, tiny.loss_for(spec), compile=compiled, backend="eager"
        )
        batches = DeviceBatches(dataset, 8, seed=0, flip=True, device=CPU)
        for _ in range(3):
            step(*batches.next(), lr=1e-3, weight=0.5)
        assert step.compiled is step.channels_last is compiled
        assert model.encoder.stem[0].weight.is_contiguous(memory_format=torch.channels_last) is compiled
        losses[compiled] = (step.read().sums, [p.detach().clone() for p in model.parameters()])
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-6)
    for a, b in zip(losses[True][1], losses[False][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_non_finite_step_leaves_parameters_and_adam_state_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = tiny_variant().spec
    torch.manual_seed(0)
    model = build_model(spec.model, 16)
    optimizer = build_optimizer(model, spec, CPU, fused=True)
    step = FastTrainStep(model, optimizer, spec, CPU, tiny.loss_for(spec))
    batches = DeviceBatches(build_dataset(spec.data, "train"), 8, seed=0, flip=True, device=CPU)
    step(*batches.next(), lr=1e-3, weight=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    moments = [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()]
    fault_on_calls(monkeypatch, {1})
    step(*batches.next(), lr=1e-3, weight=1.0)  # step 1: NaN loss, so NaN gradients
    for p, b, m in zip(model.parameters(), before, moments, strict=True):
        assert torch.equal(p, b) and torch.equal(optimizer.state[p]["exp_avg"], m)
        assert float(optimizer.state[p]["step"]) == 1.0  # the skipped update did not count either
    counts = step.read()
    assert (counts.skipped, counts.new_skipped, counts.first_new_skipped) == (1, 1, 1)
    assert counts.fault_step == 1 and math.isnan(counts.fault_loss)  # skip_bad_batches is 0
    assert counts.sums["n"] == 1  # only step 0 is in the metric sums
    assert step.read().new_skipped == 0  # a read starts a new window


def test_a_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(fn: Any, **kwargs: Any) -> Any:
        def compiled(*args: Any) -> Any:
            raise torch._inductor.exc.InductorError(
                RuntimeError("no working C++ compiler\nmore details"), None
            )

        return compiled

    spec = tiny_variant().spec
    dataset = build_dataset(spec.data, "train")
    sums = {}
    for name in ("eager", "broken"):
        if name == "broken":
            monkeypatch.setattr(torch, "compile", broken_compile)
        torch.manual_seed(0)
        model = build_model(spec.model, 16)
        step = FastTrainStep(model, build_optimizer(model, spec, CPU, fused=True), spec, CPU,
                             tiny.loss_for(spec), compile=name == "broken")  # fmt: skip
        batches = DeviceBatches(dataset, 8, seed=0, flip=True, device=CPU)
        with pytest.warns(CompileWarning) if name == "broken" else nullcontext([]) as record:
            for _ in range(3):
                step(*batches.next(), lr=1e-3, weight=0.5)
        if name == "broken":
            assert len(record) == 1 and "no working C++ compiler" in str(record[0].message)
            assert "more details" not in str(record[0].message)
            assert not step.compiled and not step.channels_last  # eager, in the default layout again
        sums[name] = step.read().sums
    assert sums["broken"] == sums["eager"]  # the failed attempt changed nothing


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x64 and 32x4)"),
        torch._dynamo.exc.BackendCompilerFailed(
            None, torch.OutOfMemoryError("out of memory while autotuning"), None
        ),
    ],
    ids=["out-of-memory", "shape-bug", "oom-inside-the-compiler"],
)
def test_only_compiler_errors_fall_back_to_eager(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory and the program's own bugs stop with their own message, not "same numbers, slower"."""

    def failing_compile(fn: Any, **kwargs: Any) -> Any:
        def compiled(*args: Any) -> Any:
            raise error

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    spec = tiny_variant().spec
    model = build_model(spec.model, 16)
    step = FastTrainStep(model, build_optimizer(model, spec, CPU, fused=True), spec, CPU,
                         tiny.loss_for(spec), compile=True)  # fmt: skip
    batches = DeviceBatches(build_dataset(spec.data, "train"), 8, seed=0, flip=True, device=CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        with pytest.raises(type(error)) as raised:
            step(*batches.next(), lr=1e-3, weight=0.5)
    assert raised.value is error and step.compiled


def test_compiler_errors_are_told_from_the_programs_own() -> None:
    inductor = torch._inductor.exc
    assert is_compiler_error(inductor.InductorError(RuntimeError("no C++ compiler"), None))
    assert is_compiler_error(inductor.InvalidCxxCompiler())
    assert is_compiler_error(RuntimeError("operation not permitted when stream is capturing"))
    wrapped = RuntimeError("shape mismatch")
    assert not is_compiler_error(torch._dynamo.exc.TorchRuntimeError("while tracing: shape mismatch"))
    assert not is_compiler_error(wrapped)
    assert not is_compiler_error(torch.OutOfMemoryError("CUDA out of memory"))


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [("auto", "cpu", False), ("auto", "cuda", True), ("on", "cpu", True), ("off", "cuda", False)],
)
def test_train_compile_switch(setting: str, device: str, expected: bool) -> None:
    spec = RunSpec.model_validate({"train": {"steps": 1, "compile": setting}})
    assert compile_enabled(spec, torch.device(device)) is expected


# ----------------------------------------------------------------------------- faults in a run


def test_a_fault_is_found_at_the_next_read_and_no_checkpoint_comes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fault_on_calls(monkeypatch, {6})  # step 5 (0-based); the next read is after step 7
    variant = tiny_variant(train__log_every=4)
    run = tmp_path / "run"
    with pytest.raises(NumericalFault) as err:
        run_one(variant, 0, run, device="cpu", fast_path=True)
    assert calls[0] == 8  # steps 5, 6 and 7 ran before the counters were read
    assert "at step 5: loss=nan" in str(err.value)
    assert f"{run / 'checkpoints' / 'last.pt'} (step 4)" in str(err.value)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [4]  # no row for step 8
    for name in ("last", "best"):
        ckpt = load_checkpoint(run / "checkpoints" / f"{name}.pt")
        assert ckpt["loop"]["step"] == 4
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    # Rerunning resumes from step 4 and, on CPU, ends bit-identical to a fast run that never faulted.
    monkeypatch.undo()
    reference = tmp_path / "reference"
    assert run_one(variant, 0, reference, device="cpu", fast_path=True).status == "finished"
    assert run_one(variant, 0, run, device="cpu", fast_path=True).status == "finished"
    for name, value in last(reference)["model"].items():
        assert torch.equal(last(run)["model"][name], value), name


@pytest.mark.parametrize("first", ["plain", "fast"])
def test_a_run_resumes_across_paths(first: str, runs: dict[str, Path], tmp_path: Path) -> None:
    """As when a run begun on a CPU goes on on a GPU (or back): the checkpoint's optimizer groups and
    state are the other path's (unfused, step counts on the CPU; or fused with a tensor lr)."""
    run = tmp_path / "run"
    assert (
        run_one(tiny_variant(), 0, run, device="cpu", stop_after=4, fast_path=first == "fast").status
        == "stopped"
    )
    assert run_one(tiny_variant(), 0, run, device="cpu", fast_path=first == "plain").status == "finished"
    for name, value in last(runs["plain"])["model"].items():
        assert torch.allclose(last(run)["model"][name].float(), value.float(), atol=1e-5), name


def test_a_rerun_may_change_train_compile_and_still_resumes(runs: dict[str, Path], tmp_path: Path) -> None:
    """train.compile is how the step runs, not what it computes: turning it off after a compiler problem
    must not make the run folder "another spec" (as data.num_workers does not)."""
    run = tmp_path / "run"
    run_one(tiny_variant(train__compile="auto"), 0, run, device="cpu", stop_after=4)
    assert run_one(tiny_variant(train__compile="off"), 0, run, device="cpu").status == "finished"
    assert torch.equal(
        last(run)["model"]["decoder.fc.weight"], last(runs["plain"])["model"]["decoder.fc.weight"]
    )


def test_skip_bad_batches_on_the_fast_path_reports_skips_at_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault_on_calls(monkeypatch, {4, 12})  # steps 3 and 11, the last one
    messages: list[str] = []

    class Recorder:
        def start(self, *args: Any) -> None: ...
        def update(self, *args: Any) -> None: ...
        def finish(self) -> None: ...
        def message(self, text: str) -> None:
            messages.append(text)

    run = tmp_path / "run"
    variant = tiny_variant(train__skip_bad_batches=2)
    result = run_one(variant, 0, run, device="cpu", fast_path=True, reporter=Recorder())  # type: ignore[arg-type]
    assert result.status == "finished"
    assert [m for m in messages if "skipped" in m] == [
        "step 3: non-finite loss or gradient, batch skipped (1/2)",
        "step 11: non-finite loss or gradient, batch skipped (2/2)",
    ]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert last(run)["loop"]["skipped_batches"] == 2
    assert all(torch.isfinite(t).all() for t in last(run)["model"].values())


# ----------------------------------------------------------------------------- evaluation


def test_evaluation_in_large_forward_passes_equals_one_batch_at_a_time() -> None:
    spec = RunSpec.model_validate(
        {
            "data": {"kind": "synthetic", "image_size": 16, "test_size": 44},
            "model": {"stem_channels": 4, "channels": [8], "latent_dim": 4},
        }
    )
    torch.manual_seed(0)
    model = build_model(spec.model, 16)
    dataset = build_dataset(spec.data, "test")
    for k in (2, 40):
        eval_spec = spec.eval.model_copy(update={"iw_samples": k, "batch_size": 8, "mi_batch_size": 16})
        small = evaluate_model(model, dataset, eval_spec, "discretized", CPU)
        large = evaluate_model(model, dataset, eval_spec, "discretized", CPU, forward_images=64)
        # K=2: 4 batches of 8 (the last of 4 images) per forward pass; K=40: chunks of 8 samples.
        # Same noise per image: what differs is float rounding in convolutions over other batch sizes
        # (Monte Carlo differences would be ~1e-3; the MI estimate amplifies 1-ulp changes of mu to ~3e-7).
        assert (large.settings["batches_per_forward"], large.settings["iw_chunk_size"]) == (
            (4, 2) if k == 2 else (1, 8)
        )
        for key in ("bpd_elbo", "bpd_iw", "recon_bpd", "kl", "recon_mse", "mutual_info", "active_units"):
            assert large.metrics[f"test/{key}"] == pytest.approx(small.metrics[f"test/{key}"], rel=1e-6)
        assert torch.allclose(large.per_image["iw"], small.per_image["iw"], rtol=1e-6)
        assert large.metrics["test/num_images"] == 44


# ----------------------------------------------------------------------------- CUDA (skipped without a GPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_compiled_fast_path_trains_like_the_cpu_plain_path(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """train.compile auto: inductor with CUDA graphs, bf16 autocast, the split on the GPU; no fallback."""
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # a fallback to eager fails the test
        assert run_one(tiny_variant(), 0, run, device="cuda").status == "finished"
    cuda, cpu = (read_metrics(r / "metrics.jsonl") for r in (run, runs["plain"]))
    assert [r["step"] for r in cuda] == [r["step"] for r in cpu]
    # Other noise (inductor's generator) and bf16: close, not equal.
    assert cuda[-1]["train/loss"] == pytest.approx(cpu[-1]["train/loss"], rel=0.1)
    assert cuda[-1]["val/loss"] == pytest.approx(cpu[-1]["val/loss"], rel=0.1)
    assert all(torch.isfinite(t).all() for t in last(run)["model"].values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_fault_is_skipped_by_the_fused_optimizer_and_found_at_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eager (compile off), so that the injected fault reaches the step: fused CUDA Adam's found_inf."""
    fault_on_calls(monkeypatch, {6})
    run = tmp_path / "run"
    with pytest.raises(NumericalFault, match="at step 5: loss=nan"):
        run_one(tiny_variant(train__log_every=4, train__compile="off"), 0, run, device="cuda")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in last(run)["model"].values())
