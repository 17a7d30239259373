"""What the registries promise: the spec, the CLI and the report derive from them, and the training
loop, the fast path and evaluation import each other in one direction only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vaebench.cli import RankChoice, evaluation_table
from vaebench.config.experiments import apply_overrides
from vaebench.config.spec import RunSpec
from vaebench.evaluation.metrics import METRICS, report_metrics
from vaebench.model.decoders import DECODER_HEADS
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import build_model
from vaebench.objectives import OBJECTIVES
from vaebench.report.columns import REPORT_METRICS


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        (
            "vaebench.train.loop",
            ["vaebench.train.fastpath", "vaebench.evaluation.evaluate", "vaebench.launch.runner"],
        ),
        ("vaebench.train.fastpath", ["vaebench.train.loop", "vaebench.evaluation.evaluate"]),
        ("vaebench.evaluation.evaluate", ["vaebench.train.loop", "vaebench.train.fastpath"]),
        (
            "vaebench.train.steps",
            ["vaebench.train.loop", "vaebench.train.fastpath", "vaebench.evaluation.evaluate"],
        ),
    ],
)
def test_training_fast_path_and_evaluation_do_not_import_each_other(
    module: str, must_not_load: list[str]
) -> None:
    code = f"import sys, {module}; print([m for m in {must_not_load!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rank_choices_and_report_columns_are_the_registrys_report_metrics() -> None:
    keys = [m.key for m in report_metrics()]
    assert [c.value for c in RankChoice] == keys == [m.key for m in REPORT_METRICS]
    assert keys[:2] == ["bpd_elbo", "bpd_iw"]


def test_the_evaluate_table_has_a_row_per_registered_scalar_metric() -> None:
    metrics = {f"test/{k}": 1 for k in METRICS} | {"test/quality_protocol": "fa01f7edbf11"}
    table = evaluation_table("test", [(Path("run"), metrics)])
    rows = list(table.columns[0].cells)
    scalar = [m.row_label for m in sorted(METRICS.values(), key=lambda m: m.order) if m.fmt]
    assert rows == [*scalar, "quality protocol"]  # the id the quality scores were made under
    assert "bits/dim, IW bound" in rows


def test_the_evaluate_table_shows_quality_rows_only_when_asked_for_and_says_not_comparable() -> None:
    plain = {f"test/{k}": 1 for k, m in METRICS.items() if m.fmt and not m.requires}
    rows = list(evaluation_table("test", [(Path("run"), plain)]).columns[0].cells)
    assert "FID (prior samples)" not in rows and "quality protocol" not in rows
    random = plain | {"test/fid": 12.5, "test/quality_protocol": "fa01f7edbf11"}
    random["test/quality_comparable"] = False
    table = evaluation_table("test", [(Path("run"), random)])
    rows, cells = list(table.columns[0].cells), list(table.columns[1].cells)
    assert cells[rows.index("FID (prior samples)")] == "12.50"
    assert cells[rows.index("quality protocol")] == "fa01f7edbf11 (random weights: not comparable)"


@pytest.mark.parametrize("kind", sorted(DECODER_HEADS))
def test_every_decoder_head_scores_images_through_its_own_log_prob(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_model(ModelSpec(stem_channels=4, channels=[8], latent_dim=4, blocks_per_level=0,
                                  decoder={"kind": kind}), 16)  # fmt: skip
    head = model.decoder.head
    monkeypatch.setattr(head, "log_prob", lambda x, mean, log_scale, likelihood: torch.full((len(x),), -5.0))
    x = torch.rand(3, 3, 16, 16)
    mean, log_scale = model.decode(torch.zeros(3, 4))
    assert torch.equal(model.log_prob(x, mean, log_scale, "discretized"), torch.full((3,), -5.0))


def test_switching_a_loss_kind_keeps_the_shared_fields_and_drops_the_old_kinds() -> None:
    base = {"loss": {"beta": 4.0, "likelihood": "continuous", "perceptual_weight": 2.0,
                     "vgg_weights": "random"}}  # fmt: skip
    for kind in sorted(set(OBJECTIVES) - {"elbo"}):
        loss = RunSpec.model_validate(apply_overrides(base, {"loss.kind": kind})).loss
        assert loss.kind == kind and loss.likelihood == "continuous" and loss.perceptual_weight == 2.0
    same = RunSpec.model_validate(apply_overrides(base, {"loss.kind": "elbo"})).loss
    assert same.beta == 4.0  # the default kind named explicitly changes nothing
    decoder = apply_overrides({"model": {"decoder": {"sigma": 0.2}}}, {"model.decoder.kind": "variance"})
    assert decoder["model"]["decoder"] == {"kind": "variance"}  # decoders share no fields


def test_a_registry_refuses_a_second_entry_of_a_key_and_a_spec_tagged_with_another_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vaebench import objectives
    from vaebench.evaluation import metrics
    from vaebench.model import decoders

    for module, name in ((objectives, "OBJECTIVES"), (decoders, "DECODER_HEADS"), (metrics, "METRICS")):
        monkeypatch.setattr(module, name, dict(getattr(module, name)))
    elbo = objectives.OBJECTIVES["elbo"]
    with pytest.raises(ValueError, match=re.escape("two entries register loss.kind 'elbo'")):
        objectives.register(elbo)
    with pytest.raises(ValueError, match="'other': its spec's kind defaults to 'elbo'"):
        objectives.register(objectives.Objective("other", elbo.spec, elbo.loss))
    sigma = decoders.DECODER_HEADS["sigma_vae"]
    with pytest.raises(ValueError, match="'sigma2': its spec's kind defaults to 'sigma_vae'"):
        decoders.register(decoders.DecoderHead("sigma2", sigma.spec, sigma.build))
    with pytest.raises(ValueError, match="two entries register the metric key 'psnr'"):
        metrics.register(metrics.METRICS["psnr"])
