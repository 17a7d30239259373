"""The report's sample-quality columns (FID, KID, ...): shown only when runs have them, one protocol per
column, "not comparable (random weights)" wherever random-weight scores appear, and the
likelihood-quality plane with its Pareto front. Run folders are constructed (`make_run`), as in
test_report.py, with the quality keys `vaebench evaluate` writes when eval.metrics asks for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from test_report import make_run
from test_report_layout import _browser, overflowing_tables
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.report import build_report
from vaebench.report.load import load_runs
from vaebench.report.plots import variant_palette
from vaebench.report.plots.likelihood_quality import likelihood_quality_figure, pareto_front
from vaebench.report.plots.registry import PlotContext

PROTOCOL = {
    "id": "a1b2c3d4e5f6",
    "extractor": {"fid": "inception-v3-compat", "sha256": "f00d"},
    "resize": "tf1-bilinear-uint8",
    "data": {"crop": 148, "size": 64},
    "num_samples": 10000,
    "kid_subset_size": 1000,
    "weights": "pretrained",
}
# bits/dim and FID by (perceptual level, seed): the perceptual loss buys a lower FID with bits/dim
POINTS = {
    ("off", 0): (4.00, 80.0),
    ("off", 1): (4.10, 84.0),
    ("on", 0): (4.40, 55.0),
    ("on", 1): (4.30, 61.0),
}


def quality_run(
    root: Path,
    level: str,
    seed: int,
    bpd: float,
    fid: float,
    *,
    protocol: dict[str, Any] = PROTOCOL,
    comparable: bool = True,
    more: dict[str, float] | None = None,
) -> Path:
    """A finished run of the perceptual on/off grid with the quality keys and its protocol record (and
    the metrics in `more`)."""
    metrics = {
        "bpd_elbo": bpd,
        "kl": 30.0 + seed,
        "fid": fid,
        "kid_mean": fid / 1000,
        "kid_std": 0.002,
        "recall": 0.3 + 0.01 * seed + (0.1 if level == "off" else 0.0),
        "quality_protocol": protocol["id"],
        "quality_comparable": comparable,
        "quality_samples": protocol["num_samples"],
        "quality_reference_images": 2000,
        **(more or {}),
    }
    folder = make_run(root, f"perceptual-{level}", seed, {"perceptual": level}, metrics)
    settings = {"split": "test", "num_images": 2000, "checkpoint": "best", "iw_samples": 100}
    settings |= {"active_threshold": 0.01, "quality": protocol}
    record = {"settings": settings, "metrics": metrics, "per_dim": {}}
    (folder / "eval" / "test.json").write_text(json.dumps({"latest": "k", "results": {"k": record}}))
    return folder


@pytest.fixture
def quality_grid(tmp_path: Path) -> Path:
    for (level, seed), (bpd, fid) in POINTS.items():
        quality_run(tmp_path / "runs", level, seed, bpd, fid)
    return tmp_path / "runs"


def test_a_report_of_runs_without_quality_scores_shows_no_quality_column(tmp_path: Path) -> None:
    for level, bpd in (("off", 4.0), ("on", 4.4)):
        for seed in (0, 1):
            make_run(tmp_path / "runs", f"perceptual-{level}", seed, {"perceptual": level}, {"bpd_elbo": bpd})

    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figures=False)

    variants = pd.read_csv(out / "tables" / "variants.csv")
    assert not [c for c in variants.columns if c.startswith(("fid", "kid", "precision", "lpips", "psnr"))]
    assert "quality_comparable" not in variants
    assert "FID" not in (out / "tables" / "variants.md").read_text()
    assert "FID" not in (out / "tables" / "effects.md").read_text()
    assert set(pd.read_csv(out / "tables" / "effects.csv")["metric"]) == {"bpd_elbo"}
    report = (out / "report.md").read_text()
    assert "Quality scores" not in report and "Reading the quality scores" not in report
    assert not (out / "plots" / "likelihood_quality.png").exists()

    # --rank-by is still any report metric of the registry: fid gives an empty column, no ranks
    fid_out = build_report([tmp_path / "runs"], out=tmp_path / "by-fid", figures=False, rank_by="fid")
    by_fid = pd.read_csv(fid_out / "tables" / "variants.csv")
    assert by_fid["fid_mean"].isna().all() and by_fid["rank"].isna().all()
    with pytest.raises(UserError, match="not a report metric"):
        build_report([tmp_path / "runs"], out=tmp_path / "x", figures=False, rank_by="kid_std")


def test_ranking_by_fid_puts_the_lowest_fid_first(quality_grid: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["report", str(quality_grid), "--out", str(tmp_path / "report"), "--no-figures", "--rank-by", "fid"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output

    variants = pd.read_csv(tmp_path / "report" / "tables" / "variants.csv")
    assert list(variants["variant"]) == ["perceptual-on", "perceptual-off"]  # FID 58 before 82
    assert variants["fid_mean"].tolist() == pytest.approx([58.0, 82.0])
    assert variants["fid_vs_best"].tolist() == pytest.approx([0.0, 24.0])
    assert variants["quality_comparable"].tolist() == [True, True]
    assert "variants, ranked by fid" in result.output and "58.00 ± 4.24" in result.output
    effects = pd.read_csv(tmp_path / "report" / "tables" / "effects.csv").set_index("metric")
    # per seed: on − off = 55 − 80 and 61 − 84: mean −24, over 2 seeds
    assert effects.loc["fid", "mean_diff"] == pytest.approx(-24.0)
    assert effects.loc["fid", "n_seeds"] == 2
    interactions_md = (tmp_path / "report" / "report.md").read_text()
    assert "FID at each level of each axis" in interactions_md


def test_scores_of_two_protocols_never_share_a_column_and_the_report_says_why(tmp_path: Path) -> None:
    """Seed 2 of both variants was evaluated with 2000 prior samples: another protocol (another id)."""
    root = tmp_path / "runs"
    for (level, seed), (bpd, fid) in POINTS.items():
        quality_run(root, level, seed, bpd, fid)
    fewer = {**PROTOCOL, "id": "0f0f0f0f0f0f", "num_samples": 2000}
    for level, bpd, fid in (("off", 4.05, 95.0), ("on", 4.35, 70.0)):
        quality_run(root, level, 2, bpd, fid, protocol=fewer)

    out = build_report([root], out=tmp_path / "report", figures=False)

    variants = pd.read_csv(out / "tables" / "variants.csv").set_index("variant")
    assert variants.loc["perceptual-on", "fid_mean"] == pytest.approx(58.0)  # seeds 0 and 1 only
    assert variants.loc["perceptual-on", "fid_n"] == 2 and variants.loc["perceptual-on", "n"] == 3
    assert variants.loc["perceptual-on", "bpd_elbo_n"] == 3  # bits/dim do not depend on the protocol
    assert "58.00 ± 4.24 (n=2)" in (out / "tables" / "variants.md").read_text()
    effects = pd.read_csv(out / "tables" / "effects.csv").set_index("metric")
    assert effects.loc["fid", "mean_diff"] == pytest.approx(-24.0) and effects.loc["fid", "n_seeds"] == 2
    assert effects.loc["bpd_elbo", "n_seeds"] == 3
    seed2 = pd.read_csv(out / "tables" / "runs.csv").set_index("label").loc["grid/perceptual-on/seed2"]
    assert seed2["fid"] == 70.0 and seed2["quality_protocol"] == "0f0f0f0f0f0f"  # kept in runs.csv

    report = (out / "report.md").read_text()
    note = next(line for line in report.splitlines() if line.startswith("Quality scores left out"))
    assert "`grid/perceptual-off/seed2`, `grid/perceptual-on/seed2` (2 runs)" in note
    assert "`0f0f0f0f0f0f`, not `a1b2c3d4e5f6` like the 4 runs shown" in note
    assert "num_samples = 10000 in the runs shown, 2000 in these" in note and "crop" not in note
    assert note in (out / "report.html").read_text().replace("<code>", "`").replace("</code>", "`")
    assert "2 runs of another protocol are left out" in report


def test_random_weight_scores_say_not_comparable_wherever_they_are_shown(tmp_path: Path) -> None:
    random = {**PROTOCOL, "id": "cafecafecafe", "weights": "random"}
    for (level, seed), (bpd, fid) in POINTS.items():
        quality_run(tmp_path / "runs", level, seed, bpd, fid, protocol=random, comparable=False)

    result = CliRunner().invoke(
        app,
        ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--no-figures"],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output

    out = tmp_path / "report"
    header = (out / "tables" / "variants.md").read_text().splitlines()[0]
    assert "| FID (not comparable) |" in header
    assert "| recall (not comparable) |" in header
    assert "| bits/dim (−ELBO) |" in header  # the likelihood is not a quality score
    assert "Δ FID (not comparable)" in (out / "tables" / "effects.md").read_text()
    assert "not comparable (random weights)" in (out / "tables" / "variants.tex").read_text()
    report = (out / "report.md").read_text()
    opening = report.split("## ", 1)[0]
    assert "not comparable (random weights), made with random extractor weights" in opening
    results = report.split("## Results by variant", 1)[1].split("\n## ", 1)[0]
    # the report shows the quality scores in a table of their own, the note right above it
    likelihood, quality = results.split("Quality scores not comparable (random weights)", 1)
    assert "| rank | perceptual | n | bits/dim (−ELBO) | vs best |" in likelihood and "FID" not in likelihood
    first_row = quality.index("| perceptual | n | FID (not comparable) |")
    assert quality.index("Sample and reconstruction quality") < first_row
    assert "FID not comparable (random weights)." in results  # the plane's caption
    assert "not comparable (random weights)" in (out / "report.html").read_text()
    assert "FID (not comparable)" in result.output  # the table the command prints

    rs = load_runs([tmp_path / "runs"])
    ctx = PlotContext(runs=rs, palette=variant_palette(rs.variants), quality_not_comparable=True)
    fig = likelihood_quality_figure(ctx)
    assert fig is not None and "not comparable (random weights)" in fig.get_suptitle()


def test_the_pareto_front_is_the_runs_no_other_run_beats_on_both_axes() -> None:
    points = [
        (4.0, 80.0),  # lowest bits/dim: on the front
        (4.1, 84.0),  # dominated by (4.0, 80)
        (4.4, 55.0),  # on the front
        (4.3, 61.0),  # on the front: between the two
        (4.4, 58.0),  # same bits/dim as (4.4, 55), worse FID: dominated
        (4.6, 55.0),  # same FID as (4.4, 55), worse bits/dim: dominated
        (5.0, 40.0),  # lowest FID: on the front
        (float("nan"), 1.0),  # not evaluated: never on it
        (4.3, 61.0),  # equal to a front point: on it too (neither is better)
    ]
    assert pareto_front(points) == [0, 3, 8, 2, 6]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_the_likelihood_quality_plane_is_drawn_with_fid_and_skipped_without(
    quality_grid: Path, tmp_path: Path
) -> None:
    rs = load_runs([quality_grid])
    palette = variant_palette(rs.variants)
    fig = likelihood_quality_figure(PlotContext(runs=rs, palette=palette, order=rs.variants))
    assert fig is not None
    ax = fig.axes[0]
    dots, rings = ax.collections[0], ax.collections[-1]
    assert dots.get_facecolor()[0][:3] == pytest.approx(palette["perceptual-off"])
    # front: (4.0, 80) off seed 0, (4.3, 61) on seed 1, (4.4, 55) on seed 0; (4.1, 84) is dominated
    assert rings.get_offsets().tolist() == [[4.0, 80.0], [4.3, 61.0], [4.4, 55.0]]
    assert "bpd_elbo" in ax.get_xlabel() and "FID" in ax.get_ylabel()
    assert "not comparable" not in fig.get_suptitle()

    out = build_report([quality_grid], out=tmp_path / "report", figures=False)
    assert (out / "plots" / "likelihood_quality.png").is_file()
    assert "(plots/likelihood_quality.png)" in (out / "report.md").read_text()

    without = tmp_path / "plain"
    for level in ("off", "on"):
        make_run(without, f"perceptual-{level}", 0, {"perceptual": level}, {"bpd_elbo": 4.0})
    rs = load_runs([without])
    assert likelihood_quality_figure(PlotContext(runs=rs, palette=variant_palette(rs.variants))) is None


@pytest.mark.skipif(_browser() is None, reason="needs a headless Chromium or Chrome")
def test_the_quality_scores_get_a_table_of_their_own_that_fits_a_1400_px_browser_window(
    tmp_path: Path,
) -> None:
    """Every metric, random weights (the longest headers), ranked by FID: no table runs past the page."""
    random = {**PROTOCOL, "id": "cafecafecafe", "weights": "random"}
    for (level, seed), (bpd, fid) in POINTS.items():
        more = {"bpd_iw": bpd - 0.1, "recon_bpd": bpd - 0.2, "active_units": 28.0 + seed, "psnr": 20.0 + seed}
        more |= {"mutual_info": 5.0 + seed, "recon_fid": fid / 2, "precision": 0.5 + seed / 100}
        more |= {"lpips": 0.2 + seed / 100, "ssim": 0.6 + seed / 100}
        quality_run(tmp_path / "runs", level, seed, bpd, fid, protocol=random, comparable=False, more=more)
    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figures=False, rank_by="fid")
    assert overflowing_tables(out) == []
