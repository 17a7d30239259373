"""The building blocks of every spec section: strict pydantic models and number types.

They live apart from `vaebench.config.spec` so that a registry entry (an objective, a decoder head) can define
its own section without importing the spec that is assembled from the registries.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from typing import Annotated, Any, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
"""An int that refuses booleans: pydantic alone reads `latent_dim: true` as 1."""
Float = Annotated[float, BeforeValidator(_not_bool)]
"""A float that refuses booleans (finiteness comes from `Section`'s allow_inf_nan=False)."""


class Section(BaseModel):
    """Base for every spec section: unknown keys are errors, values are validated on assignment.

    Floats must be finite: `inf`/`nan` pass pydantic's `gt=0` but cannot train. Number fields are
    typed `Int`/`Float`, which refuse booleans.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def default_kind(kind: str) -> BeforeValidator:
    """A tagged section written without its `kind` is the default kind, as an absent section would be.

    Without this pydantic answers `data: {image_size: 40}` with "Unable to extract tag using
    discriminator", hiding the real problem (here: the image size).
    """

    def fill(value: Any) -> Any:
        return {"kind": kind, **value} if isinstance(value, dict) and "kind" not in value else value

    return BeforeValidator(fill)


Positive = Annotated[Int, Field(ge=1)]


def tagged_union(default: str, specs: Sequence[type[Section]]) -> Any:
    """The discriminated union (on `kind`) of a registry's spec sections, `default` when `kind` is absent.

    Built at import time from what the registry holds, so a new entry needs no edit here.
    """
    union = specs[0] if len(specs) == 1 else Union[tuple(specs)]  # noqa: UP007  (a runtime tuple of types)
    if len(specs) == 1:
        return Annotated[union, default_kind(default)]
    return Annotated[union, Field(discriminator="kind"), default_kind(default)]


def register_entry(
    registry: dict[str, Any], key: str, entry: Any, what: str, spec: type[Section] | None = None
) -> Any:
    """Add `entry` to a registry under `key` (called by an entry's module at import time).

    Two entries with one key are an error, not a silent replacement; an entry with a spec section must
    have `key` as its section's default `kind`, or the tagged union would dispatch to another entry.
    """
    if key in registry:
        raise ValueError(f"two entries register {what} {key!r}")
    if spec is not None and spec.model_fields["kind"].default != key:
        raise ValueError(f"{what} {key!r}: its spec's kind defaults to {spec.model_fields['kind'].default!r}")
    registry[key] = entry
    return entry


def import_entries(package: str, path: Sequence[str]) -> None:
    """Import every public module of a registry package, so that a new file registers itself.

    This is what makes adding an objective, a decoder head or a metric a one-file change: the new
    module's `register(...)` call runs when the package is imported.
    """
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
