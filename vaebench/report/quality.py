"""Quality scores (FID, KID, precision/recall, LPIPS, SSIM) under one protocol, and what the report says
about them.

A quality score is a function of its protocol as much as of the model: the extractor and its weights,
the resize, the uint8 quantisation, the data's crop, the sample counts, ... Each run records the id of
its protocol ("<split>/quality_protocol", a hash of all of these; the whole record is in
eval/<split>.json under settings.quality). Two protocols must never share a column or an effect, so the
report shows the quality scores of the runs of the most common protocol only; the other runs keep theirs
in runs.csv (with the id) and the report names them, their protocol and the settings that differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from vaebench.config.experiments import flatten
from vaebench.report import render
from vaebench.report.columns import COMPARABLE, NOT_COMPARABLE, PROTOCOL, QUALITY_KEYS, metric
from vaebench.report.load import RunSet

UNRECORDED = "unrecorded"  # the protocol of a run with quality scores but no protocol id


@dataclass
class Protocols:
    """The quality protocols of the finished runs that have a quality score."""

    shown: str | None = None  # the protocol whose scores the tables show (None: no run has a score)
    of_run: dict[str, str] = field(default_factory=dict)  # run -> protocol id
    left_out: dict[str, list[str]] = field(default_factory=dict)  # other protocol -> its runs' labels
    # other protocol -> (setting, value under `shown`, value under it); None when a record is missing
    differences: dict[str, list[tuple[str, str, str]] | None] = field(default_factory=dict)
    not_comparable: bool = False  # a shown score was made with random weights (eval.quality.weights)

    @property
    def runs_shown(self) -> int:
        return sum(p == self.shown for p in self.of_run.values())


def _has_score(runs: pd.DataFrame) -> pd.Series:
    keys = [k for k in QUALITY_KEYS if k in runs]
    if not keys:
        return pd.Series(False, index=runs.index)
    return runs[keys].apply(pd.to_numeric, errors="coerce").notna().any(axis=1)


def _protocol_id(value: Any) -> str:
    return value if isinstance(value, str) and value else UNRECORDED


def quality_protocols(rs: RunSet) -> Protocols:
    """Which protocol the report shows: the one most finished runs with a quality score share (a tie
    goes to the protocol of the first such run in variant order), and how the others differ from it."""
    finished = rs.finished
    scored = finished[_has_score(finished)]
    if scored.empty:
        return Protocols()
    ids = scored.get(PROTOCOL, pd.Series(None, index=scored.index)).map(_protocol_id)
    of_run = dict(zip(scored["run"], ids, strict=True))
    counts = ids.value_counts(sort=False)  # in order of first appearance
    shown = str(counts.index[int(counts.to_numpy().argmax())])
    left_out: dict[str, list[str]] = {}
    for run, label, protocol in zip(scored["run"], scored["label"], ids, strict=True):
        if protocol != shown:
            left_out.setdefault(protocol, []).append(str(label or run))
    reference = _protocol_record(rs, of_run, shown)
    differences = {other: _differences(reference, _protocol_record(rs, of_run, other)) for other in left_out}
    comparable = scored.get(COMPARABLE, pd.Series(None, index=scored.index))[(ids == shown).to_numpy()]
    return Protocols(
        shown=shown,
        of_run=of_run,
        left_out=left_out,
        differences=differences,
        not_comparable=bool((comparable == False).any()),  # noqa: E712 (None: not recorded, not False)
    )


def _protocol_record(rs: RunSet, of_run: dict[str, str], protocol: str) -> dict[str, Any] | None:
    """The protocol's full record (eval/<split>.json, settings.quality) from its first run that has it."""
    for run, pid in of_run.items():
        record = rs.record(run).eval_settings.get("quality") if pid == protocol else None
        if isinstance(record, dict):
            return record
    return None


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _differences(
    shown: dict[str, Any] | None, other: dict[str, Any] | None
) -> list[tuple[str, str, str]] | None:
    """The settings whose values differ between two protocol records (the id aside), in record order."""
    if shown is None or other is None:
        return None
    a, b = flatten(shown), flatten(other)
    keys = [k for k in dict.fromkeys([*a, *b]) if k != "id" and a.get(k, "–") != b.get(k, "–")]
    return [(k, _show(a.get(k, "–")), _show(b.get(k, "–"))) for k in keys]


def with_one_protocol(rs: RunSet, protocols: Protocols) -> RunSet:
    """`rs` with the quality scores of the runs outside the shown protocol blanked (NaN), for every
    table, effect and plot; runs.csv is written from the unblanked runs."""
    outside = [run for run, pid in protocols.of_run.items() if pid != protocols.shown]
    keys = [k for k in QUALITY_KEYS if k in rs.runs]
    if not outside or not keys:
        return rs
    runs = rs.runs.copy()
    runs.loc[runs["run"].isin(outside), keys] = float("nan")
    return replace(rs, runs=runs)


# ----------------------------------------------------------------------------- what the report says


def quality_labels(rs: RunSet) -> str:
    """ "FID, KID, precision": the quality metrics a finished run shows, in reading order."""
    keys = sorted((k for k in QUALITY_KEYS if k in rs.finished), key=lambda k: metric(k).order)
    shown = [k for k in keys if pd.to_numeric(rs.finished[k], errors="coerce").notna().any()]
    return ", ".join(metric(k).label for k in shown)


def summary_sentence(rs: RunSet, protocols: Protocols) -> str:
    """One of the report's opening lines: which protocol the quality scores come from, how many samples,
    and whether they are comparable to published ones; "" without quality scores."""
    if protocols.shown is None:
        return ""
    finished = rs.finished[rs.finished["run"].map(protocols.of_run) == protocols.shown]

    def counts(key: str) -> str:
        values = pd.to_numeric(finished.get(key, pd.Series(dtype=float)), errors="coerce").dropna()
        return "/".join(f"{int(v)}" for v in dict.fromkeys(values)) or "?"

    text = (
        f"Quality scores ({quality_labels(rs)}) from {protocols.runs_shown} runs under one protocol, "
        f"`{protocols.shown}` ({counts('quality_samples')} prior samples against "
        f"{counts('quality_reference_images')} reference images; see 'Reading the quality scores')"
    )
    if protocols.not_comparable:
        text += f": {NOT_COMPARABLE}, made with random extractor weights (eval.quality.weights: random)"
    if protocols.left_out:
        n = sum(len(labels) for labels in protocols.left_out.values())
        text += f". {n} run{'s' * (n != 1)} of another protocol are left out of them (see the note there)"
    return text + "."


def left_out_notes(protocols: Protocols) -> list[str]:
    """Per other protocol: which runs, its id, and the settings that separate it from the shown one."""
    notes = []
    for other, labels in protocols.left_out.items():
        runs = ", ".join(f"`{label}`" for label in labels)
        diff = protocols.differences.get(other)
        if diff is None:
            why = (
                "the full protocol records are not at hand (eval/<split>.json, settings.quality), so what "
                "differs is not shown; compare them in the run folders"
            )
        elif not diff:
            why = "their records list the same settings, so the id differs in something they do not show"
        else:
            why = "what separates the protocols: " + "; ".join(
                f"{k} = {a} in the runs shown, {b} in these" for k, a, b in diff
            )
        notes.append(
            f"Quality scores left out: {runs} ({len(labels)} run{'s' * (len(labels) != 1)}) used protocol "
            f"`{other}`, not `{protocols.shown}` like the {protocols.runs_shown} runs shown; {why}. Scores "
            "of two protocols are not comparable, so the tables, effects and plots show neither mixed: "
            "these runs' scores are in tables/runs.csv (column quality_protocol gives each run's protocol)."
        )
    return notes


def not_comparable_note(protocols: Protocols) -> list[render.Block]:
    """Right above the quality scores: that they were made with random weights, when they were."""
    if not protocols.not_comparable:
        return []
    return [
        render.Text(
            f"Quality scores {NOT_COMPARABLE}: these runs computed them with seeded random Inception/VGG "
            "weights (eval.quality.weights: random, meant for tests). The numbers check the pipeline, not "
            "sample quality, and are not comparable with any published score."
        )
    ]


def split_quality(
    frame: pd.DataFrame, quality_columns: set[str], metric_columns: set[str], protocols: Protocols
) -> list[render.Block]:
    """A formatted variants or effects table as the report shows it: the quality scores in a second table
    under the first, the columns that name the rows repeated, so that neither runs past the page (the
    files in tables/ keep one table each); above it, the random-weights note when it applies."""
    columns = list(frame.columns)
    quality = [
        c
        for i, c in enumerate(columns)
        if c in quality_columns or (c == "vs best" and i > 0 and columns[i - 1] in quality_columns)
    ]
    if not quality:
        return [render.Table(frame)]
    lead = [c for c in columns if c not in metric_columns and c != "vs best"]
    rest = [c for c in columns if c not in lead and c not in quality]
    caption = f"Sample and reconstruction quality, the same rows (protocol `{protocols.shown}`):"
    return [
        *([render.Table(frame[lead + rest])] if rest else []),
        *not_comparable_note(protocols),
        render.Table(frame[lead + quality], caption),
    ]


PROTOCOL_PARAGRAPH = (
    "Reading the quality scores: FID, KID, precision and recall compare prior samples with the evaluated "
    "split's images; recon FID, LPIPS and SSIM compare posterior-mean reconstructions with their inputs. "
    "Lower is better for FID, KID, recon FID and LPIPS, higher for precision, recall and SSIM. "
    "FID, KID and precision/recall depend on the protocol as much as on the "
    "model: the feature extractor and its weights (Inception-v3 for FID and KID, VGG16 for "
    "precision/recall and LPIPS), the resize to the extractor's input (torch-fidelity's TF1-compatible "
    "bilinear, from uint8), the quantisation of samples and images to uint8, the dataset's crop and resize "
    "(vaebench: a 148 px centre crop resized to 64 px, torchvision-style CenterCrop; NVAE and others use "
    "other crops and boxes) and the sample counts (FID is biased upward at small N: fewer samples give a "
    "higher FID for the same model). Scores made with another crop, resize or count are not comparable "
    "with these, published ones included; the protocol id (column quality_protocol of tables/runs.csv) "
    "hashes all of it, and this report never puts two protocols in one column or one effect."
)
