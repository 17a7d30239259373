"""The objective registry and the ELBO: terms add up in nats per image, every decoder trains, and a
new objective is picked up from its own file."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest
import torch
from torch import Tensor

from vaebench.config.spec import RunSpec
from vaebench.model.decoders.sigma_vae import SigmaVAEDecoderSpec
from vaebench.model.decoders.variance import VarianceDecoderSpec
from vaebench.model.likelihoods import discretized_gaussian_log_prob, gaussian_kl
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import VAEOutput, build_model
from vaebench.objectives import OBJECTIVES, REQUIRED_TERMS, Batch, Objective, ObjectiveSpec, TrainingLoss
from vaebench.objectives.elbo import ElboSpec
from vaebench.objectives.perceptual import VGGPerceptual


class FixedOutput(torch.nn.Module):
    """A stand-in model whose forward returns a given VAEOutput, and whose likelihood is the Gaussian's."""

    def __init__(self, out: VAEOutput) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: Tensor) -> VAEOutput:
        return self.out

    def log_prob(self, x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str) -> Tensor:
        return discretized_gaussian_log_prob(x, mean, log_scale)


def fake(seed: int = 0) -> tuple[FixedOutput, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (4, 3, 16, 16), generator=g).float() / 255
    mean = torch.rand(4, 3, 16, 16, generator=g)
    mu, logvar = torch.randn(4, 6, generator=g), 0.5 * torch.randn(4, 6, generator=g)
    log_scale = torch.full((1, 1, 1, 1), math.log(0.1))
    return FixedOutput(VAEOutput(mean, log_scale, mu, logvar, mu)), x


def elbo(spec: ElboSpec | None = None, free_bits: float = 0.0, perceptual: Any = None) -> TrainingLoss:
    return TrainingLoss(spec or ElboSpec(), dataset_size=64, free_bits=free_bits, perceptual=perceptual)


def test_a_loss_section_without_kind_is_the_elbo_as_before_objectives_existed() -> None:
    spec = RunSpec.model_validate({"loss": {"beta": 0.5, "likelihood": "continuous"}})
    assert isinstance(spec.loss, ElboSpec) and spec.loss.kind == "elbo" and spec.loss.beta == 0.5
    assert RunSpec().loss == ElboSpec()


def test_every_registered_objective_is_a_loss_kind_with_the_shared_fields() -> None:
    assert "elbo" in OBJECTIVES
    for kind, objective in OBJECTIVES.items():
        spec = RunSpec.model_validate({"loss": {"kind": kind, "perceptual_weight": 0.1}}).loss
        assert isinstance(spec, objective.spec) and isinstance(spec, ObjectiveSpec)
        assert spec.perceptual_weight == 0.1 and spec.likelihood == "discretized"
        assert not set(objective.terms) & set(REQUIRED_TERMS)


def test_elbo_is_recon_plus_annealed_beta_kl() -> None:
    model, x = fake()
    terms = elbo(ElboSpec(beta=0.6))(model, x, 0.5)  # beta_t = 0.6 * 0.5
    out = model.out
    recon = -discretized_gaussian_log_prob(x, out.mean, out.log_scale).mean()
    kl = gaussian_kl(out.mu, out.logvar).mean()
    assert set(terms) == {"loss", "recon", "kl"}
    assert torch.allclose(terms["recon"], recon) and torch.allclose(terms["kl"], kl)
    assert torch.allclose(terms["loss"], recon + 0.3 * kl)
    assert all(t.shape == () for t in terms.values())


def test_recon_is_in_nats_per_image() -> None:
    # Every pixel exactly at the mean with sigma = 1/255: each bin holds Phi(0.5) - Phi(-0.5) = 0.3829.
    x = torch.randint(1, 255, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 255
    out = VAEOutput(x, torch.full((1, 1, 1, 1), math.log(1 / 255)), torch.zeros(2, 5), torch.zeros(2, 5), x)
    terms = elbo()(FixedOutput(out), x, 1.0)
    per_pixel = -math.log(math.erf(0.5 / math.sqrt(2)))
    assert terms["recon"].item() == pytest.approx(3 * 4 * 4 * per_pixel, rel=1e-5)
    assert terms["kl"].item() == 0.0


def test_the_likelihood_is_the_models_own_and_selected_by_the_spec() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(stem_channels=4, channels=[8], latent_dim=4, blocks_per_level=0), 16)
    x = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(1)).float() / 255
    recon = {}
    for likelihood in ("discretized", "continuous"):
        torch.manual_seed(1)  # the same posterior sample
        recon[likelihood] = elbo(ElboSpec(likelihood=likelihood))(model, x, 1.0)["recon"].item()
    assert recon["discretized"] != recon["continuous"]
    assert recon["continuous"] == pytest.approx(recon["discretized"], rel=0.05)  # sigma = 0.1 >> 1/255


def test_free_bits_change_the_penalty_but_not_the_reported_kl() -> None:
    model, x = fake()
    plain, freed = elbo()(model, x, 1.0), elbo(free_bits=5.0)(model, x, 1.0)
    assert torch.equal(freed["kl"], plain["kl"])
    assert freed["loss"] > plain["loss"]  # some dims have batch-mean KL below 5 nats: charged 5


def test_the_perceptual_term_is_added_to_any_objective_and_logged() -> None:
    torch.manual_seed(0)
    vgg = VGGPerceptual(["relu1_2"], weights="random")
    model, x = fake()
    spec = ElboSpec(beta=2.0, perceptual_weight=0.5, perceptual_layers=["relu1_2"], vgg_weights="random")
    loss = elbo(spec, perceptual=vgg)
    terms = loss(model, x, 1.0)
    assert loss.terms == ("loss", "recon", "kl", "perceptual")
    assert terms["perceptual"] > 0 and torch.allclose(terms["perceptual"], vgg(model.out.mean, x).mean())
    assert torch.allclose(terms["loss"], terms["recon"] + 2.0 * terms["kl"] + 0.5 * terms["perceptual"])


def test_perceptual_weight_without_a_vgg_is_an_error() -> None:
    with pytest.raises(ValueError, match="no VGGPerceptual"):
        elbo(ElboSpec(perceptual_weight=0.1))


def test_an_objective_missing_a_required_term_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoKL(ObjectiveSpec):
        kind: Literal["no_kl"] = "no_kl"

    monkeypatch.setitem(OBJECTIVES, "no_kl", Objective("no_kl", NoKL, lambda s, b: {"loss": b.x.sum()}))
    model, x = fake()
    with pytest.raises(KeyError, match=r"no_kl.*recon"):
        TrainingLoss(NoKL(), dataset_size=1)(model, x, 1.0)


def test_a_new_objective_module_in_the_package_registers_itself(tmp_path: Any) -> None:
    """What "one file" means: a module dropped into vaebench/objectives/ is a loss.kind, in a subprocess."""
    import subprocess
    import sys
    from pathlib import Path

    import vaebench.objectives as package

    source = """
from typing import Literal
from vaebench.objectives import Batch, Objective, ObjectiveSpec, register
from vaebench.core.sections import Float

class HalfKLSpec(ObjectiveSpec):
    kind: Literal["half_kl"] = "half_kl"
    weight: Float = 0.5

def terms(spec, batch: Batch):
    recon = batch.recon(spec.likelihood)
    kl = 0.5 * (batch.out.mu ** 2).sum(1).mean()
    return {"loss": recon + spec.weight * kl, "recon": recon, "kl": kl}

register(Objective("half_kl", HalfKLSpec, terms))
"""
    entry = Path(package.__path__[0]) / "zz_test_half_kl.py"
    entry.write_text(source)
    try:
        code = (
            "from vaebench.config.spec import RunSpec; "
            "s = RunSpec.model_validate({'loss': {'kind': 'half_kl', 'weight': 2}}); print(s.loss.weight)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        entry.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"


@pytest.mark.parametrize(
    "decoder",
    [None, VarianceDecoderSpec(), VarianceDecoderSpec(bound="hard"), SigmaVAEDecoderSpec()],
    ids=["isotropic", "variance-soft", "variance-hard", "sigma_vae"],
)
@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_every_objective_trains_every_decoder(kind: str, decoder: object) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(stem_channels=8, channels=[16, 32], latent_dim=8, blocks_per_level=0)
    if decoder is not None:
        spec = spec.model_copy(update={"decoder": decoder})
    model = build_model(spec, 32)
    x = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float() / 255
    loss = TrainingLoss(OBJECTIVES[kind].spec(), dataset_size=64, free_bits=0.1)
    terms = loss(model, x, 0.5)
    assert set(terms) == set(loss.terms) and all(torch.isfinite(t) for t in terms.values())
    terms["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_recon_is_minus_log_p_of_the_forward_sample() -> None:
    model, x = fake()
    batch = Batch(x, model.out, model, 1.0, 64, 0.0)  # type: ignore[arg-type]
    want = -discretized_gaussian_log_prob(x, model.out.mean, model.out.log_scale).mean()
    assert torch.allclose(batch.recon("discretized"), want)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(set(OBJECTIVES) - {"elbo"}))
def test_each_objective_trains_on_both_paths_and_logs_its_own_terms(kind: str, tmp_path: Any) -> None:
    """The plain and the fast path (eager, on the CPU) sum the objective's terms without knowing them."""
    import tiny
    from vaebench.launch.runner import run_one
    from vaebench.runs.metrics_log import read_metrics

    variant = tiny.tiny_variant(loss__kind=kind)
    rows = {}
    for fast in (False, True):
        run = tmp_path / ("fast" if fast else "plain")
        assert run_one(variant, 0, run, device="cpu", fast_path=fast).status == "finished"
        rows[fast] = read_metrics(run / "metrics.jsonl")
    extra = [f"train/{t}" for t in OBJECTIVES[kind].terms]
    for plain, fast in zip(rows[False], rows[True], strict=True):
        for key in ["train/loss", "train/recon", "train/kl", *extra]:
            assert fast[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), (kind, plain["step"], key)
    validated = [r for r in rows[False] if "val/loss" in r]
    assert validated and all(f"val/{t}" in r for r in validated for t in OBJECTIVES[kind].terms)
