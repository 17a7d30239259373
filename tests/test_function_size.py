"""Functions stay readable: none in the package is over 120 lines, and the training loop fits a screen.

A function's size is its lines from `def` to its last line: signature, docstring, comments, blank
lines and nested functions included, decorators not. The training loop is `train_loop` in
vaebench/train/loop.py, in the natural order (nanoGPT's train.py, torchtitan's Trainer.train, MAE's
train_one_epoch): the wiring around it (opening the run folder, building the run, finishing it) lives
in other functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vaebench"
MAX_LINES = 120
LOOP = "vaebench/train/loop.py::train_loop"
LOOP_MAX_LINES = 80


def function_sizes(source: str, path: str) -> dict[str, int]:
    """Lines per function or method in `source`, by `path::Class.method` (`outer.inner` when nested)."""
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                sizes[f"{path}::{name}"] = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)  # functions under `if`, `try`, `with` ...

    visit(ast.parse(source), "")
    return sizes


def package_function_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        sizes |= function_sizes(file.read_text(), file.relative_to(PACKAGE.parent).as_posix())
    return sizes


def test_a_functions_size_counts_from_def_to_its_last_line() -> None:
    source = '''
import functools


class Trainer:
    @functools.cache
    def step(self):
        """Docstring."""

        def inner():
            return 1

        return inner()


if True:
    def hidden():
        pass
'''
    assert function_sizes(source, "x.py") == {
        "x.py::Trainer.step": 7,
        "x.py::Trainer.step.inner": 2,
        "x.py::hidden": 2,
    }


def test_no_function_in_the_package_is_over_120_lines() -> None:
    sizes = package_function_sizes()
    assert len(sizes) > 300, "the walk found too few functions to be reading the package"
    too_long = {name: lines for name, lines in sorted(sizes.items()) if lines > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}; split each into steps a reader can name"


def test_the_training_loop_is_at_most_80_lines() -> None:
    sizes = package_function_sizes()
    assert LOOP in sizes, f"no {LOOP}: the loop of one run is that function, and train() wires it up"
    assert sizes[LOOP] <= LOOP_MAX_LINES, f"{LOOP} is {sizes[LOOP]} lines, over {LOOP_MAX_LINES}"
