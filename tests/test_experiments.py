"""Experiment files: expansion, overrides in every form, and errors a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vaebench.cli import app
from vaebench.config.experiments import apply_overrides, load_experiment, parse_override, parse_value, select
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.model.decoders.variance import VarianceDecoderSpec

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
runner = CliRunner()


def write(tmp_path: Path, doc: dict | str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "name", ["quickstart", "baseline", "perceptual", "ablation", "objectives", "disentangle"]
)
def test_shipped_experiments_are_valid(name: str) -> None:
    variants = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert variants and all(v.experiment == name for v in variants)
    assert len({v.name for v in variants}) == len(variants)


def test_quickstart_uses_synthetic_data_and_at_least_two_variants() -> None:
    variants = load_experiment(EXPERIMENTS / "quickstart.yaml")
    assert len(variants) >= 2
    assert all(v.spec.data.kind == "synthetic" for v in variants)


def test_disentangle_grid_is_beta_by_objective_on_discrete_faces_with_reduced_metric_counts() -> None:
    variants = load_experiment(EXPERIMENTS / "disentangle.yaml")
    assert {(v.spec.loss.kind, v.spec.loss.beta) for v in variants} == {
        (kind, beta) for kind in ("elbo", "beta_tcvae") for beta in (1.0, 4.0, 8.0)
    }
    for v in variants:
        assert v.spec.data.kind == "synthetic" and v.spec.data.factor_levels is not None
        assert v.spec.seeds == [0, 1, 2]
        assert (v.spec.eval.disentanglement.num_train, v.spec.eval.disentanglement.num_test) == (2000, 1000)


def test_ablation_grid_is_the_16_variant_cartesian_product() -> None:
    variants = load_experiment(EXPERIMENTS / "ablation.yaml")
    assert len(variants) == 16
    combos = {
        (
            v.spec.model.decoder.kind,
            v.spec.loss.perceptual_weight > 0,
            v.spec.anneal.schedule,
            v.spec.train.batch_size,
        )
        for v in variants
    }
    assert len(combos) == 16
    assert {c[0] for c in combos} == {"isotropic", "variance"}
    assert {c[3] for c in combos} == {16, 32}
    first = variants[0]
    assert first.name == "decoder-isotropic_perceptual-off_anneal-linear_batch-16"
    assert first.axes == {"decoder": "isotropic", "perceptual": "off", "anneal": "linear", "batch": "16"}


def test_grid_axis_given_as_dotted_key_with_values(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "b", "base": {"train": {"steps": 5}}, "grid": {"loss.beta": [0.5, 4]}})
    variants = load_experiment(path)
    assert [v.name for v in variants] == ["beta-0.5", "beta-4"]
    assert [v.spec.loss.beta for v in variants] == [0.5, 4.0]
    assert variants[1].axes == {"beta": "4"}


def test_explicit_variants_override_the_base(tmp_path: Path) -> None:
    doc = {
        "name": "e",
        "base": {"loss": {"beta": 2.0}, "train": {"steps": 7}},
        "variants": [{"name": "a"}, {"name": "b", "set": {"loss.beta": 8, "model.latent_dim": 16}}],
    }
    a, b = load_experiment(write(tmp_path, doc))
    assert (a.spec.loss.beta, a.spec.model.latent_dim) == (2.0, 256)
    assert (b.spec.loss.beta, b.spec.model.latent_dim) == (8.0, 16)
    assert a.spec.train.steps == b.spec.train.steps == 7


def test_spec_round_trip_load_dump_load() -> None:
    for variant in load_experiment(EXPERIMENTS / "ablation.yaml")[:3]:
        dumped = yaml.safe_dump(variant.spec.model_dump(mode="json"))
        again = RunSpec.model_validate(yaml.safe_load(dumped))
        assert again == variant.spec


@pytest.mark.parametrize("form", ["loss.beta=4", "--loss.beta=4"])
def test_override_forms_parse_to_the_same_key(form: str) -> None:
    assert parse_override(form) == ("loss.beta", 4)


def test_values_parse_as_yaml_literals_and_wandb_floats() -> None:
    assert parse_value("1e-05") == pytest.approx(1e-5) and isinstance(parse_value("1e-05"), float)
    assert parse_value("1e5") == 1e5
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("[16, 32]") == [16, 32]
    assert parse_value("null") is None
    assert parse_value("true") is True
    assert parse_value("off") == "off"  # YAML 1.2: grid level names stay strings
    assert parse_value("cosine") == "cosine"


def test_overrides_reach_the_validated_spec(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "o", "base": {"train": {"steps": 3}}})
    (variant,) = load_experiment(path, {"loss.beta": 1e-5, "optim.lr": parse_value("3e-4")})
    assert variant.spec.loss.beta == pytest.approx(1e-5)
    assert variant.spec.optim.lr == pytest.approx(3e-4)


def test_changing_a_kind_starts_from_that_kinds_defaults() -> None:
    tree = {"model": {"decoder": {"kind": "isotropic", "sigma": 0.05}}}
    out = apply_overrides(tree, {"model.decoder.logvar_min": -6, "model.decoder.kind": "variance"})
    assert out == {"model": {"decoder": {"kind": "variance", "logvar_min": -6}}}
    spec = RunSpec.model_validate({**out, "train": {"steps": 1}})
    assert spec.model.decoder == VarianceDecoderSpec(logvar_min=-6)
    assert tree["model"]["decoder"]["sigma"] == 0.05  # the input is not mutated


def test_bad_value_names_file_path_value_and_allowed(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"name": "bad", "base": {"anneal": {"schedule": "sigmoid"}, "train": {"steps": 1}}}
    )
    with pytest.raises(UserError) as info:
        load_experiment(path)
    text = str(info.value)
    assert str(path) in text
    assert "anneal.schedule" in text and "'sigmoid'" in text
    assert "linear" in text and "cosine" in text


def test_unknown_key_and_bad_decoder_kind_are_reported_with_dotted_paths(tmp_path: Path) -> None:
    doc = {
        "name": "bad",
        "base": {"model": {"latnt_dim": 4, "decoder": {"kind": "laplace"}}, "train": {"steps": 1}},
    }
    with pytest.raises(UserError) as info:
        load_experiment(write(tmp_path, doc))
    text = str(info.value)
    assert "model.latnt_dim: unknown key" in text
    assert "model.decoder" in text and "isotropic" in text and "'laplace'" in text


def test_error_inside_a_tagged_section_does_not_show_the_tag(tmp_path: Path) -> None:
    doc = {
        "name": "bad",
        "base": {"model": {"decoder": {"kind": "isotropic", "sigma": 0}}, "train": {"steps": 1}},
    }
    with pytest.raises(UserError, match=r"model\.decoder\.sigma: .*greater than 0.*given: 0"):
        load_experiment(write(tmp_path, doc))


def test_bad_override_is_reported_like_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "o", "base": {"train": {"steps": 3}}})
    with pytest.raises(UserError, match=r"train\.batch_size.*given: 'big'"):
        load_experiment(path, {"train.batch_size": "big"})
    with pytest.raises(UserError, match=r"dotted\.key=value"):
        parse_override("loss.beta")


def test_steps_or_epochs_exactly_one(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "o", "base": {"train": {"steps": 3, "epochs": 2}}})
    with pytest.raises(UserError, match=r"exactly one of train\.steps and train\.epochs"):
        load_experiment(path)


def test_variants_and_grid_together_is_an_error(tmp_path: Path) -> None:
    doc = {"name": "x", "variants": [{"name": "a"}], "grid": {"loss.beta": [1]}}
    with pytest.raises(UserError, match="either `variants` or `grid`"):
        load_experiment(write(tmp_path, doc))


def test_missing_file_and_broken_yaml_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not valid YAML"):
        load_experiment(write(tmp_path, "name: [unclosed"))


def test_select_unknown_variant_lists_the_known_ones() -> None:
    variants = load_experiment(EXPERIMENTS / "quickstart.yaml")
    assert [v.name for v in select(variants, ["variance"])] == ["variance"]
    with pytest.raises(UserError, match="isotropic"):
        select(variants, ["nope"])


def test_cli_spec_show_lists_all_16_variants() -> None:
    result = runner.invoke(app, ["spec", "show", str(EXPERIMENTS / "ablation.yaml")])
    assert result.exit_code == 0, result.output
    assert "16 variants" in result.output
    assert "decoder-variance_perceptual-on_anneal-cosine_batch-32" in result.output


def test_cli_spec_show_applies_set_and_trailing_agent_overrides() -> None:
    args = [
        "spec",
        "show",
        str(EXPERIMENTS / "quickstart.yaml"),
        "--yaml",
        "--set",
        "loss.beta=3",
        "--optim.lr=1e-05",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    docs = [d for d in result.output.split("\n") if d.strip().startswith(("beta:", "lr:"))]
    assert "beta: 3.0" in [d.strip() for d in docs] and "lr: 1.0e-05" in [d.strip() for d in docs]


def test_cli_spec_validate_exit_codes(tmp_path: Path) -> None:
    good = runner.invoke(app, ["spec", "validate", str(EXPERIMENTS / "quickstart.yaml")])
    assert good.exit_code == 0 and "2 valid variant" in good.output
    bad_path = write(tmp_path, {"name": "bad", "base": {"loss": {"beta": -1}, "train": {"steps": 1}}})
    bad = runner.invoke(app, ["spec", "validate", str(bad_path)])
    assert bad.exit_code == 1
    assert "loss.beta" in bad.output and "Traceback" not in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)
