"""`vaebench report`: tables that equal a hand computation, every file written, broken runs reported.

Two sources of runs: constructed run folders with known metrics (a 2 x 2 grid, decoder x beta, with
2 seeds, whose means, standard deviations and paired axis effects are computed by hand below), and a
real, tiny training of experiments/quickstart.yaml (2 variants x 2 seeds, 8 steps at 16x16), trained
once per session.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from vaebench.cli import app
from vaebench.config.experiments import load_experiment
from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.launch.runner import plan_runs, run_queue
from vaebench.report import build_report
from vaebench.report.load import load_runs
from vaebench.report.stats import mean_ci, t_critical
from vaebench.report.tables import (
    axis_effects,
    degenerate_metrics,
    environment_table,
    format_effects,
    interaction_effects,
    latex_escape,
    latex_table,
    rank_variants,
    variant_table,
)
from vaebench.report.wandb_api import load_wandb
from vaebench.train.loop import SilentReporter

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
TINY = {
    "data.image_size": 16,
    "data.train_size": 64,
    "data.val_size": 16,
    "data.test_size": 32,
    "model.stem_channels": 4,
    "model.channels": [8],
    "model.latent_dim": 4,
    "train.steps": 8,
    "train.batch_size": 8,
    "train.log_every": 2,
    "train.val_every": 4,
    "train.checkpoint_every": 4,
    "train.val_batches": 1,
    "eval.iw_samples": 4,
    "eval.max_images": 32,
    "eval.mi_batch_size": 16,
    "tracking.mode": "disabled",
    "seeds": [0, 1],
}
runner = CliRunner()


# ----------------------------------------------------------------------------- constructed run folders

# bits/dim (ELBO) of the grid: (decoder, beta) -> (seed 0, seed 1)
GRID_BPD = {
    ("isotropic", "1"): (3.0, 3.2),
    ("isotropic", "4"): (3.5, 3.9),
    ("variance", "1"): (2.6, 2.9),
    ("variance", "4"): (3.3, 3.4),
}
T1 = 12.70620474  # Student t, 97.5% quantile, 1 degree of freedom (published tables: 12.706)
T2 = 4.30265273  # 2 degrees of freedom (4.303)
T3 = 3.182446305  # 3 degrees of freedom (3.182)
T5 = 2.570581836  # 5 degrees of freedom (2.571)


def make_run(
    root: Path,
    variant: str,
    seed: int,
    axes: dict[str, str],
    metrics: dict[str, Any],
    *,
    experiment: str = "grid",
    spec: dict[str, Any] | None = None,
    done: bool = True,
    curves: list[dict[str, Any]] | None = None,
    per_dim: dict[str, list[float]] | None = None,
) -> Path:
    """A run folder as `vaebench run` leaves it, with the given test metrics (and no checkpoints)."""
    folder = root / experiment / variant / f"seed{seed}"
    (folder / "eval").mkdir(parents=True)
    resolved = RunSpec.model_validate(spec or {}).model_dump(mode="json")
    document = {"experiment": experiment, "variant": variant, "seed": seed, "axes": axes, "overrides": {}}
    (folder / "spec.yaml").write_text(yaml.safe_dump({**document, "spec": resolved}, sort_keys=False))
    rows = curves or [
        {"step": s, "train/loss": 100.0 - s, "train/kl": 5.0 + s, "train/beta": min(1.0, s / 4)}
        for s in (2, 4, 6)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"experiment": experiment, "variant": variant, "seed": seed, "step": rows[-1]["step"]}
    summary |= {f"test/{k}": v for k, v in metrics.items()}
    (folder / "summary.json").write_text(json.dumps(summary))
    if per_dim is not None:
        settings = {"split": "test", "active_threshold": 0.01, "iw_samples": 4, "num_images": 8}
        record = {"settings": settings, "metrics": summary, "per_dim": per_dim}
        (folder / "eval" / "test.json").write_text(json.dumps({"latest": "k", "results": {"k": record}}))
    if done:
        (folder / "DONE").write_text("2024-01-01T00:00:00+00:00")
    return folder


@pytest.fixture
def grid_runs(tmp_path: Path) -> Path:
    """The 2 x 2 x 2-seed grid; bpd_iw is missing for variance/beta-4 seed 1 (not evaluated with IW)."""
    root = tmp_path / "runs"
    for (decoder, beta), values in GRID_BPD.items():
        for seed, bpd in enumerate(values):
            metrics = {
                "bpd_elbo": bpd,
                "kl": 10.0 * float(beta) + seed,
                "active_units": 4 - int(beta) // 4 - seed,
            }
            if not (decoder == "variance" and beta == "4" and seed == 1):
                metrics["bpd_iw"] = bpd - 0.1
            per_dim = {"kl_per_dim": [0.001, 2.0, 0.5, 1.0], "posterior_mean_var": [1e-4, 0.5, 0.1, 0.3]}
            make_run(
                root,
                f"decoder-{decoder}_beta-{beta}",
                seed,
                {"decoder": decoder, "beta": beta},
                metrics,
                spec={"model": {"decoder": {"kind": decoder}}, "loss": {"beta": float(beta)}},
                per_dim=per_dim,
            )
    return root


def test_t_critical_matches_published_table() -> None:
    for df, expected in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281), (30, 2.0423)]:
        assert t_critical(df) == pytest.approx(expected, abs=1e-4)
    assert t_critical(3) == pytest.approx(T3, rel=1e-8)
    assert t_critical(4, 0.99) == pytest.approx(4.6041, abs=1e-4)
    assert t_critical(100_000) == pytest.approx(1.95996, abs=1e-4)  # the normal quantile in the limit


def test_mean_ci_by_hand_and_with_missing_values() -> None:
    ci = mean_ci([1.0, 2.0, 4.0, None, math.nan])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert (ci.mean, ci.n) == (pytest.approx(7 / 3), 3)
    assert ci.std == pytest.approx(sd)
    assert ci.high - ci.mean == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)
    assert math.isnan(mean_ci([5.0]).std) and math.isnan(mean_ci([5.0]).low)
    assert mean_ci([]).n == 0


def test_variant_table_is_mean_and_sample_std_over_seeds(grid_runs: Path) -> None:
    rs = load_runs([grid_runs])
    table = variant_table(rs).set_index("variant")
    assert list(table.index) == [
        "decoder-isotropic_beta-1",
        "decoder-isotropic_beta-4",
        "decoder-variance_beta-1",
        "decoder-variance_beta-4",
    ]
    row = table.loc["decoder-isotropic_beta-4"]
    assert (row["decoder"], row["beta"], row["n"]) == ("isotropic", "4", 2)
    assert row["bpd_elbo_mean"] == pytest.approx(3.7)
    assert row["bpd_elbo_std"] == pytest.approx(math.sqrt(0.08))  # (0.2^2 + 0.2^2) / (2 - 1)
    assert row["kl_mean"] == pytest.approx(40.5)
    partial = table.loc["decoder-variance_beta-4"]
    assert (partial["bpd_iw_n"], partial["bpd_iw_mean"]) == (1, pytest.approx(3.2))
    assert math.isnan(partial["bpd_iw_std"])
    assert table["psnr_n"].eq(0).all() and table["psnr_mean"].isna().all()  # never evaluated: missing
    ranked = rank_variants(variant_table(rs), "bpd_elbo")
    assert list(ranked["variant"]) == [
        "decoder-variance_beta-1",  # 2.75
        "decoder-isotropic_beta-1",  # 3.1
        "decoder-variance_beta-4",  # 3.35
        "decoder-isotropic_beta-4",  # 3.7
    ]
    assert list(ranked["rank"]) == [1, 2, 3, 4]


def test_axis_effects_pair_runs_and_replicate_over_seeds(grid_runs: Path) -> None:
    effects = axis_effects(load_runs([grid_runs])).set_index(["axis", "metric"])
    decoder = effects.loc[("decoder", "bpd_elbo")]
    # pairs (beta, seed): (1,0) 2.6-3.0, (1,1) 2.9-3.2, (4,0) 3.3-3.5, (4,1) 3.4-3.9
    # per seed: seed 0 mean(-0.4, -0.2) = -0.3, seed 1 mean(-0.3, -0.5) = -0.4; t over 2 seeds (1 df)
    per_seed = [-0.3, -0.4]
    sd = statistics.stdev(per_seed)
    assert (decoder["level"], decoder["reference"]) == ("variance", "isotropic")
    assert (decoder["n_pairs"], decoder["n_seeds"]) == (4, 2)
    assert decoder["mean_diff"] == pytest.approx(-0.35)
    assert decoder["std_diff"] == pytest.approx(sd)
    assert decoder["ci_low"] == pytest.approx(-0.35 - T1 * sd / math.sqrt(2), rel=1e-7)
    assert decoder["ci_high"] == pytest.approx(-0.35 + T1 * sd / math.sqrt(2), rel=1e-7)
    beta = effects.loc[("beta", "bpd_elbo")]
    assert (beta["level"], beta["reference"]) == ("4", "1")  # natural order: 1 before 4
    assert beta["mean_diff"] == pytest.approx(0.6)  # seed 0 mean(0.5, 0.7), seed 1 mean(0.7, 0.5)
    assert beta["ci_high"] - beta["mean_diff"] == pytest.approx(0.0, abs=1e-12)
    # bpd_iw is missing for one run, so the pair holding it is left out
    assert effects.loc[("decoder", "bpd_iw"), "n_pairs"] == 3
    assert effects.loc[("beta", "kl"), "mean_diff"] == pytest.approx(30.0)


def test_effect_intervals_use_the_seed_as_the_unit_when_the_seed_effect_is_large(tmp_path: Path) -> None:
    """A 2 x 2 grid, 3 seeds: each seed shifts every run a lot and the decoder axis by a seed-specific
    amount (+0.10, +0.02, +0.06), so the decoder effect is 0.06 with seed-to-seed spread 0.04. Taken as
    6 independent pairs (5 df) the interval would exclude 0; over 3 seeds (2 df) it must not."""
    seed_shift = {0: 1.0, 1: -2.0, 2: 3.0}
    decoder_effect = {0: 0.10, 1: 0.02, 2: 0.06}
    for seed in range(3):
        for decoder in ("isotropic", "variance"):
            for beta in ("1", "4"):
                bpd = 5.0 + seed_shift[seed] + (0.3 if beta == "4" else 0.0)
                bpd += decoder_effect[seed] if decoder == "variance" else 0.0
                axes = {"decoder": decoder, "beta": beta}
                make_run(tmp_path, f"decoder-{decoder}_beta-{beta}", seed, axes, {"bpd_elbo": bpd})
    effect = axis_effects(load_runs([tmp_path])).set_index(["axis", "metric"]).loc[("decoder", "bpd_elbo")]
    per_seed = [0.10, 0.02, 0.06]
    half = T2 * statistics.stdev(per_seed) / math.sqrt(3)
    assert (effect["n_pairs"], effect["n_seeds"]) == (6, 3)
    assert effect["mean_diff"] == pytest.approx(0.06)
    assert (
        effect["ci_low"] == pytest.approx(0.06 - half, rel=1e-7) and effect["ci_low"] < 0 < effect["ci_high"]
    )
    pairs_as_replicates = T5 * statistics.stdev(per_seed * 2) / math.sqrt(6)
    assert 0.06 - pairs_as_replicates > 0  # what the old, pair-based interval would have claimed


def test_one_seed_gives_an_effect_but_no_interval(tmp_path: Path) -> None:
    for decoder, bpd in (("isotropic", 5.0), ("variance", 4.5)):
        make_run(tmp_path, f"decoder-{decoder}", 0, {"decoder": decoder}, {"bpd_elbo": bpd})
    effects = axis_effects(load_runs([tmp_path]))
    row = effects.set_index("metric").loc["bpd_elbo"]
    assert (row["n_seeds"], row["mean_diff"]) == (1, pytest.approx(-0.5))
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    formatted = format_effects(effects)
    assert formatted.iloc[0]["seeds"] == "1"
    assert "(1 seed, no interval)" in formatted.iloc[0].iloc[4]


def test_degenerate_metrics_get_a_note_not_an_effect(tmp_path: Path) -> None:
    """MI at log(batch) in every run, active units 4/4 everywhere, KL differing at 1e-12: flagged;
    bits/dim, which really differs, is not."""
    for decoder, bpd in (("isotropic", 5.0), ("variance", 4.5)):
        for seed in (0, 1):
            metrics = {
                "bpd_elbo": bpd + 0.01 * seed,
                "mutual_info": math.log(128) - 0.001 * seed,
                "mutual_info_batch": 128,
                "active_units": 4,
                "kl": 100.0 + 1e-12 * seed,
            }
            make_run(tmp_path, f"decoder-{decoder}", seed, {"decoder": decoder}, metrics)
    rs = load_runs([tmp_path])
    flags = degenerate_metrics(rs)
    assert set(flags) == {"mutual_info", "active_units", "kl"}
    assert "ceiling" in flags["mutual_info"] and "4.852" in flags["mutual_info"]
    assert "constant (4.0)" in flags["active_units"] and "floating-point" in flags["kl"]
    row = format_effects(axis_effects(rs), flags=flags).iloc[0]
    assert row["Δ MI (nats)"] == "n/a (see note)" and row["Δ bits/dim (−ELBO)"].startswith("-0.5000")
    out = build_report([tmp_path], out=tmp_path / "report", figures=False)
    assert "Not an effect: MI (nats) is at its ceiling" in (out / "report.md").read_text()


def test_a_decoder_dependent_effect_shows_in_the_interaction_table(tmp_path: Path) -> None:
    """beta 4 costs +0.5 bits/dim with the isotropic decoder and saves 0.5 with the variance one: the
    averaged effect is ~0, the interaction rows show both, each with its seed-as-unit interval."""
    noise = {0: 0.0, 1: 0.02}
    for decoder, sign in (("isotropic", 1.0), ("variance", -1.0)):
        for beta in ("1", "4"):
            for seed in (0, 1):
                bpd = 5.0 + (sign * 0.5 + noise[seed] if beta == "4" else 0.0)
                axes = {"decoder": decoder, "beta": beta}
                make_run(tmp_path, f"decoder-{decoder}_beta-{beta}", seed, axes, {"bpd_elbo": bpd})
    rs = load_runs([tmp_path])
    overall = axis_effects(rs).set_index(["axis", "metric"]).loc[("beta", "bpd_elbo")]
    assert overall["mean_diff"] == pytest.approx(0.01)  # +0.5 and -0.5 average away
    table = interaction_effects(rs)
    rows = table[(table["axis"] == "beta") & (table["metric"] == "bpd_elbo")].set_index("by_level")
    assert list(rows["by_axis"]) == ["decoder", "decoder"]
    assert rows.loc["isotropic", "mean_diff"] == pytest.approx(0.51)  # seeds: 0.50, 0.52
    assert rows.loc["variance", "mean_diff"] == pytest.approx(-0.49)  # seeds: -0.50, -0.48
    half = T1 * statistics.stdev([0.50, 0.52]) / math.sqrt(2)
    assert rows.loc["isotropic", "ci_high"] == pytest.approx(0.51 + half, rel=1e-7)
    assert (rows["n_seeds"] == 2).all() and (rows["n_pairs"] == 2).all()
    out = build_report([tmp_path], out=tmp_path / "report", figures=False)
    text = (out / "tables" / "interactions.md").read_text()
    assert "| beta: 4 − 1 | decoder = variance | 2 | -0.4900 [" in text
    assert "## Interactions" in (out / "report.md").read_text()
    means = (out / "tables" / "level_means.md").read_text()
    assert "| beta | 4 | 4 | 2 | 5.0100 [" in means  # (5.5 + 4.5) / 2 = 5.0 for seed 0, 5.02 for seed 1


def test_a_variant_with_fewer_seeds_is_listed_after_the_others_unranked(tmp_path: Path) -> None:
    for variant, values in (("a", [5.0, 5.2]), ("b", [4.9, 5.1]), ("c", [3.0])):  # c: best, one seed
        for seed, bpd in enumerate(values):
            make_run(tmp_path, variant, seed, {"variant": variant}, {"bpd_elbo": bpd})
    ranked = rank_variants(variant_table(load_runs([tmp_path])), "bpd_elbo")
    assert list(ranked["variant"]) == ["b", "a", "c"]
    assert list(ranked["rank"].astype("object").where(ranked["rank"].notna(), None)) == [1, 2, None]


def test_identical_environments_collapse_to_one_row(tmp_path: Path) -> None:
    env = {
        "git_commit": "abcdef1234567",
        "packages": {"torch": "2.14.1"},
        "python": "3.11.7",
        "device": "cpu",
    }
    for decoder in ("isotropic", "variance"):
        folder = make_run(tmp_path, f"decoder-{decoder}", 0, {"decoder": decoder}, {"bpd_elbo": 5.0})
        (folder / "env.json").write_text(json.dumps(env))
    table = environment_table(load_runs([tmp_path]))
    assert list(table["variant"]) == ["all 2 variants"] and list(table["torch"]) == ["2.14.1"]
    other = tmp_path / "grid" / "decoder-variance" / "seed0" / "env.json"
    other.write_text(json.dumps({**env, "device": "cuda"}))
    assert len(environment_table(load_runs([tmp_path]))) == 2


def test_a_report_of_other_runs_is_not_overwritten_without_force(grid_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report([grid_runs], out=out, figures=False)
    full = (out / "tables" / "variants.csv").read_text()
    one_variant = grid_runs / "grid" / "decoder-variance_beta-1"
    with pytest.raises(UserError, match="other runs") as error:
        build_report([one_variant], out=out, figures=False)
    assert "--force" in str(error.value)
    assert (out / "tables" / "variants.csv").read_text() == full  # the full report is untouched
    build_report([grid_runs], out=out, figures=False)  # the same runs again: replaced, no question
    build_report([one_variant], out=out, figures=False, force=True)
    assert (out / "tables" / "variants.csv").read_text() != full


def test_reference_level_is_the_first_in_the_experiment_file_the_runs_came_from(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    grid = {"anneal": {"linear": {"anneal.schedule": "linear"}, "cosine": {"anneal.schedule": "cosine"}}}
    experiment.write_text(yaml.safe_dump({"name": "sched", "grid": grid}, sort_keys=False))
    for level, bpd in (("cosine", 3.0), ("linear", 3.5)):
        folder = make_run(
            tmp_path / "runs", f"anneal-{level}", 0, {"anneal": level}, {"bpd_elbo": bpd}, experiment="sched"
        )
        env = {"argv": ["/venv/bin/vaebench", "run", "exp.yaml", "--quiet"], "cwd": str(tmp_path)}
        (folder / "env.json").write_text(json.dumps(env))

    rs = load_runs([tmp_path / "runs"])

    assert rs.levels["anneal"] == ["linear", "cosine"]  # file order, not alphabetical
    assert rs.variants == ["anneal-linear", "anneal-cosine"]
    effect = axis_effects(rs).set_index("metric").loc["bpd_elbo"]
    assert (effect["level"], effect["reference"], effect["mean_diff"]) == (
        "cosine",
        "linear",
        pytest.approx(-0.5),
    )


def test_report_of_constructed_grid_shows_hand_computed_numbers(grid_runs: Path, tmp_path: Path) -> None:
    out = build_report([grid_runs], out=tmp_path / "report", figures=False)
    variants_md = (out / "tables" / "variants.md").read_text()
    assert variants_md.startswith("| rank | decoder | beta | n | bits/dim (−ELBO) | vs best |")
    assert "| 1 | variance | 1 | 2 | 2.7500 ± 0.2121 | best |" in variants_md  # levels, not the name
    assert "| 2 | isotropic | 1 | 2 | 3.1000 ± 0.1414 | +0.3500 |" in variants_md
    assert "3.2000 (n=1)" in variants_md
    effects_md = (out / "tables" / "effects.md").read_text()
    half = T1 * statistics.stdev([-0.3, -0.4]) / math.sqrt(2)
    assert (
        f"| decoder | variance − isotropic | 2 | 4 | -0.3500 [{-0.35 - half:+.4f}, {-0.35 + half:+.4f}] |"
        in effects_md
    )
    tex = (out / "tables" / "effects.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"variance $-$ isotropic" in tex
    effects_csv = pd.read_csv(out / "tables" / "effects.csv")
    row = effects_csv[(effects_csv["axis"] == "beta") & (effects_csv["metric"] == "bpd_elbo")].iloc[0]
    assert row["mean_diff"] == pytest.approx(0.6)
    assert {p.stem for p in (out / "plots").glob("*.png")} == {
        "bits_per_dim",
        "effects",
        "curves",
        "latent_usage",
        "beta_sweep",  # loss.beta varies between variants
    }


def test_latex_escapes_and_uses_booktabs() -> None:
    frame = pd.DataFrame({"setting": ["loss.perceptual_weight"], "value": ["50% ± 1"]})
    tex = latex_table(frame, "A & B", "tab:x")
    assert r"loss.perceptual\_weight & 50\% $\pm$ 1 \\" in tex
    assert r"\caption{A \& B}" in tex and tex.count(r"\midrule") == 1
    assert latex_escape("-0.35 [-0.56, +0.14]") == "$-$0.35 [$-$0.56, +0.14]"
    assert latex_escape("decoder-isotropic_beta-1") == r"decoder-isotropic\_beta-1"  # hyphens stay


# ----------------------------------------------------------------------------- runs that went wrong


def test_broken_unfinished_and_diverged_runs_are_reported_not_dropped(
    grid_runs: Path, tmp_path: Path
) -> None:
    axes = {"decoder": "isotropic", "beta": "1"}
    good = {"bpd_elbo": 3.0}
    corrupt = make_run(grid_runs, "decoder-isotropic_beta-1", 2, axes, good)
    (corrupt / "summary.json").write_text('{"test/bpd_elbo": 3.0,')  # torn write
    no_spec = make_run(grid_runs, "decoder-isotropic_beta-1", 3, axes, good)
    (no_spec / "spec.yaml").unlink()
    make_run(grid_runs, "decoder-isotropic_beta-1", 4, axes, {}, done=False)
    nan_rows = [{"step": 2, "train/loss": 50.0}, {"step": 4, "train/loss": None}]
    make_run(grid_runs, "decoder-isotropic_beta-1", 5, axes, good, curves=nan_rows, done=False)
    (grid_runs / "grid" / "decoder-isotropic_beta-1" / "seed6").mkdir()  # created, then nothing
    (grid_runs / "grid" / "decoder-isotropic_beta-1" / "seed0.replaced-20240101-000000").mkdir()

    out = build_report([grid_runs], out=tmp_path / "report", figures=False)

    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("label")
    status = runs["status"].to_dict()
    prefix = "grid/decoder-isotropic_beta-1/"
    assert (
        status[prefix + "seed2"] == "broken"
        and "summary.json is not valid JSON" in runs.loc[prefix + "seed2", "reason"]
    )
    assert status[prefix + "seed3"] == "broken" and "no spec.yaml" in runs.loc[prefix + "seed3", "reason"]
    assert (
        status[prefix + "seed4"] == "unfinished" and "no DONE marker" in runs.loc[prefix + "seed4", "reason"]
    )
    assert (
        status[prefix + "seed5"] == "diverged"
        and "train/loss at step 4" in runs.loc[prefix + "seed5", "reason"]
    )
    assert status[prefix + "seed6"] == "broken"
    assert status[prefix + "seed0.replaced-20240101-000000"] == "replaced"
    assert sum(s == "finished" for s in status.values()) == 8
    report = (out / "report.md").read_text()
    assert "## Runs that need attention" in report
    for seed in (2, 3, 4, 5, 6):
        assert f"{prefix}seed{seed}" in report
    # only the two finished seeds enter the table
    variants = pd.read_csv(out / "tables" / "variants.csv").set_index("variant")
    assert variants.loc["decoder-isotropic_beta-1", "n"] == 2


def test_a_report_of_runs_none_of_which_finished_lists_them(tmp_path: Path) -> None:
    broken = make_run(tmp_path / "runs", "a", 0, {"variant": "a"}, {"bpd_elbo": 1.0})
    (broken / "summary.json").write_text("[1, 2]")  # valid JSON, but not an object
    make_run(tmp_path / "runs", "b", 0, {"variant": "b"}, {}, done=False)

    out = build_report([tmp_path / "runs"], out=tmp_path / "report")

    report = (out / "report.md").read_text()
    assert "should hold a JSON object, found list" in report
    assert "stopped at step 6 of 10000" in report  # the last logged step, of the default train.steps
    assert "No run has finished yet." in report
    assert not (out / "plots").exists() or not any((out / "plots").iterdir())


def test_one_experiment_at_a_time_and_output_folder_safety(grid_runs: Path, tmp_path: Path) -> None:
    make_run(grid_runs, "only", 0, {"variant": "only"}, {"bpd_elbo": 1.0}, experiment="other")
    with pytest.raises(UserError, match=r"several experiments \(grid, other\).*--experiment"):
        load_runs([grid_runs])
    assert load_runs([grid_runs], "other").variants == ["only"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="did not make"):
        build_report([grid_runs], "grid", mine, figures=False)
    assert (mine / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------- W&B public API


class FakeRun:
    """The attributes of wandb.apis.public.Run that the loader reads."""

    def __init__(self, folder: Path, state: str = "finished") -> None:
        document = yaml.safe_load((folder / "spec.yaml").read_text())
        self.config = document
        self.summary = {**json.loads((folder / "summary.json").read_text()), "_runtime": 3.0}
        self.rows = [
            {**r, "_step": r["step"], "_runtime": 1.0, "img": {"_type": "image-file"}}
            for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
        ]
        self.id = f"{document['variant'][:12]}{document['seed']}"
        self.name = f"{document['variant']}/seed{document['seed']}"
        self.group = document["experiment"]
        self.state = state
        self.path = ["ent", "proj", self.id]
        self.metadata = {"python": "3.11.0", "host": "node1", "git": {"commit": "abc123def4567"}}

    def scan_history(self) -> list[dict[str, Any]]:
        return self.rows


class FakeApi:
    def __init__(self, runs: list[Any]) -> None:
        self._runs = runs
        self.calls: list[tuple[str, Any]] = []

    def runs(self, path: str, filters: dict[str, Any] | None = None) -> list[Any]:
        self.calls.append((path, filters))
        return [r for r in self._runs if not filters or r.group == filters["group"]]


def test_wandb_loader_gives_the_tables_the_run_folders_give(grid_runs: Path, tmp_path: Path) -> None:
    folders = sorted(grid_runs.glob("grid/*/seed*"))
    crashed = FakeRun(folders[0], state="crashed")
    crashed.id, crashed.path = "crashed1", ["ent", "proj", "crashed1"]
    crashed.summary = {}
    foreign = FakeRun(folders[1])
    foreign.config, foreign.id, foreign.path = {"lr": 0.1}, "foreign", ["ent", "proj", "foreign"]
    api = FakeApi([FakeRun(f) for f in folders] + [crashed, foreign])

    rs = load_wandb(api, "ent/proj", "grid")

    assert api.calls == [("ent/proj", {"group": "grid"})]
    from_folders = variant_table(load_runs([grid_runs]))
    pd.testing.assert_frame_equal(variant_table(rs), from_folders)
    status = rs.runs.set_index("run")["status"]
    assert status["ent/proj/crashed1"] == "unfinished"
    assert "W&B state 'crashed'" in rs.runs.set_index("run").loc["ent/proj/crashed1", "reason"]
    assert status["ent/proj/foreign"] == "broken"
    assert set(rs.curves["metric"]) == {"train/loss", "train/kl", "train/beta"}  # no _keys, no images

    out = build_report(wandb_path="ent/proj", wandb_api=api, experiment="grid", out=tmp_path / "wb")
    assert "a W&B run" in (out / "report.md").read_text()  # no checkpoints here: said, not crashed
    assert (out / "plots" / "effects.png").exists()


def test_wandb_errors_become_user_errors() -> None:
    class Broken:
        def runs(self, path: str, filters: Any = None) -> list[Any]:
            raise ConnectionError("no network")

    with pytest.raises(UserError, match=r"Could not read the runs of W&B project .e/p.*no network"):
        load_wandb(Broken(), "e/p")


@pytest.mark.parametrize("path", ["nothing-here", "ent/proj/extra", "/proj", "ent/", "my team/proj"])
def test_a_wandb_path_that_is_not_entity_project_is_refused_before_any_login(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def no_api(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("wandb.Api() was created: it asks for a login")

    monkeypatch.setattr(wandb, "Api", no_api)
    result = CliRunner().invoke(app, ["report", "--wandb", path, "--out", str(tmp_path / "report")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--wandb {path!r} is not ENTITY/PROJECT" in result.output and "login" not in result.output
    assert not (tmp_path / "report").exists()


def test_figures_from_a_missing_folder_says_it_does_not_exist(grid_runs: Path, tmp_path: Path) -> None:
    """And a folder that exists but was not loaded is refused before the previous report is touched."""
    out = build_report([grid_runs], "grid", tmp_path / "report", figures=False)
    before = (out / "report.md").read_text()
    missing = grid_runs / "grid" / "decoder-isotropic_beta-1" / "seed7"
    with pytest.raises(UserError, match=rf"--figures-from {re.escape(str(missing))} does not exist"):
        build_report([grid_runs], "grid", out, figure_runs=[missing])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UserError, match="not one of the loaded runs of grid"):
        build_report([grid_runs], "grid", out, figure_runs=[elsewhere])
    assert (out / "report.md").read_text() == before and (out / "tables" / "variants.csv").exists()


# ----------------------------------------------------------------------------- a real training


@pytest.fixture(scope="session")
def quickstart_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiments/quickstart.yaml shrunk to 16x16 and 8 steps: 2 variants x 2 seeds, trained, evaluated."""
    runs = tmp_path_factory.mktemp("report_quickstart") / "runs"
    plan = plan_runs(load_experiment(QUICKSTART, TINY), runs)
    results = run_queue(plan, device="cpu", force=False, reporter=SilentReporter())
    assert [r.status for r in results] == ["finished"] * 4
    return runs


@pytest.fixture(scope="session")
def quickstart_report(quickstart_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report_out") / "quickstart"
    return build_report([quickstart_runs], out=out, figure_images=4, figure_scale=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_report_of_real_runs_writes_every_file(quickstart_report: Path) -> None:
    files = set(_files(quickstart_report))
    expected = {"report.md", "report.html", "tables/runs.csv", "tables/curves.csv"}
    for table in ("variants", "effects", "spec_differences", "environment"):
        expected |= {f"tables/{table}.{ext}" for ext in ("csv", "md", "tex")}
    for plot in ("curves", "bits_per_dim", "effects", "latent_usage"):
        expected |= {f"plots/{plot}.{ext}" for ext in ("png", "pdf")}
    for variant in ("isotropic", "variance"):
        for figure in ("reconstructions", "interpolation", "temperature", "curves"):
            expected |= {f"figures/{variant}/{figure}.{ext}" for ext in ("png", "pdf")}
    expected |= {f"figures/reconstructions_by_variant.{ext}" for ext in ("png", "pdf")}
    assert expected <= files
    assert not any(f.startswith("plots/beta_sweep") for f in files)  # beta is the same in both variants
    assert not any(f.startswith("tables/attention") for f in files)  # every run finished

    for png in sorted(quickstart_report.rglob("*.png")):
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=float)
        assert pixels.std() > 0, f"{png} is blank"
    with Image.open(quickstart_report / "figures" / "isotropic" / "temperature.png") as image:
        assert image.height == 2 * 6 * (16 + 2) + 2 * 2  # 6 temperature rows of 16 px tiles, padded, x2
    with Image.open(quickstart_report / "figures" / "isotropic" / "interpolation.png") as image:
        # 2 pairs; each row: the real first image, 4 decoded steps, the real second image
        assert image.size == (2 * (6 * (16 + 2) + 2), 2 * (2 * (16 + 2) + 2))
    grid_width = 2 * (4 * (16 + 2) + 2)  # 4 images of 16 px, padded, x2
    with Image.open(quickstart_report / "figures" / "reconstructions_by_variant.png") as image:
        # inputs and one row per variant (3 rows), labels on the left
        assert image.height == 2 * (3 * (16 + 2) + 2) and image.width > grid_width
        across = np.asarray(image.convert("RGB"))[:, -grid_width:]
    for row, variant in enumerate(("isotropic", "variance"), start=1):
        with Image.open(quickstart_report / "figures" / variant / "reconstructions.png") as image:
            own = np.asarray(image.convert("RGB"))[:, -grid_width:]  # inputs over this variant's recons
        tile = 2 * (16 + 2)
        assert np.array_equal(across[: tile + 4], own[: tile + 4])  # the same inputs on top
        assert np.array_equal(across[row * tile + 4 : (row + 1) * tile], own[tile + 4 : 2 * tile])


def test_real_tables_equal_the_summaries_of_the_runs(quickstart_runs: Path, quickstart_report: Path) -> None:
    variants = pd.read_csv(quickstart_report / "tables" / "variants.csv").set_index("variant")
    for variant in ("isotropic", "variance"):
        summaries = [
            json.loads((quickstart_runs / "quickstart" / variant / f"seed{s}" / "summary.json").read_text())
            for s in (0, 1)
        ]
        for key in ("bpd_elbo", "bpd_iw", "kl", "active_units", "mutual_info", "recon_bpd"):
            values = [s[f"test/{key}"] for s in summaries]
            assert variants.loc[variant, f"{key}_mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert variants.loc[variant, f"{key}_std"] == pytest.approx(
                statistics.stdev(values), rel=1e-9, abs=1e-12
            )
    effects = pd.read_csv(quickstart_report / "tables" / "effects.csv")
    row = effects[effects["metric"] == "bpd_elbo"].iloc[0]
    assert (row["axis"], row["level"], row["reference"], row["n_pairs"]) == (
        "variant",
        "variance",
        "isotropic",
        2,
    )
    diffs = [
        json.loads((quickstart_runs / "quickstart" / "variance" / f"seed{s}" / "summary.json").read_text())[
            "test/bpd_elbo"
        ]
        - json.loads(
            (quickstart_runs / "quickstart" / "isotropic" / f"seed{s}" / "summary.json").read_text()
        )["test/bpd_elbo"]
        for s in (0, 1)
    ]
    assert row["mean_diff"] == pytest.approx(statistics.mean(diffs))
    assert row["ci_high"] - row["mean_diff"] == pytest.approx(
        12.7062047 * statistics.stdev(diffs) / math.sqrt(2)
    )


def test_report_says_beside_each_temperature_grid_how_much_its_rows_vary(
    quickstart_runs: Path, quickstart_report: Path
) -> None:
    """The report measures the model it draws the grid from (temperature.json beside the figure), gives
    spread(0.5)/spread(1) there and in the run folder, and says plainly when temperature barely matters."""
    markdown = (quickstart_report / "report.md").read_text()
    html = (quickstart_report / "report.html").read_text()
    ratios = []
    for variant in ("isotropic", "variance"):
        drawn = json.loads((quickstart_report / "figures" / variant / "temperature.json").read_text())
        ratio = drawn["spread_ratio_0.5_1"]
        ratios.append(ratio)
        assert f"spread(0.5)/spread(1) = {ratio:.2f} for this checkpoint (step {drawn['step']})" in markdown
        spreads = " | ".join(f"{v:.3f}" for v in drawn["spread"])
        assert f"| spread | {spreads} |" in markdown
        assert all(f'<td class="num">{v:.3f}</td>' in html for v in drawn["spread"])
    run_folders = list((quickstart_runs / "quickstart").glob("*/seed*/figures/temperature.json"))
    assert len(run_folders) == 4
    for path in run_folders:
        record = json.loads(path.read_text())
        assert record["step"] == 8 and record["spread_ratio_0.5_1"] > 0
    assert markdown.count("at the end of training (step 8, the run folder's record)") == 2
    flat = "Temperature barely changes this model's samples"
    assert markdown.count(flat) == sum(r > 0.8 for r in ratios)


def test_a_run_folder_without_the_temperature_record_still_reports_it_as_not_measured(
    quickstart_runs: Path, tmp_path: Path
) -> None:
    """A run folder made before vaebench measured the temperature grid: the report draws and measures
    the figure as before, and says the run folder's number was not measured."""
    old = tmp_path / "runs" / "quickstart" / "isotropic" / "seed0"
    shutil.copytree(quickstart_runs / "quickstart" / "isotropic" / "seed0", old)
    (old / "figures" / "temperature.json").unlink()
    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figure_images=2, figure_scale=1)
    markdown = (out / "report.md").read_text()
    assert "not measured in the run folder (it predates figures/temperature.json)" in markdown
    assert "spread(0.5)/spread(1) = " in markdown  # the report's own measurement of its figure


def test_html_is_self_contained(quickstart_report: Path) -> None:
    text = (quickstart_report / "report.html").read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert len(sources) == 4 + 1 + 2 * 4  # 4 plots, the cross-variant grid, 4 figures per variant
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "<link" not in text and "<script" not in text
    markdown = (quickstart_report / "report.md").read_text()
    assert "](plots/bits_per_dim.png)" in markdown and "](figures/variance/temperature.png)" in markdown
    assert "model.decoder.kind" in markdown  # what the variants change


def test_cli_regenerates_the_same_report(quickstart_runs: Path, quickstart_report: Path) -> None:
    before = _files(quickstart_report)
    result = runner.invoke(
        app,
        [
            "report",
            str(quickstart_runs),
            "--out",
            str(quickstart_report),
            "--figure-images",
            "4",
            "--figure-scale",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "isotropic" in result.output and "variance" in result.output and "bits/dim (−ELBO)" in result.output
    )
    after = _files(quickstart_report)
    assert sorted(after) == sorted(before)
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []
