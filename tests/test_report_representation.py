"""The report's representation section: bits/dim against MIG (constructed run folders with known
numbers), and the latent traversal of the highest-MIG run (a tiny real training on discrete synthetic
faces, with a MIG written into its summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.collections import PathCollection
from PIL import Image

from test_report import QUICKSTART, TINY, make_run
from vaebench.config.experiments import load_experiment, select
from vaebench.data.synthetic import FACTOR_NAMES
from vaebench.evaluation.traversal import traversal_grid, unit_factor_information
from vaebench.launch.runner import plan_runs, run_queue
from vaebench.report import build_report
from vaebench.report.load import load_runs
from vaebench.report.plots import variant_palette
from vaebench.report.plots.likelihood_mig import likelihood_mig_figure
from vaebench.report.plots.registry import PlotContext
from vaebench.report.traversals import highest_mig_run, traversal_figure
from vaebench.report.writeup import PADDING, load_model
from vaebench.train.loop import SilentReporter

# (beta, seed) -> (bits/dim, MIG): a larger beta buys MIG with bits/dim
POINTS = {
    ("1", 0): (4.00, 0.05),
    ("1", 1): (4.10, 0.09),
    ("8", 0): (4.60, 0.30),
    ("8", 1): (4.50, 0.36),
}


@pytest.fixture
def mig_grid(tmp_path: Path) -> Path:
    for (beta, seed), (bpd, mig) in POINTS.items():
        make_run(tmp_path / "runs", f"beta-{beta}", seed, {"beta": beta}, {"bpd_elbo": bpd, "mig": mig})
    return tmp_path / "runs"


def test_bits_per_dim_against_mig_has_one_point_per_run_in_its_variants_colour(mig_grid: Path) -> None:
    rs = load_runs([mig_grid])
    palette = variant_palette(rs.variants)
    fig = likelihood_mig_figure(PlotContext(runs=rs, palette=palette, order=rs.variants))
    assert fig is not None
    ax = fig.axes[0]
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]  # the scatters, not the bars
    assert len(dots) == 2
    points = sorted(tuple(p) for c in dots for p in c.get_offsets().tolist())
    assert points == sorted(POINTS.values())
    assert dots[0].get_facecolor()[0][:3] == pytest.approx(palette["beta-1"])
    assert dots[1].get_facecolor()[0][:3] == pytest.approx(palette["beta-8"])
    assert "bpd_elbo" in ax.get_xlabel() and "higher is better" in ax.get_ylabel()


def test_the_representation_section_appears_only_when_runs_have_mig(mig_grid: Path, tmp_path: Path) -> None:
    out = build_report([mig_grid], out=tmp_path / "report", figures=False)
    text = (out / "report.md").read_text()
    assert (out / "plots" / "likelihood_mig.png").is_file()
    assert "## Representation" in text and "(plots/likelihood_mig.png)" in text
    assert text.index("## Latent usage") < text.index("## Representation")

    plain = tmp_path / "plain"
    for beta in ("1", "8"):
        make_run(plain, f"beta-{beta}", 0, {"beta": beta}, {"bpd_elbo": 4.0})
    rs = load_runs([plain])
    assert likelihood_mig_figure(PlotContext(runs=rs, palette=variant_palette(rs.variants))) is None
    out = build_report([plain], out=tmp_path / "plain_report", figures=False)
    assert "Representation" not in (out / "report.md").read_text()
    assert not (out / "plots" / "likelihood_mig.png").exists()


def test_a_unit_is_matched_with_the_factor_it_encodes_even_a_circular_one_as_a_cosine() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(6, (2000, 3), generator=g)  # factor 0 circular (k/6 of a turn), 1 and 2 plain
    angle = codes[:, 0].double() / 6 * 2 * torch.pi
    mu = torch.stack([angle.cos(), codes[:, 2].double() + 0.01 * torch.randn(2000, generator=g).double()], 1)
    scores = unit_factor_information(mu.float(), codes)  # (2, 3)
    assert scores.argmax(dim=1).tolist() == [0, 2]
    assert 0.5 < scores[0, 0] < 0.8  # cos tells the angle up to its sign: 4 of 6 levels, log 4 / log 6
    assert scores[1, 2] == pytest.approx(1.0)
    assert float(scores[:, 1].max()) < 0.02  # nothing encodes factor 1


def test_the_highest_mig_run_is_the_one_traversed(mig_grid: Path) -> None:
    rec = highest_mig_run(load_runs([mig_grid]))
    assert rec is not None and (rec.variant, rec.seed) == ("beta-8", 1)


@pytest.fixture(scope="module")
def discrete_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny quickstart run on discrete synthetic faces (3 levels), trained and evaluated, with a MIG."""
    runs = tmp_path_factory.mktemp("representation") / "runs"
    overrides = {**TINY, "data.factor_levels": 3, "seeds": [0]}
    plan = plan_runs(select(load_experiment(QUICKSTART, overrides), ["isotropic"]), runs)
    results = run_queue(plan, device="cpu", force=False, reporter=SilentReporter())
    assert [r.status for r in results] == ["finished"]
    folder = next(runs.glob("*/*/seed0"))
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "test/mig": 0.25}))
    return runs


def test_the_traversal_has_one_labelled_row_per_active_unit_ordered_by_factor(
    discrete_run: Path, tmp_path: Path
) -> None:
    rec = highest_mig_run(load_runs([discrete_run]))
    assert rec is not None and rec.local_dir is not None
    active = [u for u, on in enumerate(rec.per_dim["active"]) if on]
    assert active, "the tiny run should have an active unit for this test to mean something"
    paths, rows = traversal_figure(rec, tmp_path / "t.png", steps=5, scale=1, images=200)
    assert sorted(r.unit for r in rows) == active
    factors = [FACTOR_NAMES.index(r.factor) for r in rows]
    assert factors == sorted(factors)
    assert all(0 <= r.information <= 1 for r in rows)
    assert rows[0].label == f"z{rows[0].unit} ~ {rows[0].factor}"
    grid = Image.open(paths[0])
    tile = 16
    assert grid.height == PADDING + len(rows) * (tile + PADDING)  # one row per active unit
    assert paths[1].suffix == ".pdf" and paths[1].is_file()


def test_holding_a_unit_at_its_reference_value_decodes_the_reference(discrete_run: Path) -> None:
    folder = next(discrete_run.glob("*/*/seed0"))
    model, _ = load_model(folder, torch.device("cpu"))
    z_ref = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(0))
    values = torch.stack([z_ref[[0]].repeat(3), torch.tensor([-1.0, 0.0, 1.0])])  # rows: unit 0, unit 1
    images = traversal_grid(model, z_ref, [0, 1], values)  # (6, 3, 16, 16)
    reference = model.decode(z_ref[None])[0].clamp(0, 1)
    assert torch.allclose(images[:3], reference.expand(3, -1, -1, -1), atol=1e-6)
    moved = z_ref.clone()
    moved[1] = 1.0
    assert torch.allclose(images[5], model.decode(moved[None])[0][0].clamp(0, 1), atol=1e-6)


def test_the_report_shows_the_traversal_of_the_highest_mig_run(discrete_run: Path, tmp_path: Path) -> None:
    out = build_report([discrete_run], out=tmp_path / "report", figure_images=2, figure_scale=1)
    text = (out / "report.md").read_text()
    section = text[text.index("## Representation") :]
    assert (
        "(figures/latent_traversal.png)" in section and (out / "figures" / "latent_traversal.pdf").is_file()
    )
    assert "Latent traversals of the highest-MIG run" in section and "MIG 0.250" in section
    assert any(f"| {name}" in section for name in FACTOR_NAMES)  # the unit table names the factors
