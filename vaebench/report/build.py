"""`build_report`: run folders (or W&B runs) -> tables, plots, write-up figures, report.md and report.html.

The output folder (default reports/<experiment>/) holds::

    report.md, report.html       the report (the HTML self-contained, images embedded)
    tables/                      runs.csv and curves.csv (tidy, every run), and variants, effects,
                                 spec_differences, environment (and attention, if a run needs it)
                                 each as .csv (numbers), .md and .tex (booktabs)
    plots/                       every registered plot (`vaebench.report.plots`): curves, bits_per_dim,
                                 effects, latent_usage, beta_sweep, ...: .png and .pdf
    figures/<variant>/           reconstructions, interpolation, temperature, curves: .png and .pdf;
                                 temperature.json (the spread of the samples at each tau)
    figures/latent_traversal     the highest-MIG run's latent traversals (runs on data with discrete
                                 factors: `vaebench.report.traversals`): .png and .pdf
    .vaebench-report             marks the folder as a report, so regenerating may replace it

Regenerating is idempotent: the folder's previous report files are removed first, nothing records
the time, and every figure is deterministic, so the same runs give the same files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from vaebench.core.errors import UserError
from vaebench.report import render
from vaebench.report.columns import (
    NOT_COMPARABLE,
    QUALITY_KEYS,
    REPORT_METRICS,
    Metric,
    metric,
    not_comparable_labels,
)
from vaebench.report.load import RunSet, load_runs
from vaebench.report.plots import PlotContext, registered, variant_palette
from vaebench.report.plots.grouping import curve_grouping
from vaebench.report.plots.registry import CURVES, EFFECTS, LATENT, REPRESENTATION, RESULTS, SECTIONS
from vaebench.report.plots.run_curves import plot_run_curves
from vaebench.report.quality import (
    PROTOCOL_PARAGRAPH,
    Protocols,
    left_out_notes,
    quality_protocols,
    split_quality,
    summary_sentence,
    with_one_protocol,
)
from vaebench.report.tables import (
    PERCEPTUAL_SHARE,
    TIED,
    attention_table,
    axis_effects,
    degenerate_metrics,
    environment_table,
    format_effects,
    format_interactions,
    format_variant_table,
    has_perceptual_term,
    interaction_effects,
    level_means,
    present_metrics,
    rank_variants,
    spec_difference_tables,
    variant_table,
    write_table,
)
from vaebench.runs.io import atomic_write_text

MARKER = ".vaebench-report"
OPEN_FIGURES = 4  # with more variants than this, each variant's write-up figures are folded (HTML)
_OWNED = ("tables", "plots", "figures", "report.md", "report.html")
REPRESENTATION_TEXT = (
    "How well the posterior means separate the data's known generative factors (data with discrete factors, "
    "`data.factor_levels`): MIG, DCI disentanglement, completeness and informativeness, SAP and the "
    "FactorVAE score (disentanglement_lib's definitions; higher is better) are columns of the variants and "
    "effects tables above, mean ± sd and intervals over seeds like every metric. Scores made with "
    "eval.disentanglement counts below disentanglement_lib's are not comparable to published values."
)


def report_selection(rs: RunSet) -> list[str]:
    """What a report is made from: `<experiment>/<variant>/seed<k>` of each run, sorted."""
    return sorted(f"{rs.experiment}/{r.variant}/seed{r.seed}" for r in rs.runs.itertuples())


def prepare_output(out: Path, selection: list[str], force: bool = False) -> None:
    """Empty the report files of a previous run in `out`; refuse a non-empty folder that is not a report,
    and a report made from other runs (unless `force`): `vaebench report runs/x/<one variant>` with the
    default --out must not replace the experiment's full report."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report.")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.exists():
        raise UserError(
            f"--out {out} is a non-empty folder that `vaebench report` did not make; "
            "choose another folder (or empty this one) so that nothing of yours is overwritten."
        )
    if marker.is_file() and not force:
        try:
            previous = json.loads(marker.read_text()).get("runs")
        except (ValueError, AttributeError):
            previous = None  # a marker of an older vaebench: no record of its runs
        if isinstance(previous, list) and previous != selection:
            only_old = len(set(previous) - set(selection))
            raise UserError(
                f"--out {out} holds the report of other runs ({len(previous)} runs; {only_old} of them are "
                f"not among the {len(selection)} selected now), which this report would replace. Give "
                "another folder with --out, or --force to replace it."
            )
    out.mkdir(parents=True, exist_ok=True)
    for name in _OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    note = "Made by `vaebench report`; regenerating from the same runs replaces this folder's report."
    atomic_write_text(marker, json.dumps({"note": note, "runs": selection}, indent=1) + "\n")


def _interactions_section(
    means: pd.DataFrame, interactions_text: pd.DataFrame, by: Any
) -> list[render.Block]:
    """The mean per axis level, and the interaction table: where an effect depends on another axis,
    its rows differ."""
    blocks: list[render.Block] = []
    if not means.empty:
        blocks += [
            render.Heading("Mean per axis level"),
            render.Text(
                f"{by.label} at each level of each axis, over all runs at that level: each seed's "
                "runs are averaged, then the seeds, with a 95% t interval over seeds."
            ),
            render.Table(means),
        ]
    if interactions_text.empty:
        return blocks
    return [
        *blocks,
        render.Heading("Interactions"),
        render.Text(
            f"Each axis effect on {by.label}, computed only from the pairs that share one level of another "
            "axis, with the same seed-as-unit interval. An effect that changes sign or size across the "
            "levels of another axis depends on it; the table above averages over them."
        ),
        render.Table(interactions_text),
    ]


def _count(n: int, noun: str) -> str:
    """ "1 run", "3 runs"."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def best_runs(rs: RunSet, by: str) -> dict[str, str]:
    """Per variant, its finished run with the best `by` (its first finished run if none has the metric)."""
    finished = rs.finished.assign(_v=pd.to_numeric(rs.finished.get(by), errors="coerce"))
    ascending = metric(by).higher_is_better is not True
    best = {}
    for variant in rs.variants:
        runs = finished[finished["variant"] == variant]
        if runs.empty:
            continue
        ranked = runs.sort_values("_v", ascending=ascending, na_position="last", kind="stable")
        best[variant] = str(ranked["run"].iloc[0])
    return best


def _evaluation_sentence(rs: RunSet) -> str:
    """What the evaluation numbers are: split, K, images, checkpoint (distinct values joined)."""
    settings = [r.eval_settings for r in rs.records if r.status == "finished" and r.eval_settings]
    if not settings:
        splits = ", ".join(sorted(set(rs.finished["eval_split"].dropna()))) or "test"
        return f"Evaluation on the {splits} split (settings not recorded)."

    def values(key: str) -> str:
        return "/".join(str(v) for v in dict.fromkeys(s.get(key) for s in settings))

    return (
        f"Evaluated on the {values('split')} split ({values('num_images')} images) with the "
        f"`{values('checkpoint')}` checkpoint; IW bound with K = {values('iw_samples')}; exact discretized "
        f"likelihood; a dimension is active when Var_x E_q[z|x] > {values('active_threshold')}."
    )


def build_report(
    run_dirs: Sequence[Path] = (Path("runs"),),
    experiment: str | None = None,
    out: Path | None = None,
    *,
    wandb_path: str | None = None,
    wandb_api: Any = None,
    rank_by: str = "bpd_elbo",
    figure_runs: Sequence[Path] = (),
    figures: bool = True,
    figure_images: int = 8,
    figure_scale: int = 2,
    device: str = "cpu",
    console: Console | None = None,
    force: bool = False,
    group_by: str | None = None,
) -> Path:
    """Write the report of one experiment's runs and return its folder.

    run_dirs: folders searched for run folders (ignored with `wandb_path`); experiment: which one, when
    they hold several; out: default reports/<experiment>; wandb_path: "entity/project" to read the runs
    from the W&B public API (`wandb_api`, default `wandb.Api()`) instead; rank_by: the metric that
    orders the variant table and picks each variant's best run; figure_runs: run folders to draw the
    write-up figures from instead of each variant's best; figures: False skips them (no checkpoints
    are read); console: where the loading progress bar goes (None: no bar); force: replace a report
    in `out` made from other runs; group_by: the axis whose levels colour the training curves (default:
    the axis with the most levels; "variant": one colour per variant).
    """
    _check_options(rank_by, figure_runs)
    rs = _load(run_dirs, experiment, wandb_path, wandb_api, console)
    curve_grouping(rs, group_by)  # a wrong --group-by fails before the previous report is removed
    chosen_figure_runs(rs, figure_runs)  # and so does a --figures-from run that was not loaded
    out = Path(out) if out is not None else Path("reports") / rs.experiment
    prepare_output(out, report_selection(rs), force)

    # one quality protocol in the tables, effects and plots; runs.csv keeps every run's scores
    protocols = quality_protocols(rs)
    all_runs, rs = rs.runs, with_one_protocol(rs, protocols)
    tables = write_tables(rs, out / "tables", rank_by, protocols, runs_csv=all_runs)
    palette = variant_palette(rs.variants)
    ctx = PlotContext(
        runs=rs,
        palette=palette,
        order=list(tables.variants["variant"]),
        ranks={str(r.variant): int(r.rank) for r in tables.variants.itertuples() if pd.notna(r.rank)},
        rank_by=tables.by,
        effects=tables.effects,
        metrics=[m for m in tables.metrics if m.key not in tables.flags],
        group_by=group_by,
        quality_not_comparable=protocols.not_comparable,
    )
    plots = draw_plots(ctx, out / "plots", out)  # every registered plot, into the section it names
    writeup: list[render.Block] = []
    if figures:
        from vaebench.report.traversals import traversal_blocks

        plots[REPRESENTATION] += traversal_blocks(rs, out, scale=figure_scale, device=device)
        writeup = _writeup_section(
            rs, out, palette, rank_by, figure_runs, figure_images, figure_scale, device
        )

    blocks = _document(rs, tables, plots)
    blocks += _interactions_section(tables.means, tables.interactions_text, tables.by)
    blocks += writeup
    blocks += _settings_section(tables.spec_diff, tables.shared, tables.environment)
    title = f"vaebench report: {rs.experiment}"
    atomic_write_text(out / "report.md", render.to_markdown(title, blocks))
    atomic_write_text(out / "report.html", render.to_html(title, blocks))
    return out


def _check_options(rank_by: str, figure_runs: Sequence[Path]) -> None:
    """--rank-by names a report metric and each --figures-from folder exists (before anything loads)."""
    if rank_by not in {m.key for m in REPORT_METRICS}:
        choices = ", ".join(m.key for m in REPORT_METRICS)
        raise UserError(f"--rank-by {rank_by!r} is not a report metric; choose one of {choices}.")
    missing = [str(path) for path in figure_runs if not Path(path).exists()]
    if missing:
        raise UserError(
            f"--figures-from {missing[0]} does not exist; give the folder of a run "
            "(runs/<experiment>/<variant>/seed<k>) among the runs being reported."
        )


def _load(
    run_dirs: Sequence[Path],
    experiment: str | None,
    wandb_path: str | None,
    wandb_api: Any,
    console: Console | None,
) -> RunSet:
    """The experiment's runs, from run folders or (wandb_path) from the W&B public API."""
    if wandb_path is None:
        return load_runs(list(run_dirs), experiment, console)
    from vaebench.report.wandb_api import check_project_path, load_wandb

    check_project_path(wandb_path)  # before W&B is asked for a login
    if wandb_api is None:
        import wandb

        try:
            wandb_api = wandb.Api()
        except Exception as err:  # no key, no network: W&B's own error types
            raise UserError(
                f"Cannot use the W&B API ({type(err).__name__}: {err}). Log in with `wandb login` "
                "or set WANDB_API_KEY, or report from run folders instead."
            ) from err
    return load_wandb(wandb_api, wandb_path, experiment, console)


@dataclass
class ReportTables:
    """The report's tables, as written to tables/ (numbers) and as shown (formatted text)."""

    by: Metric  # the ranking metric (labelled as shown: "not comparable (random weights)" where so)
    quality_columns: set[str]  # headers of the quality scores in variants_text and effects_text
    metric_columns: set[str]  # headers of every metric there (the other columns name the rows)
    metrics: list[Metric]  # the report metrics some finished run has, in reading order
    protocols: Protocols  # the quality protocols of the runs, and which one the tables show
    flags: dict[
        str, str
    ]  # degenerate metrics (`degenerate_metrics`): left out of effects, interactions and plots
    variants: pd.DataFrame
    variants_text: pd.DataFrame
    effects: pd.DataFrame
    effects_text: pd.DataFrame
    means: pd.DataFrame
    interactions_text: pd.DataFrame
    attention: pd.DataFrame
    spec_diff: pd.DataFrame
    shared: pd.DataFrame
    environment: pd.DataFrame


def write_tables(
    rs: RunSet,
    tables_dir: Path,
    rank_by: str,
    protocols: Protocols | None = None,
    runs_csv: pd.DataFrame | None = None,
) -> ReportTables:
    """Write tables/: runs.csv and curves.csv (tidy, every run), and the variant, effect, level-mean,
    interaction, attention, spec-difference and environment tables (each that is not empty).

    Only the report metrics some finished run has get columns (and `rank_by`, always); runs_csv: the
    runs table to write as runs.csv (default rs.runs; `build_report` passes the one with the quality
    scores of every protocol, where `rs` keeps only the shown protocol's)."""
    protocols = protocols or Protocols()
    tables_dir.mkdir()
    runs_csv = rs.runs if runs_csv is None else runs_csv
    atomic_write_text(tables_dir / "runs.csv", runs_csv.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(tables_dir / "curves.csv", rs.curves.to_csv(index=False, lineterminator="\n"))
    metrics = present_metrics(rs, REPORT_METRICS, keep=rank_by)
    shown = not_comparable_labels(metrics) if protocols.not_comparable else metrics
    by = next(m for m in shown if m.key == rank_by)
    quality_columns = {f"{d}{m.label}" for m in shown if m.key in QUALITY_KEYS for d in ("", "Δ ")}
    metric_columns = {f"{d}{m.label}" for m in [*shown, PERCEPTUAL_SHARE] for d in ("", "Δ ")}
    variants = rank_variants(variant_table(rs, metrics), rank_by)
    variants_text = format_variant_table(variants, metrics)
    caption = f"Results by variant, ranked by {by.label}."
    if protocols.not_comparable:
        caption += f" Quality scores {NOT_COMPARABLE}."
    write_table(tables_dir, "variants", variants, variants_text, caption)
    effects = axis_effects(rs, metrics)
    flags = degenerate_metrics(rs, metrics)
    effects_text = format_effects(effects, shown, flags=flags) if not effects.empty else pd.DataFrame()
    if not effects.empty:
        caption = "Effect of each axis: mean paired difference [95% t interval over seeds]."
        write_table(tables_dir, "effects", effects, effects_text, caption)
    means = level_means(rs, by)
    if not means.empty:
        write_table(
            tables_dir, "level_means", means, means, f"Mean {by.label} per axis level [95% t over seeds]."
        )
    interactions = interaction_effects(rs, metrics)
    interactions_text = format_interactions(interactions, by) if by.key not in flags else pd.DataFrame()
    if not interactions_text.empty:
        caption = (
            f"Each axis effect on {by.label} split by the levels of every other axis [95% t over seeds]."
        )
        write_table(tables_dir, "interactions", interactions, interactions_text, caption)
    attention = attention_table(rs)
    if not attention.empty:
        write_table(tables_dir, "attention", attention, attention, "Runs that need attention.")
    spec_diff, shared = spec_difference_tables(rs)
    write_table(
        tables_dir, "spec_differences", spec_diff, spec_diff, "Settings that differ between variants."
    )
    environment = environment_table(rs)
    if not environment.empty:
        write_table(
            tables_dir, "environment", environment, environment, "Environment of each variant's runs."
        )
    return ReportTables(
        by=by, quality_columns=quality_columns, metric_columns=metric_columns, metrics=metrics,
        protocols=protocols, flags=flags, variants=variants, variants_text=variants_text, effects=effects,
        effects_text=effects_text, means=means, interactions_text=interactions_text, attention=attention,
        spec_diff=spec_diff, shared=shared, environment=environment,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the document


def draw_plots(ctx: PlotContext, plots_dir: Path, out: Path) -> dict[str, list[render.Block]]:
    """Draw every registered plot into plots/<name>.png/.pdf: per section, the blocks that show them
    (the image with its caption, or the plot's `missing` text when it had nothing to draw)."""
    sections: dict[str, list[render.Block]] = {section: [] for section in SECTIONS}
    for entry in registered():
        paths = entry.draw(ctx, plots_dir / entry.name)
        blocks = sections.setdefault(entry.section, [])
        if paths:
            blocks += _image(paths, out, entry.caption_for(ctx))
        elif entry.missing:
            blocks.append(render.Text(entry.missing))
    return sections


def _extra_sections(plots: dict[str, list[render.Block]]) -> list[render.Block]:
    """Sections that only registered plots name: a heading each, after the report's own sections."""
    blocks: list[render.Block] = []
    for section, shown in plots.items():
        if section not in SECTIONS and shown:
            blocks += [render.Heading(section), *shown]
    return blocks


def _image(paths: list[Path] | None, out: Path, caption: str, pixelated: bool = False) -> list[render.Block]:
    if not paths:
        return []
    png = paths[0]
    return [render.Image(png, _rel(png, out), caption, pixelated)]


def _document(rs: RunSet, tables: ReportTables, plots: dict[str, list[render.Block]]) -> list[render.Block]:
    """The report up to its interactions: counts, runs that need attention, results, effects, curves,
    latent usage and the sections only registered plots name."""
    by, flags, attention = tables.by, tables.flags, tables.attention
    variants_text, effects_text = tables.variants_text, tables.effects_text
    counts = rs.runs["status"].value_counts()
    status_text = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    blocks: list[render.Block] = [
        render.Text(
            f"{_count(len(rs.runs), 'run')} ({status_text}) of {_count(len(rs.variants), 'variant')}, "
            f"from `{rs.source}`. "
            "Only finished runs enter the tables and plots. Tables are in `tables/` (CSV, Markdown, LaTeX), "
            "plots in `plots/` (PNG, PDF)."
        ),
        render.Text(_evaluation_sentence(rs)),
        *(render.Text(line) for line in [summary_sentence(rs, tables.protocols)] if line),
    ]
    if not attention.empty:
        blocks += [
            render.Heading("Runs that need attention"),
            render.Text(
                "These runs are left out of the tables and plots, or are missing some numbers there:"
            ),
            render.Table(attention),
        ]

    direction = {True: "higher is better", False: "lower is better", None: ""}[by.higher_is_better]
    blocks += [
        render.Heading(RESULTS),
        render.Text(
            f"Mean ± standard deviation over seeds (n = finished runs; a single run shows its value), "
            f"ranked by {by.label} ({direction}); one column per ablation axis gives the variant's "
            f"levels. `vs best`: the difference to the best variant's mean; {TIED} marks a difference "
            "within the seed spread (no larger than the larger of the two standard deviations), where "
            "these seeds do not settle the order. Bits/dim are per dimension of the 8-bit images; KL "
            "and mutual information are in nats per image; MI is a minibatch estimate, bounded by the "
            "log of its batch size."
        ),
        *(render.Text(note) for note in left_out_notes(tables.protocols)),
        *(_shown(variants_text, tables) if len(variants_text) else [render.Text("No run has finished yet.")]),
        *_perceptual_note(rs),
        *([render.Text(PROTOCOL_PARAGRAPH)] if tables.protocols.shown is not None else []),
        *plots[RESULTS],
    ]

    blocks.append(render.Heading(EFFECTS))
    if effects_text.empty:
        blocks.append(
            render.Text("No axis has two levels with finished runs, so there are no effects to show.")
        )
    else:
        blocks += [
            render.Text(
                "For each axis, the difference of each metric between a level and the reference level "
                "(the first in the experiment file). Runs that share the other axes' levels and the seed "
                "are paired; each seed's paired differences are averaged, and the effect is the mean over "
                "seeds with a Student-t 95% interval over the seeds (n seeds − 1 degrees of freedom; no "
                "interval from one seed). The seed is the unit of replication: with few seeds the "
                "intervals are wide, as they should be. An interval that excludes 0 says the effect "
                "exceeds the seed-to-seed variation of this grid at that number of seeds; it says "
                "nothing about practical size."
            ),
            *_shown(effects_text, tables),
            *(render.Text(f"Not an effect: {metric(key).label} is {why}.") for key, why in flags.items()),
        ]
    blocks += plots[EFFECTS]

    blocks += [render.Heading(CURVES), *plots[CURVES]]
    blocks += [render.Heading(LATENT), *plots[LATENT]]
    if plots[REPRESENTATION]:
        blocks += [render.Heading(REPRESENTATION), render.Text(REPRESENTATION_TEXT), *plots[REPRESENTATION]]
    blocks += _extra_sections(plots)
    return blocks


def _shown(frame: pd.DataFrame, tables: ReportTables) -> list[render.Block]:
    """The variants or effects table as the report shows it (quality scores in a table of their own)."""
    return split_quality(frame, tables.quality_columns, tables.metric_columns, tables.protocols)


def _perceptual_note(rs: RunSet) -> list[render.Block]:
    """What the perceptual share column means, when a run has a perceptual term."""
    if not has_perceptual_term(rs):
        return []
    weights = pd.to_numeric(rs.finished["loss.perceptual_weight"], errors="coerce")
    shown = ", ".join(f"{w:g}" for w in sorted(weights.dropna().unique()))
    return [
        render.Text(
            f"Perceptual term (loss.perceptual_weight = {shown}): `{PERCEPTUAL_SHARE.label}` is "
            "100 × perceptual_weight × train/perceptual / train/loss at the last logged training step, the "
            "part of the objective the bits/dim columns leave out. A variant whose loss is mostly "
            "perceptual is ranked on a likelihood it was not mainly trained for."
        )
    ]


def chosen_figure_runs(rs: RunSet, figure_runs: Sequence[Path]) -> dict[str, str]:
    """The --figures-from run folders as {figure title: run}; each must be one of the loaded runs."""
    by_dir = {str(Path(r.local_dir).resolve()): r.run for r in rs.records if r.local_dir is not None}
    chosen = {}
    for path in figure_runs:
        key = str(Path(path).resolve())
        if key not in by_dir:
            raise UserError(f"--figures-from {path} is not one of the loaded runs of {rs.experiment}.")
        chosen[f"{rs.record(by_dir[key]).variant} ({Path(path).name})"] = by_dir[key]
    return chosen


def _writeup_section(
    rs: RunSet,
    out: Path,
    palette: dict,
    rank_by: str,
    figure_runs: Sequence[Path],
    images: int,
    scale: int,
    device: str,
) -> list[render.Block]:
    from vaebench.report.writeup import reconstruction_comparison

    if figure_runs:
        chosen = chosen_figure_runs(rs, figure_runs)
        why = "the runs named with --figures-from"
    else:
        chosen = best_runs(rs, rank_by)
        why = f"the best run of each variant by {metric(rank_by).label}"
    blocks: list[render.Block] = [
        render.Heading("Write-up figures"),
        render.Text(
            f"From {why}, made from its checkpoint (best.pt): `vaebench report` regenerates them "
            "with --figure-images and --figure-scale. Reconstructions: test images (top) over the decoder "
            "means of their posterior means. Interpolation: each row starts at a real test image (left), "
            "decodes the straight line between the posterior means of it and a second image, and ends at "
            "that real image (right). Temperature: prior samples z ~ N(0, τ²I), the same noise in every "
            "row, from τ = 0 (the decoder at the prior mean, the same image in every column) up; beside "
            "it, how much 64 such samples vary at each τ."
        ),
    ]
    local = {title: rs.record(run) for title, run in chosen.items()}
    local = {title: rec for title, rec in local.items() if rec.local_dir is not None}
    if len(local) > 1:
        rows = {_row_label(rs, title, rec): Path(rec.local_dir or ".") for title, rec in local.items()}
        paths, skipped = reconstruction_comparison(
            rows,
            out / "figures" / "reconstructions_by_variant.png",
            images=images,
            scale=scale,
            device=device,
        )
        order = " · ".join(a for a in rs.axes if a != "variant") or "variant"
        blocks += [
            render.Heading("Reconstructions across variants", level=3),
            *_image(
                paths,
                out,
                f"The same first {images} test images (top row) reconstructed by each variant's run, one "
                f"row per variant, labelled {order}.",
                pixelated=True,
            ),
            *(render.Text(f"Not in the comparison: {label}: {why}.") for label, why in skipped.items()),
        ]
    collapse = len(chosen) > OPEN_FIGURES
    if collapse:
        blocks.append(
            render.Text(
                f"Each variant's own figures follow, folded ({len(chosen)} variants): open one to see them. "
                "In report.md they are listed in full."
            )
        )
    for title, run in chosen.items():
        rec = rs.record(run)
        inner = _variant_figures(rs, run, out, title, palette, images, scale, device)
        heading = f"{title}: `{rec.label}`"
        if collapse:
            blocks.append(render.Details(heading, inner))
        else:
            blocks += [render.Heading(heading, level=3), *inner]
    return blocks


def _variant_figures(
    rs: RunSet, run: str, out: Path, title: str, palette: dict, images: int, scale: int, device: str
) -> list[render.Block]:
    """One run's reconstructions, interpolation, temperature grid and loss curves, side by side, and
    what the temperature grid's rows measure (`temperature_note`)."""
    from vaebench.report.writeup import temperature_note, writeup_figures

    rec = rs.record(run)
    folder = out / "figures" / title.replace("/", "_").replace(" ", "_")
    if rec.local_dir is None:
        return [render.Text("No checkpoint here (a W&B run): run the report on the run folders.")]
    try:
        made = writeup_figures(rec.local_dir, folder, images=images, scale=scale, device=device)
    except UserError as err:
        return [render.Text(f"No figures: {err}"), *temperature_note(None, rec.temperature)]
    captions = {
        "reconstructions": "Reconstructions: inputs over reconstructions.",
        "interpolation": "Latent interpolation between pairs of test images (real images at the ends).",
        "temperature": "Prior samples at temperatures τ (rows; τ = 0: the decoder at z = 0).",
    }
    shown = [block for name, paths in made.items() for block in _image(paths, out, captions[name], True)]
    shown += _image(plot_run_curves(rs, run, palette, folder / "curves"), out, "Loss curves of this run.")
    measured = folder / "temperature.json"
    drawn = json.loads(measured.read_text()) if measured.is_file() else None
    return [
        render.Row([b for b in shown if isinstance(b, render.Image)]),
        *temperature_note(drawn, rec.temperature),
    ]


def _row_label(rs: RunSet, title: str, rec: Any) -> str:
    """A short row label for a cross-variant grid: the variant's levels ("variance · on · 32"), not its
    long name; the seed is added when --figures-from picked runs (two of one variant can be shown)."""
    axes = [a for a in rs.axes if a != "variant"]
    levels = " · ".join(str(rs.runs.set_index("run").loc[rec.run, a]) for a in axes) if axes else rec.variant
    return levels if title == rec.variant else f"{levels} (seed {rec.seed})"


def _settings_section(
    spec_diff: pd.DataFrame, shared: pd.DataFrame, environment: pd.DataFrame
) -> list[render.Block]:
    blocks: list[render.Block] = [render.Heading("Variants and their settings")]
    if spec_diff.shape[1] > 1:
        blocks += [
            render.Text("Settings that differ between variants (resolved specs):"),
            render.Table(spec_diff),
        ]
    else:
        blocks.append(render.Text("All variants have the same resolved spec."))
    if not shared.empty:
        blocks.append(
            render.Details(
                f"Settings shared by all variants that differ from vaebench's defaults ({len(shared)})",
                [render.Table(shared)],
            )
        )
    blocks.append(render.Heading("Environment"))
    if environment.empty:
        blocks.append(render.Text("No run recorded its environment (env.json)."))
    else:
        blocks += [
            render.Text("As recorded in each run's env.json (distinct values joined)."),
            render.Table(environment),
        ]
    return blocks
