"""The report's tables: per-variant mean +- std over seeds, the ranking, and the effect of each axis.

Numbers come from finished runs only (see `vaebench.report.load`). Each table exists twice: numeric
(for CSV, and for tests to check against a hand computation) and formatted as strings (for Markdown,
LaTeX and the console). A metric that was not computed for a run (evaluation not run) is NaN in the
numeric table and "–" in the formatted one, never a crash.

Axis effects, the table an ablation study exists for. For axis A with levels a0 (the reference: the
first level in the experiment file) and a1, a2, ...: runs are paired when they share the level of
every other axis *and the seed*, giving paired differences metric(a_k) - metric(a0). The seed is the
unit of replication: the paired differences of one seed are averaged first (over the other axes'
levels), and the effect is the mean of those per-seed effects with a Student-t 95% interval over the
seeds (n_seeds - 1 degrees of freedom; no interval from a single seed). The differences within one
seed are not independent replicates (they share the seed's initialisation, data order and noise), so
treating the 16 pairs of a 16-variant grid as 16 samples when only 2 seeds exist would make the
interval several times too narrow. Pairing by seed still cancels the noise that runs of one seed share.
A pair with the metric missing on either side is left out, so the counts can differ by metric.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vaebench.config.experiments import flatten
from vaebench.config.spec import RunSpec
from vaebench.report.columns import (
    COMPARABLE,
    QUALITY_KEYS,
    REPORT_METRICS,
    Metric,
    metric,
    not_comparable_labels,
)
from vaebench.report.load import RunSet
from vaebench.report.stats import mean_ci
from vaebench.runs.io import atomic_write_text

MISSING = "–"
TIED = "≈"  # marks a variant whose difference to the best is within the seed spread
# Not a result but a diagnostic of the objective: shown beside the results when a run has a perceptual term.
# In percent with 3 significant digits: a share of 4e-6 (random VGG weights) must not read "0.0%".
PERCEPTUAL_SHARE = Metric(
    "perceptual_share",
    "perceptual share (% of loss)",
    ".3g",
    None,
    "100 * perceptual_weight * train/perceptual / train/loss at the last logged training row",
)


def _values(frame: pd.DataFrame, key: str) -> pd.Series:
    """A metric column as floats (NaN where missing); an all-NaN column when no run has the metric."""
    if key not in frame:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[key], errors="coerce").astype(float)


def level_axes(rs: RunSet) -> list[str]:
    """The axis columns shown beside the variant name (the axis "variant" is the name itself)."""
    return [a for a in rs.axes if a != "variant"]


# ----------------------------------------------------------------------------- numeric tables


def has_perceptual_term(rs: RunSet) -> bool:
    """Whether a finished run trained with loss.perceptual_weight > 0."""
    return bool((_values(rs.finished, "loss.perceptual_weight") > 0).any())


def present_metrics(rs: RunSet, metrics: Sequence[Metric] = REPORT_METRICS, keep: str = "") -> list[Metric]:
    """The metrics some finished run has a value of (and `keep`, the ranking metric, always): a report of
    runs evaluated without FID (most runs) shows no FID column, effect or panel of dashes."""
    return [m for m in metrics if m.key == keep or _values(rs.finished, m.key).notna().any()]


def variant_table(rs: RunSet, metrics: Sequence[Metric] = REPORT_METRICS) -> pd.DataFrame:
    """One row per variant with a finished run: axis levels, n runs, and <metric>_mean/_std/_n.

    std is the sample standard deviation over seeds (ddof = 1), NaN for a single seed. When a run has
    a perceptual term, the perceptual share of its loss is added as a metric (`PERCEPTUAL_SHARE`). With
    a quality metric, `quality_comparable` says whether every run's quality scores used pretrained
    extractor weights (False: a run used random ones; empty: not recorded).
    """
    finished = rs.finished
    if has_perceptual_term(rs) and PERCEPTUAL_SHARE not in metrics:
        metrics = (*metrics, PERCEPTUAL_SHARE)
    quality = [m.key for m in metrics if m.key in QUALITY_KEYS and m.key in finished]
    rows = []
    for variant in rs.variants:
        runs = finished[finished["variant"] == variant]
        if runs.empty:
            continue
        row: dict[str, Any] = {"variant": variant}
        row |= {axis: runs[axis].iloc[0] for axis in level_axes(rs)}
        row["n"] = len(runs)
        for m in metrics:
            ci = mean_ci(_values(runs, m.key))
            row |= {f"{m.key}_mean": ci.mean, f"{m.key}_std": ci.std, f"{m.key}_n": ci.n}
        if quality:
            row[COMPARABLE] = _comparable(runs, quality)
        rows.append(row)
    columns = ["variant", *level_axes(rs), "n"]
    columns += [f"{m.key}_{s}" for m in metrics for s in ("mean", "std", "n")]
    columns += [COMPARABLE] if quality else []
    return pd.DataFrame(rows, columns=columns)


def _comparable(runs: pd.DataFrame, quality: Sequence[str]) -> bool | None:
    """False when a run with a quality score recorded quality_comparable False; None when none recorded."""
    scored = runs[runs[list(quality)].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)]
    flags = [v for v in scored.get(COMPARABLE, pd.Series(dtype=object)) if isinstance(v, bool)]
    return all(flags) if flags else None


def read_variant_table(path: Path) -> pd.DataFrame:
    """variants.csv as `variant_table` wrote it: names and levels as strings, statistics as numbers."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in table.columns:
        if column.endswith(("_mean", "_std", "_n", "_vs_best")) or column in ("n", "rank"):
            table[column] = pd.to_numeric(table[column], errors="coerce")
        if column.endswith("_tied"):
            table[column] = table[column] == "True"
        if column == COMPARABLE:
            table[column] = table[column].map({"True": True, "False": False}).astype(object)
    if "rank" in table:
        table["rank"] = table["rank"].astype("Int64")
    return table


def rank_variants(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """`table` sorted best first by the mean of metric `by`, with a 1-based `rank` column.

    Only variants with a finished run for every seed (the largest `n`) are ranked: a mean over fewer
    seeds is not comparable with the others, so such a variant comes after them, unranked (rank NA),
    and so does one without the metric.
    """
    m = metric(by)
    column = f"{by}_mean"
    if column not in table:
        raise ValueError(f"no column {column!r} to rank by")
    complete = table["n"] == table["n"].max() if len(table) else pd.Series(dtype=bool)
    ranked = table.assign(_incomplete=~complete).sort_values(
        ["_incomplete", column],
        ascending=[True, m.higher_is_better is not True],
        na_position="last",
        kind="stable",
    )
    rankable = (ranked[column].notna() & ~ranked["_incomplete"]).to_numpy()
    ranked = ranked.drop(columns="_incomplete").reset_index(drop=True)
    ranks = pd.Series(range(1, len(ranked) + 1), dtype="Int64")
    ranked.insert(0, "rank", ranks.where(rankable, pd.NA))
    return with_ties(ranked, by)


def with_ties(ranked: pd.DataFrame, by: str) -> pd.DataFrame:
    """Add <by>_vs_best (mean minus the best's mean, ranked variants only) and <by>_tied.

    A variant is tied with the best when their means differ by no more than the larger of their two
    seed standard deviations: the seeds do not settle which is better, so the ranking between them is
    not a finding. Without a standard deviation (one seed) nothing can be called a tie.
    """
    mean, std = ranked[f"{by}_mean"].astype(float), ranked[f"{by}_std"].astype(float)
    is_ranked = ranked["rank"].notna().to_numpy()
    if not is_ranked.any():
        return ranked.assign(**{f"{by}_vs_best": math.nan, f"{by}_tied": False})
    best = int(is_ranked.argmax())  # the first ranked row is the best
    diff = (mean - mean.iloc[best]).where(is_ranked)
    spread = pd.concat([std, pd.Series(std.iloc[best], index=std.index)], axis=1).max(axis=1, skipna=False)
    tied = is_ranked & (diff.abs() <= spread).to_numpy() & (ranked.index != best)
    return ranked.assign(**{f"{by}_vs_best": diff, f"{by}_tied": tied})


EFFECT_COLUMNS = [
    "axis",
    "level",
    "reference",
    "metric",
    "n_pairs",
    "n_seeds",
    "mean_diff",
    "std_diff",
    "ci_low",
    "ci_high",
]


def _effect_rows(rs: RunSet, metrics: Sequence[Metric], split: bool) -> list[dict[str, Any]]:
    """The rows of `axis_effects` (split=False), or of `interaction_effects` (split=True: one row per
    level of every other axis, from the pairs that have that level)."""
    finished = rs.finished
    rows = []
    for axis in rs.axes:
        levels = [lv for lv in rs.levels.get(axis, []) if (finished[axis] == lv).any()]
        if len(levels) < 2:
            continue
        others = [a for a in rs.axes if a != axis]
        reference = levels[0]
        for m in metrics:
            frame = finished[[*others, "seed", axis]].assign(value=_values(finished, m.key))
            cells = frame.pivot_table(index=[*others, "seed"], columns=axis, values="value", aggfunc="mean")
            for level in levels[1:]:
                if level in cells and reference in cells:
                    diffs = (cells[level] - cells[reference]).dropna()
                else:
                    diffs = pd.Series(dtype=float)
                groups: list[tuple[dict[str, Any], pd.Series]] = [({}, diffs)]
                if split:
                    groups = [
                        ({"by_axis": other, "by_level": by_level}, diffs.xs(by_level, level=other))
                        for other in others
                        for by_level in rs.levels.get(other, [])
                        if len(diffs) and by_level in diffs.index.get_level_values(other)
                    ]
                for where, subset in groups:
                    per_seed = subset.groupby(level="seed").mean() if len(subset) else subset  # replicates
                    ci = mean_ci(per_seed)
                    rows.append(
                        {
                            "axis": axis,
                            "level": level,
                            "reference": reference,
                            **where,
                            "metric": m.key,
                            "n_pairs": len(subset),
                            "n_seeds": ci.n,
                            "mean_diff": ci.mean,
                            "std_diff": ci.std,
                            "ci_low": ci.low,
                            "ci_high": ci.high,
                        }
                    )
    return rows


def _sorted(table: pd.DataFrame, metrics: Sequence[Metric], keys: list[str]) -> pd.DataFrame:
    order = {m.key: i for i, m in enumerate(metrics)}
    key = table["metric"].map(order)
    return table.assign(_k=key).sort_values([*keys, "_k"], kind="stable").drop(columns="_k")


def axis_effects(rs: RunSet, metrics: Sequence[Metric] = REPORT_METRICS) -> pd.DataFrame:
    """Long table: axis, level, reference, metric, n_pairs, n_seeds, mean_diff, std_diff, ci_low, ci_high.

    See the module docstring: mean_diff is the mean over seeds of each seed's mean paired difference,
    std_diff their standard deviation over seeds, and the interval a t interval over seeds.
    Axes with fewer than two finished levels are skipped.
    """
    table = pd.DataFrame(_effect_rows(rs, metrics, split=False), columns=EFFECT_COLUMNS)
    return _sorted(table, metrics, ["axis", "level"])


def interaction_effects(rs: RunSet, metrics: Sequence[Metric] = REPORT_METRICS) -> pd.DataFrame:
    """Each axis effect split by the levels of every other axis (columns by_axis, by_level added).

    The same pairs and the same seed-as-unit interval as `axis_effects`, restricted to the pairs with
    that level: an effect that depends on the decoder (say) shows up as different rows here, where
    `axis_effects` averages it away.
    """
    columns = [*EFFECT_COLUMNS[:3], "by_axis", "by_level", *EFFECT_COLUMNS[3:]]
    table = pd.DataFrame(_effect_rows(rs, metrics, split=True), columns=columns)
    return _sorted(table, metrics, ["axis", "level", "by_axis"])


def format_interactions(table: pd.DataFrame, metric_: Metric) -> pd.DataFrame:
    """One row per (axis effect, other axis level) for one metric: "+0.0123 [-0.0040, +0.0286]"."""
    rows = table[table["metric"] == metric_.key]
    return pd.DataFrame(
        {
            "effect of": [f"{r.axis}: {r.level} − {r.reference}" for r in rows.itertuples()],
            "where": [f"{r.by_axis} = {r.by_level}" for r in rows.itertuples()],
            "seeds": [str(int(r.n_seeds)) for r in rows.itertuples()],
            f"Δ {metric_.label}": [
                effect_cell(r, metric_.fmt, int(r["n_seeds"])) for _, r in rows.iterrows()
            ],
        }
    )


def level_means(rs: RunSet, metric_: Metric) -> pd.DataFrame:
    """Per axis level, the metric's mean over seeds (each seed's runs at that level averaged first) with
    its t interval over seeds: the marginal means behind each effect."""
    finished = rs.finished.assign(value=_values(rs.finished, metric_.key))
    rows = []
    for axis in rs.axes:
        for level in rs.levels.get(axis, []):
            at_level = finished[finished[axis] == level].dropna(subset=["value"])
            if at_level.empty:
                continue
            ci = mean_ci(at_level.groupby("seed")["value"].mean())
            cell = _fmt(ci.mean, metric_.fmt)
            if math.isfinite(ci.low):
                cell += f" [{_fmt(ci.low, metric_.fmt)}, {_fmt(ci.high, metric_.fmt)}]"
            rows.append(
                {
                    "axis": axis,
                    "level": level,
                    "runs": str(len(at_level)),
                    "seeds": str(ci.n),
                    metric_.label: cell,
                }
            )
    return pd.DataFrame(rows)


def degenerate_metrics(rs: RunSet, metrics: Sequence[Metric] = REPORT_METRICS) -> dict[str, str]:
    """Metrics whose differences between runs carry no information, with the reason (for a note).

    - at its ceiling in every run: the minibatch MI estimate cannot exceed log(mutual_info_batch), so a
      code that is used saturates there and its "effects" are noise around the bound;
    - constant across the finished runs (e.g. 32/32 active units everywhere);
    - differences at floating-point scale: the spread is below 1e-9 of the values' size.
    An effect interval is not drawn for these: it would present noise (or nothing) as a finding.
    """
    finished = rs.finished
    flags: dict[str, str] = {}
    for m in metrics:
        values = _values(finished, m.key).dropna()
        if len(values) < 2:
            continue
        spread, size = float(values.max() - values.min()), float(values.abs().max())
        batch = _values(finished, "mutual_info_batch").reindex(values.index)
        if m.key == "mutual_info" and batch.notna().all():
            ceiling = batch.map(lambda n: math.log(n) if n and n > 0 else math.nan)
            if ((ceiling - values).abs() <= 0.02 * ceiling).all():
                flags[m.key] = (
                    f"at its ceiling log(batch) = {float(ceiling.min()):.3f} nats in every run: the "
                    "minibatch estimator saturates, so it cannot rank these codes (it detects collapse only)"
                )
                continue
        if spread == 0.0:
            flags[m.key] = f"constant ({format(float(values.iloc[0]), m.fmt)}) in every finished run"
        elif spread <= 1e-9 * max(size, 1e-300):
            flags[m.key] = f"differs between runs only at floating-point scale (spread {spread:.1e})"
    return flags


# ----------------------------------------------------------------------------- formatting


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return MISSING
    return format(float(value), fmt)


def mean_std_cell(mean: float, std: float, n: int, runs: int, fmt: str) -> str:
    """ "3.8123 ± 0.0041"; the mean alone for one run; "(n=k)" when fewer runs than the row have it."""
    if not n:
        return MISSING
    text = _fmt(mean, fmt)
    if n > 1 and math.isfinite(std):
        text += f" ± {_fmt(std, fmt)}"
    if n != runs:
        text += f" (n={n})"
    return text


def format_variant_table(table: pd.DataFrame, metrics: Sequence[Metric] = REPORT_METRICS) -> pd.DataFrame:
    """Strings for people: rank, one column per axis (its level), n, and "mean ± std" per metric.

    The variant's name is left out when axis columns say the same thing more briefly (at 16 variants
    the name is most of the table's width); the ranked metric is followed by "vs best", the difference
    to the best with "≈" where it is within the seed spread (see `with_ties`). Metrics without columns
    in `table` are left out; quality headers say "not comparable (random weights)" when a variant's
    `quality_comparable` is False.
    """
    extra = [m for m in (PERCEPTUAL_SHARE,) if f"{m.key}_mean" in table and m not in metrics]
    metrics = [m for m in (*metrics, *extra) if f"{m.key}_mean" in table]  # a report drops absent metrics
    if COMPARABLE in table and (table[COMPARABLE] == False).any():  # noqa: E712 (None: not recorded)
        metrics = not_comparable_labels(metrics)
    keys = {m.key for m in metrics}
    lead = [c for c in table.columns if not any(c.startswith(f"{k}_") for k in keys)]
    lead = [c for c in lead if not c.endswith(("_vs_best", "_tied")) and c != COMPARABLE]
    if any(c not in ("rank", "variant", "n") for c in lead):
        lead = [c for c in lead if c != "variant"]  # the axis columns name the variant
    out = pd.DataFrame({c: table[c].map(lambda v: MISSING if pd.isna(v) else str(v)) for c in lead})
    ranked_by = next((c.removesuffix("_vs_best") for c in table.columns if c.endswith("_vs_best")), None)
    for m in metrics:
        out[m.label] = [
            mean_std_cell(r[f"{m.key}_mean"], r[f"{m.key}_std"], int(r[f"{m.key}_n"]), int(r["n"]), m.fmt)
            for _, r in table.iterrows()
        ]
        if m.key == ranked_by:
            out["vs best"] = [
                vs_best_cell(r["rank"], r[f"{m.key}_vs_best"], bool(r[f"{m.key}_tied"]), m.fmt)
                for _, r in table.iterrows()
            ]
    return out.reset_index(drop=True)


def vs_best_cell(rank: Any, diff: float, tied: bool, fmt: str) -> str:
    """ "best" for rank 1, "+0.0412" for a clear difference, "≈ +0.0040" within the seed spread."""
    if pd.isna(rank) or not math.isfinite(diff):
        return MISSING
    if int(rank) == 1:
        return "best"
    text = _fmt(diff, "+" + fmt)
    return f"{TIED} {text}" if tied else text


def format_effects(
    effects: pd.DataFrame, metrics: Sequence[Metric] = REPORT_METRICS, flags: dict[str, str] | None = None
) -> pd.DataFrame:
    """One row per (axis, level): "+0.0123 [-0.0040, +0.0286]" per metric; seeds and pairs of the first.

    A metric in `flags` (see `degenerate_metrics`) shows "n/a (see note)" instead of an effect."""
    flags = flags or {}
    rows = []
    for (axis, level), group in effects.groupby(["axis", "level"], sort=False):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        first = by_metric[metrics[0].key] if metrics[0].key in by_metric else group.iloc[0]
        seeds = int(first["n_seeds"])
        row = {
            "axis": axis,
            "effect of": f"{level} − {first['reference']}",
            "seeds": str(seeds),
            "pairs": str(int(first["n_pairs"])),
        }
        for m in metrics:
            r = by_metric.get(m.key)
            if m.key in flags:
                row[f"Δ {m.label}"] = "n/a (see note)"
            else:
                row[f"Δ {m.label}"] = MISSING if r is None else effect_cell(r, m.fmt, seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def effect_cell(r: pd.Series, fmt: str, seeds: int) -> str:
    """ "+0.0123 [-0.0040, +0.0286]"; "(1 seed, no interval)" for one seed; "(n=k seeds)" where it differs."""
    if not r["n_pairs"]:
        return MISSING
    text = _fmt(r["mean_diff"], "+" + fmt)
    if math.isfinite(r["ci_low"]):
        text += f" [{_fmt(r['ci_low'], '+' + fmt)}, {_fmt(r['ci_high'], '+' + fmt)}]"
    elif int(r["n_seeds"]) == 1:
        text += " (1 seed, no interval)"
    if int(r["n_seeds"]) != seeds:
        text += f" (n={int(r['n_seeds'])} seeds)"
    return text


def attention_table(rs: RunSet) -> pd.DataFrame:
    """Runs that are not finished, or finished with a note (not evaluated, unreadable eval file)."""
    runs = rs.runs
    flagged = runs[(runs["status"] != "finished") | (runs["reason"].fillna("") != "")]
    return flagged[["label", "status", "reason"]].rename(columns={"label": "run"}).reset_index(drop=True)


# ----------------------------------------------------------------------------- specs and environment


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)) or value is None:
        return json.dumps(value)
    return str(value)


def _variant_specs(rs: RunSet) -> dict[str, dict[str, Any]]:
    """Flattened resolved spec of each variant (from its first readable run), in variant order."""
    specs: dict[str, dict[str, Any]] = {}
    for variant in rs.variants:
        rec = next((r for r in rs.records if r.variant == variant and r.spec is not None), None)
        if rec is not None:
            specs[variant] = flatten(rec.spec or {})
    return specs


def spec_difference_tables(rs: RunSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per variant: the spec keys whose values differ between variants; shared: keys the variants
    agree on that differ from vaebench's defaults, with the default)."""
    specs = _variant_specs(rs)
    keys = list(dict.fromkeys(k for spec in specs.values() for k in spec))
    differing = [k for k in keys if len({_show(s.get(k, MISSING)) for s in specs.values()}) > 1]
    per_variant = pd.DataFrame(
        [
            {"variant": v, **{k: _show(s[k]) if k in s else MISSING for k in differing}}
            for v, s in specs.items()
        ],
        columns=["variant", *differing],
    )
    defaults = flatten(RunSpec().model_dump(mode="json"))
    shared = [
        {"setting": k, "value": _show(first[k]), "default": _show(defaults[k]) if k in defaults else MISSING}
        for first in list(specs.values())[:1]
        for k in keys
        if k not in differing and k in first and (k not in defaults or defaults[k] != first[k])
    ]
    return per_variant, pd.DataFrame(shared, columns=["setting", "value", "default"])


def environment_table(rs: RunSet) -> pd.DataFrame:
    """Per variant, the environments its runs recorded in env.json (distinct values joined)."""

    def describe(env: dict[str, Any]) -> dict[str, str]:
        commit = env.get("git_commit")
        packages = env.get("packages") or {}
        return {
            "git commit": (commit[:10] + ("-dirty" if env.get("git_dirty") else "")) if commit else MISSING,
            "vaebench": packages.get("vaebench") or MISSING,
            "torch": packages.get("torch") or MISSING,
            "python": env.get("python") or MISSING,
            "device": f"{env.get('device')} ({env.get('device_name')})" if env.get("device") else MISSING,
            "host": env.get("hostname") or MISSING,
        }

    rows = []
    for variant in rs.variants:
        envs = [describe(r.env) for r in rs.records if r.variant == variant and r.env]
        if not envs:
            continue
        rows.append(
            {"variant": variant, **{k: ", ".join(dict.fromkeys(e[k] for e in envs)) for k in envs[0]}}
        )
    table = pd.DataFrame(rows)
    if len(table) > 1 and len(table.drop(columns="variant").drop_duplicates()) == 1:
        # every variant ran in the same environment: one row, not one copy per variant
        return table.iloc[:1].assign(variant=f"all {len(table)} variants")
    return table


# ----------------------------------------------------------------------------- writers


def is_numeric_text(text: str) -> bool:
    """Whether a cell reads as a number (for right-alignment): "3.8", "-0.2 [...]", "≈ +0.004", "best"."""
    text = str(text).removeprefix(f"{TIED} ")
    return text == "best" or (bool(text) and (text[0].isdigit() or text[0] in "+-") and text != MISSING)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of strings; columns of numbers are right-aligned."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = [cell(c) for c in table.columns]
    align = []
    for c in table.columns:
        texts = [str(v) for v in table[c] if str(v) != MISSING]
        align.append("---:" if texts and all(is_numeric_text(t) for t in texts) else ":---")
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
    "−": "$-$",
    "Δ": r"$\Delta$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; a minus sign before a number becomes $-$, not a hyphen."""
    escaped = "".join(_LATEX.get(ch, ch) for ch in str(text))
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", escaped)


def latex_table(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule), shrunk to the text width when wider:
    a 16-variant table with 7 metrics is wider than a page. Needs \\usepackage{booktabs, adjustbox}."""
    align = "".join(
        "r" if all(is_numeric_text(str(v)) for v in table[c] if str(v) != MISSING) and len(table) else "l"
        for c in table.columns
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        r"\begin{adjustbox}{max width=\linewidth}",
        f"\\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.itertuples(index=False)),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{adjustbox}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def write_table(
    folder: Path, stem: str, numeric: pd.DataFrame, formatted: pd.DataFrame, caption: str
) -> dict[str, Path]:
    """<stem>.csv (numbers, full precision), <stem>.md and <stem>.tex (formatted); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{stem}.{ext}" for ext in ("csv", "md", "tex")}
    atomic_write_text(paths["csv"], numeric.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths["md"], markdown_table(formatted))
    atomic_write_text(paths["tex"], latex_table(formatted, caption, f"tab:{stem}"))
    return paths
