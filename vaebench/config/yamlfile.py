"""Reading the YAML files people write (experiments, sweeps), with errors that name the file and the fix.

PyYAML on its own lets several mistakes through or answers them with a traceback: a file saved as
Latin-1 or UTF-16 (UnicodeDecodeError), a key written twice (silently, the last one wins: a grid axis
or a `set` entry disappears), pathologically nested flow collections (RecursionError), and aliases
that expand to billions of nodes ("billion laughs"). Each is refused here as a `UserError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from vaebench.core.errors import UserError

MAX_DEPTH = 50
"""Deepest nesting of mappings and lists accepted; real spec files nest 4 levels."""

MAX_NODES = 1_000_000
"""Most nodes a document may expand to (aliases counted each time they are used)."""


class _NoDuplicatesMixin:
    """A loader that refuses a mapping holding the same key twice, with the line of the second one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            line = key_node.start_mark.line + 1
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: let PyYAML give its own error
                continue
            if seen:
                where = f"line {line}" if first_line[key] == line else f"lines {first_line[key]} and {line}"
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice in one mapping ({where}); YAML would silently keep "
                    "only the last one",
                    key_node.start_mark,
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class SafeLoader(_NoDuplicatesMixin, yaml.SafeLoader):
    """yaml.safe_load's rules (YAML 1.1, as `wandb sweep` reads sweep files), duplicates refused."""


class Yaml12Loader(_NoDuplicatesMixin, yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans; duplicates refused.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, which would turn a grid level named
    `off` into `False`. Fields typed bool still accept those words (pydantic parses them).
    """


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _check_size(node: yaml.Node, where: str) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or expanding to more than MAX_NODES nodes."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise UserError(
                f"{where} nests mappings or lists more than {MAX_DEPTH} levels deep (line "
                f"{current.start_mark.line + 1}); a spec file nests a few levels. Check the brackets."
            )
        if count > MAX_NODES:
            raise UserError(
                f"{where} expands to more than {MAX_NODES:,} values (aliases are counted each time they "
                "are used); a spec file has a few hundred. Remove the repeated aliases."
            )
        if isinstance(current, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in current.value for child in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)


def parse_yaml(text: str, where: str, loader: type[yaml.SafeLoader] = Yaml12Loader) -> Any:
    """Parse one YAML document; every problem is a UserError naming `where`."""
    try:
        composer = loader(text)
        try:
            node = composer.get_single_node()
            if node is None:
                return None
            _check_size(node, where)
            return composer.construct_document(node)
        finally:
            composer.dispose()
    except yaml.YAMLError as err:
        raise UserError(f"{where} is not valid YAML: {err}") from None
    except RecursionError:
        raise UserError(
            f"{where} nests mappings or lists too deeply to read (more than {MAX_DEPTH} levels deep); a "
            "spec file nests a few levels. Check the brackets."
        ) from None


def read_yaml_file(path: Path, what: str, example: str, loader: type[yaml.SafeLoader] = Yaml12Loader) -> Any:
    """Read and parse the YAML file at `path`, a `what` (e.g. "Experiment file") like `example`."""
    if not path.exists():
        raise UserError(f"{what} {path} does not exist, e.g. {example}.")
    if not path.is_file():
        raise UserError(f"{what} {path} is a folder, not a file; give a YAML file such as {example}.")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"Cannot read {what.lower()} {path}: {err.strerror}.") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write, is fine
    except UnicodeDecodeError as err:
        encoding = "UTF-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8"
        raise UserError(
            f"{what} {path} is {encoding}: byte {err.start} ({data[err.start : err.start + 1]!r}) is not "
            "valid UTF-8. YAML spec files must be UTF-8 text; re-save it as UTF-8 (e.g. `iconv -f latin1 "
            f"-t utf-8 {path.name}`), or check that it is the file you meant."
        ) from None
    if "\x00" in text:
        raise UserError(f"{what} {path} holds NUL bytes: it is a binary file, not YAML text.")
    return parse_yaml(text, str(path), loader)
