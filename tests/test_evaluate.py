"""Evaluation through the real model: what a run folder records, and identities its numbers must obey.

One tiny run (16x16 synthetic images, a 4-dim latent, 10 training steps, eval.at_end on) is trained
once per module; tests that evaluate again work on copies of its folder.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import vaebench.evaluation.evaluate as evaluate_module
from vaebench.cli import app
from vaebench.config.experiments import Variant
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.data import build_dataset
from vaebench.evaluation.evaluate import EvalResult, evaluate_model, evaluate_run
from vaebench.launch.runner import run_one
from vaebench.model.vae import VAE, build_model
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.io import read_json
from vaebench.runs.trained import load_run_spec

LATENT = 4
D = 3 * 16 * 16
NATS_TO_BPD = 1 / (D * math.log(2))
METRICS = [
    "bpd_elbo",
    "bpd_iw",
    "iw_samples",
    "recon_bpd",
    "recon_mse",
    "psnr",
    "kl",
    "kl_per_dim",
    "active_units",
    "active_units_frac",
    "mutual_info",
    "mutual_info_batch",
    "collapsed_dims",
    "kl_top5_frac",
    "num_images",
    "checkpoint_step",
]
TEST_KEYS = [f"test/{m}" for m in METRICS]
runner = CliRunner()


def tiny_spec() -> RunSpec:
    return RunSpec.model_validate(
        {
            "data": {
                "kind": "synthetic",
                "image_size": 16,
                "train_size": 64,
                "val_size": 16,
                "test_size": 32,
            },
            "model": {"stem_channels": 4, "channels": [8], "latent_dim": LATENT},
            "optim": {"lr": 1e-3},
            "anneal": {"warmup_steps": 0},
            "train": {"steps": 10, "batch_size": 16, "val_every": 5, "log_every": 5, "checkpoint_every": 10},
            # K=20 for speed; defaults otherwise: batch 64, MI batch 256 (more than the 32 test images)
            "eval": {"at_end": True, "iw_samples": 20},
            "tracking": {"mode": "disabled"},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("evaluate") / "tiny" / "seed0"
    result = run_one(Variant("evaluate", "tiny", tiny_spec()), 0, run_dir, device="cpu")
    assert result.status == "finished"
    return run_dir


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run folder that a test may evaluate again."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def load_model(run_dir: Path) -> VAE:
    spec = load_run_spec(run_dir)
    model = build_model(spec.model, spec.data.image_size)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
    return model


def evaluate_in_memory(run_dir: Path, **eval_settings: object) -> EvalResult:
    spec = load_run_spec(run_dir)
    eval_spec = spec.eval.model_copy(update=eval_settings)
    dataset = build_dataset(spec.data, eval_spec.split)
    return evaluate_model(load_model(run_dir), dataset, eval_spec, "discretized", torch.device("cpu"))


# ----------------------------------------------------------------------------- what gets recorded


def test_training_with_eval_at_end_puts_every_test_key_in_the_summary(trained: Path) -> None:
    summary = read_json(trained / "summary.json")
    assert (trained / "DONE").exists()
    assert set(TEST_KEYS) <= summary.keys()
    assert summary["test/iw_samples"] == 20 and summary["test/num_images"] == 32
    # the best checkpoint is what is evaluated, and the summary says which step it is
    assert summary["test/checkpoint_step"] == summary["best_step"]
    assert summary["val/bpd_elbo"] > 0 and summary["train/loss"] > 0  # the trainer's keys survive
    (key,) = read_json(trained / "eval" / "test.json")["results"]
    assert key.startswith("checkpoint=best,K=20,images=32,")


def test_evaluate_run_writes_all_keys_to_summary_and_eval_json(run: Path) -> None:
    shutil.rmtree(run / "eval")
    (run / "summary.json").write_text("{}")
    flat = evaluate_run(run, iw_samples=7, device="cpu")

    summary = read_json(run / "summary.json")
    assert set(TEST_KEYS) == set(flat) and set(TEST_KEYS) <= set(summary)
    assert all(summary[k] == pytest.approx(flat[k]) for k in TEST_KEYS)
    document = read_json(run / "eval" / "test.json")
    record = document["results"][document["latest"]]
    assert record["metrics"] == summary  # the summary was emptied before
    settings = record["settings"]
    assert settings["checkpoint"] == "best" and settings["checkpoint_step"] == flat["test/checkpoint_step"]
    assert (settings["iw_samples"], settings["batch_size"], settings["seed"]) == (7, 64, 0)
    assert (settings["num_images"], settings["mi_batch_size"], settings["mi_batch_size_requested"]) == (
        32,
        32,
        256,
    )
    assert settings["likelihood"] == "discretized" and settings["time_utc"] and settings["wall_s"] > 0
    per_dim = record["per_dim"]
    assert {len(v) for v in per_dim.values()} == {LATENT}
    assert per_dim["kl_per_dim"] == pytest.approx(flat["test/kl_per_dim"])
    assert sum(per_dim["active"]) == flat["test/active_units"]
    assert per_dim["active"] == [v > 0.01 for v in per_dim["posterior_mean_var"]]
    assert record["standard_errors"]["bpd_iw"] > 0


def test_reevaluating_with_other_settings_keeps_the_earlier_results(run: Path) -> None:
    path = run / "eval" / "test.json"
    first = read_json(path)
    (k20,) = first["results"]
    flat = evaluate_run(run, iw_samples=5, device="cpu")

    document = read_json(path)
    assert set(document["results"]) == {k20, document["latest"]} and document["latest"] != k20
    assert document["results"][k20] == first["results"][k20]  # untouched
    summary = read_json(run / "summary.json")
    assert summary["test/iw_samples"] == 5 and summary["test/bpd_iw"] == flat["test/bpd_iw"]  # latest wins
    # the ELBO's sample does not depend on K; the IW bound does (more samples, tighter)
    assert flat["test/bpd_elbo"] == first["results"][k20]["metrics"]["test/bpd_elbo"]
    assert flat["test/bpd_iw"] > first["results"][k20]["metrics"]["test/bpd_iw"]

    evaluate_run(run, iw_samples=5, device="cpu")  # same settings again: replaces, adds nothing
    assert len(read_json(path)["results"]) == 2


# ----------------------------------------------------------------------------- identities of the numbers


def test_metrics_obey_their_defining_identities(trained: Path) -> None:
    m = read_json(trained / "summary.json")
    # same sample for both terms, KL in closed form: the ELBO splits exactly
    assert m["test/recon_bpd"] + m["test/kl"] * NATS_TO_BPD == pytest.approx(m["test/bpd_elbo"], rel=1e-12)
    assert sum(m["test/kl_per_dim"]) == pytest.approx(m["test/kl"], rel=1e-12)
    assert m["test/active_units_frac"] == m["test/active_units"] / LATENT
    assert m["test/psnr"] == pytest.approx(10 * math.log10(1 / m["test/recon_mse"]), rel=1e-12)
    assert m["test/collapsed_dims"] == sum(k < 0.01 for k in m["test/kl_per_dim"])
    assert m["test/kl_top5_frac"] == 1.0  # 4 dims < 5: the top 5 hold everything
    # 32 images < eval.mi_batch_size = 256: one minibatch of the whole split, and MI <= log 32
    assert m["test/mutual_info_batch"] == 32
    assert 0 < m["test/mutual_info"] <= math.log(32)
    assert m["test/bpd_iw"] <= m["test/bpd_elbo"]
    # Floor of any sigma = 0.1 decoder (the spec's default): no bin can get more mass than the one
    # centred on the mean, 2 Phi(h) - 1 with h = (0.5/255) / 0.1, or Phi(h) for the open edge bins
    # of 0 and 255; -log p(x) and so both bounds are at least the sum of those -log2's.
    spec = load_run_spec(trained)
    assert spec.model.decoder.kind == "isotropic" and spec.model.decoder.sigma == 0.1
    images = torch.stack([x for x in build_dataset(spec.data, "test")])  # (32, 3, 16, 16) uint8
    edge = ((images == 0) | (images == 255)).sum().item()
    phi = torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(0.5 / 255 / 0.1, dtype=torch.float64))
    floor = -(edge * math.log2(phi) + (images.numel() - edge) * math.log2(2 * phi - 1)) / images.numel()
    assert 1.0 < floor < m["test/bpd_iw"]


def test_iw_bound_tightens_with_k_and_with_one_sample_is_the_elbo_in_expectation(trained: Path) -> None:
    results = {k: evaluate_in_memory(trained, iw_samples=k) for k in (1, 4, 16)}
    bpd = {k: r.metrics["test/bpd_iw"] for k, r in results.items()}
    elbo = results[1].metrics["test/bpd_elbo"]
    assert bpd[16] < bpd[4] < bpd[1]
    # L_1 = log p(x|z) + log p(z) - log q(z|x) at the ELBO's own sample, so per image
    # L_1 - ELBO = KL - (log q - log p)(z), which has mean 0. A wrong KL (beta != 1, a factor 2,
    # nats vs bits) would move the mean by ~KL / (D ln 2), more than 5 standard errors.
    paired_se = results[1].standard_errors["bpd_elbo_minus_bpd_iw"]
    assert 0 < paired_se < results[1].metrics["test/kl"] * NATS_TO_BPD / 5
    assert abs(bpd[1] - elbo) < 4 * paired_se
    per_image = results[1].per_image
    assert float(-per_image["iw"].mean()) * NATS_TO_BPD == pytest.approx(bpd[1], rel=1e-12)


def test_evaluation_is_deterministic_and_independent_of_the_iw_chunk_size(trained: Path) -> None:
    spec = load_run_spec(trained)
    eval_spec = spec.eval.model_copy(update={"iw_samples": 8})
    dataset = build_dataset(spec.data, "test")
    model = load_model(trained).train()
    cpu = torch.device("cpu")
    a = evaluate_model(model, dataset, eval_spec, "discretized", cpu, iw_chunk_size=8)
    b = evaluate_model(model, dataset, eval_spec, "discretized", cpu, iw_chunk_size=8)
    c = evaluate_model(model, dataset, eval_spec, "discretized", cpu, iw_chunk_size=3)
    assert a.metrics == b.metrics
    assert c.metrics["test/bpd_iw"] == pytest.approx(a.metrics["test/bpd_iw"], abs=1e-6)
    assert model.training  # evaluated in eval mode, then given back in the mode it came in
    other_seed = evaluate_model(model, dataset, eval_spec.model_copy(update={"seed": 1}), "discretized", cpu)
    assert other_seed.metrics["test/bpd_iw"] != a.metrics["test/bpd_iw"]


# ----------------------------------------------------------------------------- the command line


def test_cli_evaluate_prints_a_table_of_the_metrics(run: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(run), "--iw-samples", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = read_json(run / "summary.json")
    assert summary["test/iw_samples"] == 5
    line = next(ln for ln in result.output.splitlines() if "bits/dim, IW bound" in ln)
    assert f"{summary['test/bpd_iw']:.4f}" in line
    assert "active units" in result.output and "mutual information" in result.output


def test_cli_evaluate_rejects_what_is_not_a_run_folder(run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    result = runner.invoke(app, ["evaluate", str(run), str(empty)])
    assert result.exit_code == 1
    assert "not a run folder" in result.output and "spec.yaml" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert read_json(run / "summary.json")["test/iw_samples"] == 20  # checked before evaluating any

    (run / "checkpoints" / "best.pt").unlink()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 1 and "--checkpoint last" in result.output


def test_evaluating_a_run_that_asks_for_fid_without_its_weights_stops_before_loading_any_model(
    trained: Path, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vaebench evaluate PLAIN RUN`, where RUN's eval.metrics asks for FID and the torch hub cache is
    empty: an error naming the file and the fetch command, before even PLAIN is evaluated."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    plain = Path(shutil.copytree(trained, tmp_path / "plain"))
    document = yaml.safe_load((run / "spec.yaml").read_text())
    document["spec"]["eval"]["metrics"] = ["fid"]
    (run / "spec.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    summary = (run / "summary.json").read_text()

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(evaluate_module, "load_trained_model", no_model)
    result = runner.invoke(app, ["evaluate", str(plain), str(run), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    error = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert error.startswith("error: eval.metrics = [fid] needs the inception weights")
    assert "weights-inception-2015-12-05-6726825d.pth" in error
    assert "`vaebench weights fetch inception`" in error
    with pytest.raises(UserError, match="vaebench weights fetch inception"):  # the function checks too
        evaluate_run(run, device="cpu")
    assert (run / "summary.json").read_text() == summary


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_under_bf16_autocast_agrees_with_cpu_fp32(run: Path) -> None:
    cpu = read_json(run / "summary.json")
    flat = evaluate_run(run, device="cuda")  # train.precision "auto": bf16 autocast on CUDA
    document = read_json(run / "eval" / "test.json")
    assert document["results"][document["latest"]]["settings"]["autocast"] == "bfloat16"
    assert len(document["results"]) == 2  # the fp32 CPU result is kept under its own key
    # same noise (CPU generators); only the bf16 encoder/decoder bodies differ
    for key in ("test/bpd_elbo", "test/bpd_iw", "test/recon_bpd", "test/recon_mse", "test/kl"):
        assert flat[key] == pytest.approx(cpu[key], rel=0.02), key
