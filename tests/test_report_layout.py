"""The report stays readable at 16 variants x seeds, and a plot is one registry entry (issues 11, 13).

Run folders are constructed (no training) with `make_run` from test_report.py: a 2 x 2 x 2 x 2 grid
of 16 long-named variants with 2 seeds, whose numbers are chosen so that ties and sparse validation
curves are known in advance.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from rich.console import Console
from typer.testing import CliRunner

from test_report import make_run
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.launch.workers import Board, Job
from vaebench.report import build_report
from vaebench.report.load import load_runs
from vaebench.report.plots import discover, registry, variant_palette
from vaebench.report.plots.bits_per_dim import bits_per_dim_figure
from vaebench.report.plots.curves import training_curves_figure
from vaebench.report.plots.latent_usage import latent_usage_figure
from vaebench.report.plots.registry import CURVES, PlotContext, plot, save, style
from vaebench.report.tables import latex_escape, rank_variants, variant_table


def _section(markdown: str, heading: str) -> str:
    """The text of one level-2 section of report.md."""
    start = markdown.index(f"## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


@pytest.fixture
def two_variants(tmp_path: Path) -> Path:
    for decoder, bpd in (("isotropic", 5.0), ("variance", 4.5)):
        for seed in (0, 1):
            make_run(tmp_path / "runs", f"decoder-{decoder}", seed, {"decoder": decoder}, {"bpd_elbo": bpd})
    return tmp_path / "runs"


@pytest.fixture
def grid_runs_2x2(tmp_path: Path) -> Path:
    """decoder x beta, 2 seeds: bits/dim 5.0 + 0.5 (variance) + 0.1 (beta 4) + 0.01 * seed."""
    for decoder in ("isotropic", "variance"):
        for beta in ("1", "4"):
            for seed in (0, 1):
                bpd = 5.0 + 0.5 * (decoder == "variance") + 0.1 * (beta == "4") + 0.01 * seed
                axes = {"decoder": decoder, "beta": beta}
                make_run(tmp_path / "runs", f"decoder-{decoder}_beta-{beta}", seed, axes, {"bpd_elbo": bpd})
    return tmp_path / "runs"


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, registry.Plot]:
    """A copy of the registry for this test, so that plots registered here do not leak into others."""
    plots = dict(registry.PLOTS)
    monkeypatch.setattr(registry, "PLOTS", plots)
    return plots


# ----------------------------------------------------------------------------- the plot registry


def test_a_registered_plot_is_drawn_and_shown_in_its_section_with_its_caption(
    two_variants: Path, tmp_path: Path, own_registry: dict[str, registry.Plot]
) -> None:
    @plot(name="toy", section=CURVES, caption="A toy plot of the number of runs.")
    def toy(ctx: PlotContext, stem: Path) -> list[Path]:
        with style():
            fig = Figure(figsize=(3, 2))
            fig.subplots().bar(["runs"], [len(ctx.runs.finished)])
            return save(fig, stem)

    @plot(name="toy_elsewhere", section="Toy section", caption="A plot in a section of its own.")
    def toy_elsewhere(ctx: PlotContext, stem: Path) -> list[Path]:
        return toy(ctx, stem)

    @plot(name="nothing", section=CURVES, caption="never shown", missing="The toy had nothing to draw.")
    def nothing(ctx: PlotContext, stem: Path) -> None:
        return None

    out = build_report([two_variants], out=tmp_path / "report", figures=False)

    assert (out / "plots" / "toy.png").is_file() and (out / "plots" / "toy.pdf").is_file()
    markdown = (out / "report.md").read_text()
    curves = _section(markdown, "Training curves")
    assert "![A toy plot of the number of runs.](plots/toy.png)" in curves
    assert "The toy had nothing to draw." in curves and "never shown" not in markdown
    assert "![A plot in a section of its own.](plots/toy_elsewhere.png)" in _section(markdown, "Toy section")
    html = (out / "report.html").read_text()
    assert "<figcaption>A toy plot of the number of runs.</figcaption>" in html
    assert '<a href="#toy-section">Toy section</a>' in html  # in the table of contents


def test_a_plot_module_dropped_into_the_package_is_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_registry: dict[str, registry.Plot]
) -> None:
    """Adding a plot is one new file: `discover` imports every module on the package's path."""
    import vaebench.report.plots as package

    folder = tmp_path / "more_plots"
    folder.mkdir()
    (folder / "my_new_plot.py").write_text(
        textwrap.dedent(
            """
            from vaebench.report.plots.registry import RESULTS, plot

            @plot(name="my_new_plot", section=RESULTS, caption="Mine.")
            def draw(ctx, stem):
                return None
            """
        )
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, "vaebench.report.plots.my_new_plot", raising=False)

    assert "my_new_plot" in discover()

    assert own_registry["my_new_plot"].section == "Results by variant"
    sys.modules.pop("vaebench.report.plots.my_new_plot", None)


def test_the_built_in_plots_are_registered_under_their_file_names() -> None:
    assert {"curves", "bits_per_dim", "effects", "latent_usage", "beta_sweep"} <= set(registry.PLOTS)
    sections = {p.name: p.section for p in registry.PLOTS.values()}
    assert sections["bits_per_dim"] == "Results by variant" and sections["curves"] == "Training curves"
    assert [p.name for p in registry.registered("Latent usage")][:2] == ["latent_usage", "beta_sweep"]


# ----------------------------------------------------------------------------- tables


def test_curves_csv_carries_one_column_per_axis_like_runs_csv(grid_runs_2x2: Path, tmp_path: Path) -> None:
    out = build_report([grid_runs_2x2], out=tmp_path / "report", figures=False)
    curves = pd.read_csv(out / "tables" / "curves.csv", dtype={"beta": str})
    assert list(curves.columns) == ["run", "variant", "seed", "decoder", "beta", "step", "metric", "value"]
    row = curves[(curves["variant"] == "decoder-variance_beta-4") & (curves["seed"] == 1)].iloc[0]
    assert (row["decoder"], row["beta"]) == ("variance", "4")
    runs = pd.read_csv(out / "tables" / "runs.csv", dtype={"beta": str}).set_index("run")
    levels = runs.loc[curves["run"], ["decoder", "beta"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(levels, curves[["decoder", "beta"]])


# ----------------------------------------------------------------------------- run status


def test_a_run_trained_to_its_last_step_without_done_is_evaluating_not_stopped(tmp_path: Path) -> None:
    """Training logs its last step, then evaluates, then writes DONE: in between, the run is not a
    stopped run to resume but one in (or interrupted in) its final evaluation."""
    rows = [{"step": s, "train/loss": 10.0 - s, "epoch": s / 4} for s in (4, 8)]
    axes = {"variant": "a"}
    spec = {"train": {"steps": 8}}
    make_run(tmp_path / "runs", "a", 0, axes, {}, spec=spec, curves=rows, done=False)
    make_run(tmp_path / "runs", "a", 1, axes, {}, spec=spec, curves=rows[:1], done=False)
    by_epochs = {"train": {"epochs": 2.0}}
    make_run(tmp_path / "runs", "a", 2, axes, {}, spec=by_epochs, curves=rows, done=False)

    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figures=False)

    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("seed")
    assert runs.loc[0, "status"] == "evaluating"
    assert runs.loc[0, "reason"] == (
        "trained to its last step (8 of 8), no DONE marker yet: evaluating (or the evaluation was "
        "interrupted: rerun `vaebench run` to finish it)"
    )
    assert runs.loc[2, "status"] == "evaluating"  # 2 epochs of 4 steps: epoch 2.0 logged
    assert runs.loc[1, "status"] == "unfinished" and "stopped at step 4 of 8" in runs.loc[1, "reason"]
    report = (out / "report.md").read_text()
    assert "3 runs (2 evaluating, 1 unfinished)" in report
    assert '<td class="status-evaluating">evaluating</td>' in (out / "report.html").read_text()


# ----------------------------------------------------------------------------- the live progress table


def test_the_progress_table_keeps_status_and_time_whole_at_180_columns(tmp_path: Path) -> None:
    """16 variants of a 4-axis grid with long names: at 180 columns the run names, device, status and
    time are shown whole (only the last output may be cut), and no line is wider than the console."""
    console = Console(width=180, record=True)
    board = Board(console, total=32, plain=True)
    names = [
        f"decoder-{d}_perceptual-{p}_anneal-{a}_batch-{b}+sweep-0123456789/seed{s}"
        for d in ("isotropic", "variance")
        for p in ("off", "on")
        for a in ("linear", "cosine")
        for b in ("16", "32")
        for s in (0,)
    ]
    for name in names[:8]:
        board.ended(name, "interrupted", "stopped by the controller after its checkpoint; " * 3)
    log = tmp_path / "run.log"
    log.write_text("step 1200/25000 loss 6.046e+04  kl 193  beta 1  val bpd 6.9671  img/s 122\n")
    for name in names[8:]:
        board.started(Job(name=name, argv=[], log=log), "cuda:0")

    console.export_text()  # drop the plain event lines printed so far
    console.print(board._render())

    lines = console.export_text().splitlines()
    assert lines[0] == "runs of 32: 8 interrupted, 8 running"
    assert lines[1].split() == ["run", "device", "status", "time", "last", "output"]
    rows = lines[2:]
    assert len(rows) == 16 and all(len(line) <= 180 for line in lines)
    for name, line in zip(names, rows, strict=True):
        status = "interrupted" if names.index(name) < 8 else "running"
        device = "-" if status == "interrupted" else "cuda:0"
        assert line.startswith(name + " ") and f" {device} " in line
        assert re.search(rf"  {status} +\d+ s  ", line), line


# ----------------------------------------------------------------------------- the variants table


def test_the_variants_table_has_axis_columns_and_marks_ties_with_the_best(tmp_path: Path) -> None:
    """best: 5.00 ± 0.10; a difference of 0.05 is within that spread (≈), one of 0.50 is not."""
    values = {
        ("isotropic", "1"): 5.0,
        ("isotropic", "4"): 5.05,
        ("variance", "1"): 5.5,
        ("variance", "4"): 5.6,
    }
    for (decoder, beta), bpd in values.items():
        for seed, noise in ((0, -0.0707107), (1, 0.0707107)):  # sd over seeds: 0.1
            axes = {"decoder": decoder, "beta": beta}
            make_run(
                tmp_path / "runs", f"decoder-{decoder}_beta-{beta}", seed, axes, {"bpd_elbo": bpd + noise}
            )

    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figures=False)

    lines = (out / "tables" / "variants.md").read_text().splitlines()
    # only bits/dim (−ELBO) was evaluated: no column of dashes for the metrics no run has
    assert lines[0] == "| rank | decoder | beta | n | bits/dim (−ELBO) | vs best |"
    assert "decoder-isotropic_beta-1" not in "\n".join(lines)  # the axis columns say it
    assert lines[2].startswith("| 1 | isotropic | 1 | 2 | 5.0000 ± 0.1000 | best |")
    assert lines[3].startswith("| 2 | isotropic | 4 | 2 | 5.0500 ± 0.1000 | ≈ +0.0500 |")
    assert lines[4].startswith("| 3 | variance | 1 | 2 | 5.5000 ± 0.1000 | +0.5000 |")
    numeric = pd.read_csv(out / "tables" / "variants.csv").set_index("variant")
    assert list(numeric["bpd_elbo_tied"]) == [False, True, False, False]
    assert numeric.loc["decoder-variance_beta-4", "bpd_elbo_vs_best"] == pytest.approx(0.6)
    assert "≈ marks a difference within the seed spread" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert '<td class="num">5.0500<span class="interval">± 0.1000</span></td>' in html  # sd below
    assert '<td class="num">≈ +0.0500</td>' in html


@pytest.fixture
def one_seed_pair(tmp_path: Path) -> Path:
    """The quickstart's shape: two decoders, one seed, every report metric, so each effect in the effects
    table reads "+0.6113 (1 seed, no interval)"."""
    for decoder, shift in (("isotropic", 0.0), ("variance", 1.0)):
        metrics = {
            "bpd_elbo": 8.1463 + 0.6113 * shift, "bpd_iw": 8.1243 + 0.62 * shift, "kl": 5.88 + 1.58 * shift,
            "active_units": 4.0, "mutual_info": 2.292 - 1.036 * shift, "recon_bpd": 8.1353 + 0.6083 * shift,
            "psnr": 15.29 - 0.68 * shift,
        }  # fmt: skip
        make_run(tmp_path / "runs", decoder, 0, {"variant": decoder}, metrics)
    return tmp_path / "runs"


def _effects_cells(html: str) -> list[str]:
    """The numeric cells of report.html's effects table, as HTML."""
    section = html[html.index('id="effect-of-each-ablation-axis"') :]
    table = section[section.index("<table>") : section.index("</table>")]
    return re.findall(r'<td class="num">(.*?)</td>', table)


def test_an_effect_without_an_interval_wraps_below_its_estimate_so_the_table_fits_the_page(
    one_seed_pair: Path, tmp_path: Path
) -> None:
    """At 1400 px the quickstart's effects table ran past the right edge: 7 cells of an unbreakable
    "+0.6113 (1 seed, no interval)" are 1700 px. Only the estimate may not break; "(1 seed, no interval)"
    or "[lo, hi]" goes on a line of its own that wraps."""
    out = build_report([one_seed_pair], out=tmp_path / "report", figures=False)
    html = (out / "report.html").read_text()
    cells = [c for c in _effects_cells(html) if "interval" in c]
    assert len(cells) == 6  # active units is constant: a note, not an effect
    assert '+0.6113<span class="interval wrap">(1 seed, no interval)</span>' in cells
    unbreakable = [re.sub(r'<span class="interval wrap">.*?</span>', "", c) for c in cells]
    assert max(len(text) for text in unbreakable) <= len("+0.6113")
    assert ".interval.wrap { white-space: normal; }" in html


def _browser() -> str | None:
    return next(
        (b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None
    )


def overflowing_tables(out: Path) -> list[int]:
    """The widths of the tables of out/report.html that run past their column in a 1400 px Chromium window."""
    probe = (
        "<script>document.body.dataset.overflow = JSON.stringify([...document.querySelectorAll("
        "'.table-wrap')].filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.scrollWidth));</script>"
    )
    page = out / "probe.html"
    page.write_text((out / "report.html").read_text().replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    dom = subprocess.run(
        [str(_browser()), *flags, "--window-size=1400,2000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r'data-overflow="([^"]*)"', dom)
    assert found is not None, dom[:500]
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(_browser() is None, reason="needs a headless Chromium or Chrome")
def test_no_report_table_runs_past_the_page_in_a_1400_px_browser_window(
    one_seed_pair: Path, tmp_path: Path
) -> None:
    """Laid out by a real browser: each table fits its 1280 px column (or scrolls inside it, never past)."""
    out = build_report([one_seed_pair], out=tmp_path / "report", figures=False)
    assert overflowing_tables(out) == []


def test_a_list_of_named_variants_keeps_the_variant_column(two_variants: Path, tmp_path: Path) -> None:
    make_run(two_variants, "baseline", 0, {"variant": "baseline"}, {"bpd_elbo": 1.0}, experiment="named")
    out = build_report([two_variants], "named", tmp_path / "report", figures=False)
    assert (out / "tables" / "variants.md").read_text().startswith("| rank | variant | n |")


def test_the_latex_tables_shrink_to_the_page_width(grid_runs_2x2: Path, tmp_path: Path) -> None:
    out = build_report([grid_runs_2x2], out=tmp_path / "report", figures=False)
    tex = (out / "tables" / "variants.tex").read_text()
    begin, tabular = tex.index(r"\begin{adjustbox}{max width=\linewidth}"), tex.index(r"\begin{tabular}")
    assert begin < tabular < tex.index(r"\end{tabular}") < tex.index(r"\end{adjustbox}")
    assert r"\approx" in latex_escape("≈ +0.0500")


def test_the_perceptual_share_of_the_loss_is_shown_when_a_run_has_a_perceptual_term(tmp_path: Path) -> None:
    """share = perceptual_weight * train/perceptual / train/loss at the last logged training row."""
    for level, weight, perceptual in (("off", 0.0, None), ("on", 50.0, 0.2)):
        for seed in (0, 1):
            rows = [{"step": s, "train/loss": 20.0 + seed * 5.0 + (10 - s)} for s in (5, 10)]
            if perceptual is not None:
                for row in rows:
                    row["train/perceptual"] = perceptual
            spec = {"loss": {"perceptual_weight": weight, "vgg_weights": "random"}}
            axes = {"perceptual": level}
            make_run(
                tmp_path / "runs",
                f"perceptual-{level}",
                seed,
                axes,
                {"bpd_elbo": 5.0},
                spec=spec,
                curves=rows,
            )

    out = build_report([tmp_path / "runs"], out=tmp_path / "report", figures=False)

    table = pd.read_csv(out / "tables" / "variants.csv").set_index("variant")
    shares = [100 * 50 * 0.2 / 20.0, 100 * 50 * 0.2 / 25.0]  # percent, seed 0 and seed 1: 50, 40
    assert table.loc["perceptual-on", "perceptual_share_mean"] == pytest.approx(45.0)
    assert table.loc["perceptual-on", "perceptual_share_std"] == pytest.approx(np.std(shares, ddof=1))
    assert table.loc["perceptual-off", "perceptual_share_mean"] == 0.0
    variants_md = (out / "tables" / "variants.md").read_text()
    assert "perceptual share (% of loss) |" in variants_md.splitlines()[0]
    assert "| 45 ± 7.07 |" in variants_md and "| 0 ± 0 |" in variants_md
    assert "Perceptual term (loss.perceptual_weight = 0, 50)" in (out / "report.md").read_text()


def test_no_perceptual_column_without_a_perceptual_term(grid_runs_2x2: Path, tmp_path: Path) -> None:
    out = build_report([grid_runs_2x2], out=tmp_path / "report", figures=False)
    assert "perceptual" not in (out / "tables" / "variants.md").read_text()
    assert "Perceptual term" not in (out / "report.md").read_text()


# ----------------------------------------------------------------------------- plots at 16 variants


@pytest.fixture
def grid16(tmp_path: Path) -> Path:
    """16 variants with long names, 2 seeds: decoder x perceptual x anneal x batch, where anneal has the
    most levels (3, with the isotropic decoder only); validation every 10 of 40 steps (4 points).
    Without an experiment file the levels sort by name: anneal cosine, linear, none."""
    levels = {
        "decoder": ("isotropic", "variance"),
        "perceptual": ("off", "on"),
        "anneal": ("linear", "cosine", "none"),
        "batch": ("16", "32"),
    }
    root = tmp_path / "runs"
    i = 0
    for decoder in levels["decoder"]:
        for perceptual in levels["perceptual"]:
            for anneal in levels["anneal"][: 3 if decoder == "isotropic" else 1]:
                for batch in levels["batch"]:
                    axes = {"decoder": decoder, "perceptual": perceptual, "anneal": anneal, "batch": batch}
                    name = "_".join(f"{k}-{v}" for k, v in axes.items())
                    i += 1
                    for seed in (0, 1):
                        rows = [
                            {"step": s, "train/loss": 100.0 - s + i, "train/kl": 5.0}
                            | ({"val/bpd_elbo": 4.0 - s / 100} if s % 10 == 0 else {})
                            for s in range(2, 42, 2)
                        ]
                        bpd = 4.0 + 0.01 * i + 0.001 * seed
                        make_run(root, name, seed, axes, {"bpd_elbo": bpd}, curves=rows)
    return root


def _context(rs: Any, group_by: str | None = None) -> PlotContext:
    table = rank_variants(variant_table(rs), "bpd_elbo")
    ranks = {r.variant: int(r.rank) for r in table.itertuples() if pd.notna(r.rank)}
    return PlotContext(rs, variant_palette(rs.variants), list(table["variant"]), ranks, group_by=group_by)


def test_training_curves_are_coloured_by_the_axis_with_the_most_levels_and_styled_by_another(
    grid16: Path,
) -> None:
    rs = load_runs([grid16])
    assert len(rs.variants) == 16

    fig = training_curves_figure(_context(rs))

    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [
        "anneal = cosine",
        "anneal = linear",
        "anneal = none",
        "decoder = isotropic",
        "decoder = variance",
    ]
    assert legend.get_title().get_text() == "colour: anneal, line style: decoder"
    loss = fig.axes[0]
    # one line per (anneal, decoder) combination that has runs: 3 with isotropic, 1 (linear) with variance
    assert len(loss.get_lines()) == 4
    styles = {(line.get_color(), line.get_linestyle()) for line in loss.get_lines()}
    assert len(styles) == 4


def test_group_by_chooses_the_colour_axis_and_variant_gives_one_line_per_variant(grid16: Path) -> None:
    rs = load_runs([grid16])
    fig = training_curves_figure(_context(rs, group_by="perceptual"))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["perceptual = off", "perceptual = on"]
    assert labels[2:] == ["anneal = cosine", "anneal = linear", "anneal = none"]  # the most levels left
    per_variant = training_curves_figure(_context(rs, group_by="variant"))
    assert len(per_variant.axes[0].get_lines()) == 16
    legend = per_variant.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == rs.variants
    assert legend._ncols < 16  # wrapped into rows, not one line of 16 long names
    with pytest.raises(UserError, match=r"--group-by 'colour' is not an axis of grid; choose one of decoder"):
        build_report([grid16], figures=False, group_by="colour")


def test_sparse_validation_curves_get_markers_and_their_point_count(grid16: Path) -> None:
    fig = training_curves_figure(_context(load_runs([grid16])))
    titles = {ax.get_ylabel(): ax.get_title() for ax in fig.axes if ax.get_visible()}
    assert titles["validation bits/dim (−ELBO)"] == "validation bits/dim (4 points per run)"
    assert titles["training loss (nats/image)"] == ""  # 20 points: a line, no markers
    val = next(ax for ax in fig.axes if ax.get_ylabel().startswith("validation"))
    assert all(line.get_marker() == "o" for line in val.get_lines())
    loss = fig.axes[0]
    assert all(line.get_marker() in (None, "None", "") for line in loss.get_lines())


def test_bits_per_dim_is_in_rank_order_with_a_marker_per_seed(grid16: Path) -> None:
    rs = load_runs([grid16])
    ctx = _context(rs)
    fig = bits_per_dim_figure(ctx)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == [f"{ctx.ranks[v]}. {v}" for v in ctx.order]
    assert ticks[0].startswith("1. decoder-isotropic_perceptual-off_anneal-linear_batch-16")  # lowest bpd
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 2 * 16  # every run, one marker shape per seed
    assert len({c.get_paths()[0].vertices.tobytes() for c in dots}) == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["seed 0", "seed 1", "mean ± 1 sd"]


def test_with_many_variants_each_variants_figures_are_folded(tmp_path: Path) -> None:
    """Five variants: the write-up section folds each one's figures into a <details> (the runs here
    have no checkpoint, so each says why it has none instead of failing the report)."""
    for i in range(5):
        make_run(tmp_path / "runs", f"v{i}", 0, {"variant": f"v{i}"}, {"bpd_elbo": 5.0 + i})

    out = build_report([tmp_path / "runs"], out=tmp_path / "report")

    html = (out / "report.html").read_text()
    writeup = html[html.index('<h2 id="write-up-figures">') :]
    assert writeup.count("<details><summary>") >= 5
    assert "<summary>v0: <code>grid/v0/seed0</code></summary>" in writeup
    assert "No figures:" in writeup
    assert "### v0: `grid/v0/seed0`" not in (out / "report.md").read_text()  # listed, not as headings
    assert "**v0: `grid/v0/seed0`**" in (out / "report.md").read_text()


def test_the_latent_usage_lines_are_told_apart_by_levels_not_by_16_names(grid_runs_2x2: Path) -> None:
    for folder in sorted(grid_runs_2x2.glob("grid/*/seed*")):
        record = {
            "latest": "k",
            "results": {
                "k": {
                    "settings": {"active_threshold": 0.01},
                    "per_dim": {"kl_per_dim": [2.0, 1.0, 0.5], "posterior_mean_var": [0.5, 0.1, 0.001]},
                }
            },
        }
        (folder / "eval" / "test.json").write_text(json.dumps(record))
    rs = load_runs([grid_runs_2x2])

    fig = latent_usage_figure(_context(rs))

    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "decoder = isotropic",
        "decoder = variance",
        "beta = 1",
        "beta = 4",
        "active threshold 0.01",
    ]
    variance_panel = next(ax for ax in fig.axes if ax.get_ylabel() == "Var_x E_q[z|x]")
    lines = variance_panel.get_lines()[:4]  # one per variant, then the threshold
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 4


def test_report_cli_group_by_colours_the_curves_by_that_axis(grid_runs_2x2: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["report", str(grid_runs_2x2), "--out", str(out), "--no-figures"]
    result = CliRunner().invoke(app, [*args, "--group-by", "beta"])
    assert result.exit_code == 0, result.output
    curves = _section((out / "report.md").read_text(), "Training curves")
    assert "Colour: beta, line style: decoder" in curves
    wrong = CliRunner().invoke(app, [*args, "--group-by", "colour"])
    assert wrong.exit_code != 0 and "choose one of decoder, beta, variant" in wrong.output
    assert (out / "report.md").is_file()  # refused before the previous report was removed


def test_runs_that_end_at_different_steps_are_averaged_on_epochs(tmp_path: Path) -> None:
    """Batch 32 trains the same 2 epochs in half the steps of batch 16: averaged per step, its curve
    would stop halfway; on epochs both cover 0.2..2, each interpolated onto the union of the grids."""
    for batch, per_epoch in (("16", 20), ("32", 10)):
        for seed in (0, 1):
            rows = [
                {"step": s, "epoch": s / per_epoch, "train/loss": 50.0 - 10 * s / per_epoch + seed}
                for s in range(per_epoch // 5, 2 * per_epoch + 1, per_epoch // 5)
            ]
            axes = {"batch": batch}
            make_run(tmp_path / "runs", f"batch-{batch}", seed, axes, {"bpd_elbo": 5.0}, curves=rows)
    rs = load_runs([tmp_path / "runs"])

    fig = training_curves_figure(_context(rs))

    loss = fig.axes[0]
    assert loss.get_xlabel() == "epoch"
    for line in loss.get_lines():
        x, y = line.get_data()
        assert (x[0], x[-1]) == (pytest.approx(0.2), pytest.approx(2.0))
        np.testing.assert_allclose(y, 50.5 - 10 * np.asarray(x))  # the mean of seeds 0 and 1


def test_the_readmes_plot_example_is_drawn_into_the_report(
    two_variants: Path, tmp_path: Path, own_registry: dict[str, registry.Plot]
) -> None:
    """The "Adding a plot" example of the README, as written, registers a plot that the report shows."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Adding a plot") :]
    source = section[section.index("```python\n") + len("```python\n") :]
    exec(compile(source[: source.index("```")], "README example", "exec"), {})
    for metrics in two_variants.rglob("metrics.jsonl"):  # the constructed runs log no gradient norm
        rows = [json.loads(line) | {"train/grad_norm": 1.0 + i} for i, line in enumerate(metrics.open())]
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = build_report([two_variants], out=tmp_path / "report", figures=False)
    assert (out / "plots" / "grad_norm.png").is_file()
    assert "![Gradient norm per logged step.](plots/grad_norm.png)" in _section(
        (out / "report.md").read_text(), "Training curves"
    )
