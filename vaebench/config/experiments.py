"""Experiment files: a base spec plus the variants to ablate, expanded into validated `RunSpec`s.

An experiment YAML looks like::

    name: perceptual
    base:                 # a (partial) RunSpec; unspecified fields take their defaults
      train: {steps: 20000, batch_size: 32}
    variants:             # either an explicit list of named overrides ...
      - name: mse
        set: {loss.perceptual_weight: 0.0}
      - name: vgg
        set: {loss.perceptual_weight: 0.1}
    grid:                 # ... or axes whose cartesian product makes the variants
      decoder:                          # an axis with named levels
        isotropic: {model.decoder.kind: isotropic}
        variance: {model.decoder.kind: variance}
      loss.beta: [1, 4]                 # or a dotted key with a list of values (axis "beta")

Variant names come from the axis values (`decoder-isotropic_beta-4`). Overrides are dotted keys;
setting the `kind` of a tagged section (e.g. `model.decoder.kind`) to another kind starts that section
from the new kind's defaults, since the old kind's fields would not apply to it.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from vaebench.config.spec import TAGGED_SECTIONS, RunSpec, shared_fields
from vaebench.config.yamlfile import Yaml12Loader, read_yaml_file
from vaebench.core.errors import UserError

Overrides = dict[str, Any]


def yaml_load(text: str) -> Any:
    """One YAML 1.2 literal or document from a string (override values); errors are yaml.YAMLError."""
    return yaml.load(text, Loader=Yaml12Loader)


# ----------------------------------------------------------------------------- override parsing


def parse_value(text: str) -> Any:
    """Parse a command-line value as a YAML literal, with the numbers YAML 1.1 gets wrong fixed.

    PyYAML reads `1e-05` and `1e5` as strings (YAML 1.1 wants a dot and a signed exponent), but a
    user (or a W&B agent, which prints floats that way) means a float. A W&B agent also writes values
    with Python's str(), so `None` (its null) is read as null; True/False are YAML booleans already.
    """
    if text.strip() == "None":
        return None
    try:
        value = yaml_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return int(value) if re.fullmatch(r"[-+]?\d+", value) else float(value)
        except ValueError:
            return value
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """`loss.beta=4`, `--loss.beta=4` (the form W&B agents produce) -> ("loss.beta", 4)."""
    key, sep, raw = item.lstrip("-").partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise UserError(
            f"Cannot read the override {item!r}: write it as dotted.key=value, e.g. `--set loss.beta=4` "
            "or `--loss.beta=4`."
        )
    return key, parse_value(raw)


def parse_overrides(items: Iterable[str]) -> Overrides:
    return dict(parse_override(item) for item in items)


def apply_overrides(tree: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the nested dict `tree` with dotted-key `overrides` applied.

    `kind` keys are applied first: changing a tagged section's kind (a section without `kind` is its
    default kind) resets that section to `{"kind": new}` plus the fields every kind shares
    (`shared_fields`: for `loss`, likelihood and the perceptual settings), so the other overrides in the
    same set then fill the new kind's fields.
    """
    out = copy.deepcopy(tree)
    ordered = sorted(overrides.items(), key=lambda kv: not kv[0].endswith(".kind"))
    for dotted, value in ordered:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        path = ".".join(parents)
        default = TAGGED_SECTIONS[path][0] if path in TAGGED_SECTIONS else value
        if leaf == "kind" and node.get("kind", default) != value:
            keep = shared_fields(path)
            for key in [k for k in node if k not in keep]:
                del node[key]
        node[leaf] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- error messages


def _loc_to_path(loc: tuple[Any, ...], data: Any) -> tuple[str, Any, str | None]:
    """A pydantic error location as (dotted path, the input there, the defaulted kind passed through).

    Union tags (`data.synthetic.root`) are dropped: they are not keys the user wrote. A tagged section
    written without `kind` takes its default kind, which is returned so the message can say so.
    """
    parts: list[str] = []
    node = data
    defaulted = None
    for position, item in enumerate(loc):
        if isinstance(node, Mapping) and item in node:
            node = node[item]
            parts.append(str(item))
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
            parts.append(str(item))
        elif isinstance(item, str) and isinstance(node, Mapping) and node.get("kind") == item:
            continue  # the tag of a discriminated union, not a key the user wrote
        elif (
            isinstance(item, str)
            and isinstance(node, Mapping)
            and "kind" not in node
            and position < len(loc) - 1
        ):
            defaulted = f"{'.'.join(parts)}.kind" if parts else "kind", item
            continue  # the tag of the default kind, filled in for a section written without `kind`
        else:
            parts.append(str(item))
            node = None
    hint = f"{defaulted[0]} is not given, so it is the default, {defaulted[1]!r}" if defaulted else None
    return ".".join(parts), node, hint


def format_validation_error(err: ValidationError, data: Any, source: str) -> str:
    """One line per problem: where (file and dotted path), what was given, what is allowed."""
    lines = [f"Invalid spec in {source}:"]
    for e in err.errors():
        path, given, defaulted = _loc_to_path(tuple(e["loc"]), data)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; `vaebench spec show` lists the defaults)"
            if defaulted:
                msg = f"unknown key: {defaulted} (set the kind whose field this is)"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind; allowed kinds: {e['ctx']['expected_tags']}"
        elif e["type"] == "finite_number":
            msg = "must be a finite number (inf and nan cannot train)"
        plain = e["type"] in ("missing", "extra_forbidden") or not e["loc"]
        shown = "" if plain else f" (given: {given!r})"
        lines.append(f"  - {path or '<top level>'}: {msg}{shown}")
    return "\n".join(lines)


def validate_run_spec(tree: dict[str, Any], source: str) -> RunSpec:
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as err:
        raise UserError(format_validation_error(err, tree, source)) from None


# ----------------------------------------------------------------------------- experiment files


def _folder_name(name: str) -> str:
    """Names become folders (runs/<experiment>/<variant>/): no `/`, no `.`/`..`, nothing hidden."""
    if not re.fullmatch(r"[\w.=+-]+", name) or name.startswith("."):
        raise ValueError(
            "must be a folder name: letters, digits and _ . = + - only, not starting with a dot "
            "(it becomes a folder under runs/)"
        )
    return name


FolderName = Annotated[str, AfterValidator(_folder_name)]


@dataclass(frozen=True)
class RunLabels:
    """What a run is part of: its experiment, variant, axis levels and overrides (not what it trains)."""

    experiment: str = ""
    variant: str = ""
    axes: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


class VariantEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FolderName = Field(description="Folder-safe name of the variant.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted-key overrides of the base.")


class ExperimentFile(BaseModel):
    """The YAML as written; `expand` turns it into validated variants."""

    model_config = ConfigDict(extra="forbid")
    name: FolderName
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    variants: list[VariantEntry] | None = None
    grid: dict[str, dict[Any, dict[str, Any]] | list[Any]] | None = None

    @model_validator(mode="after")
    def _one_kind_of_variants(self) -> ExperimentFile:
        if self.variants is not None and self.grid is not None:
            raise ValueError("give either `variants` or `grid`, not both")
        if self.variants is not None and not self.variants:
            raise ValueError(
                "`variants` is empty: list at least one variant, or leave the key out to run `base`"
            )
        if self.grid is not None and not self.grid:
            raise ValueError("`grid` is empty: give at least one axis, or leave the key out to run `base`")
        for axis, levels in (self.grid or {}).items():
            if not levels:
                raise ValueError(f"grid axis {axis!r} has no levels, so the grid would have no variant")
        if self.variants is not None:
            names = [v.name for v in self.variants]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"variant names must be unique; repeated: {dupes}")
        return self


@dataclass(frozen=True)
class Variant:
    """One validated variant of an experiment: its name, its axis levels and its full spec."""

    experiment: str
    name: str
    spec: RunSpec
    axes: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> RunLabels:
        """What its runs record besides the spec (spec.yaml, W&B): experiment, variant, axes, overrides."""
        return RunLabels(self.experiment, self.name, self.axes, self.overrides)


def _level_name(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^\w.+-]", "", text) or "none"


def _grid_axes(grid: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, Overrides]]]]:
    """Normalise both axis forms to (axis name, [(level name, overrides)])."""
    axes = []
    for key, levels in grid.items():
        if isinstance(levels, list):  # dotted key with values: axis named after the last part
            axes.append((key.split(".")[-1], [(_level_name(v), {key: v}) for v in levels]))
        else:
            axes.append((key, [(_level_name(level), dict(sets)) for level, sets in levels.items()]))
    return axes


def _check_grid_names(path: Path, names: list[str]) -> None:
    """Grid variant names are folder names made from the levels: they must be valid and distinct."""
    for name in names:
        try:
            _folder_name(name)
        except ValueError as err:
            raise UserError(
                f"{path}: the grid makes a variant named {name!r}, which {err}. Rename the level."
            ) from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(
            f"{path}: two grid levels make the same variant name {repeated[0]!r} (level names keep only "
            "letters, digits and _ . + -); give the levels names that differ, e.g. as a mapping "
            "`axis: {name: {dotted.key: value}}`."
        )


def load_yaml(path: Path) -> Any:
    return read_yaml_file(path, "Experiment file", "experiments/quickstart.yaml")


def load_experiment(path: Path | str, overrides: Mapping[str, Any] | None = None) -> list[Variant]:
    """Read an experiment file and return its variants, each validated with `overrides` applied on top."""
    path = Path(path)
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping with `name`, `base` and `variants` or `grid`.")
    try:
        exp = ExperimentFile.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, raw, str(path))) from None

    overrides = dict(overrides or {})
    if exp.grid:
        axes = _grid_axes(exp.grid)
        entries = []
        for combo in itertools.product(*(levels for _, levels in axes)):
            merged: Overrides = {}
            for _, sets in combo:
                merged.update(sets)
            levels = {axis: level for (axis, _), (level, _) in zip(axes, combo, strict=True)}
            name = "_".join(f"{axis}-{level}" for axis, level in levels.items())
            entries.append((name, levels, merged))
        _check_grid_names(path, [name for name, _, _ in entries])
    elif exp.variants:
        entries = [(v.name, {"variant": v.name}, dict(v.set)) for v in exp.variants]
    else:
        entries = [("base", {}, {})]

    variants = []
    for name, levels, sets in entries:
        tree = apply_overrides(apply_overrides(exp.base, sets), overrides)
        spec = validate_run_spec(tree, f"{path} (variant {name!r})")
        variants.append(Variant(exp.name, name, spec, levels, {**sets, **overrides}))
    return variants


def select(variants: list[Variant], names: Iterable[str]) -> list[Variant]:
    """Keep the named variants (all when `names` is empty); an unknown name lists the known ones."""
    names = list(names)
    if not names:
        return variants
    known = {v.name: v for v in variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"Unknown variant(s) {unknown}. This experiment has: {sorted(known)}.")
    return [known[n] for n in names]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"loss": {"beta": 1}} -> {"loss.beta": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out
