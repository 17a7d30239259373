"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and break when they should.

The contracts say which way vaebench's packages may import (the pipeline's layers, highest first:
cli -> report -> launch -> train | evaluation -> runs -> config -> objectives | data -> model -> core),
that no modules of one package import each other in a circle, and that the entries of a registry
(objectives, decoder heads, metrics, report plots) do not import each other. `.ci/run` runs
`lint-imports` on them; these tests run it too, on this checkout, and on temporary copies of the
package with one forbidden import planted, to show that the check fails then and names the import: a
contract that cannot fail checks nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The console script beside this interpreter: .venv/bin/lint-imports, as `.ci/run` and the README run it.
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

LAYERS = "vaebench's pipeline layers"
OBJECTIVES = "objectives do not import each other; annealing and the perceptual loss are below them"


def lint_imports(root: Path) -> str:
    """Runs `lint-imports` with `root/pyproject.toml` on the package `root/vaebench`; returns its output.

    Python would find an installed vaebench (an editable install of another checkout, say) before the
    one under `root` unless `root` comes first on sys.path: PYTHONPATH is exactly `root`, and the
    package that lint-imports will analyse is checked to be the one under `root` before it runs.
    """
    assert LINT_IMPORTS.exists(), f"no {LINT_IMPORTS}: install the dev extra, pip install -e '.[dev]'"
    # COLUMNS: rich wraps at 80 columns without a terminal, which would split the lines asserted below.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "400"}
    found = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('vaebench').origin)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(found.stdout.strip()) == root / "vaebench" / "__init__.py", found.stdout
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,  # where lint-imports reads pyproject.toml
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    broken = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", output)
    assert broken, f"lint-imports did not check the contracts (exit {done.returncode}):\n{output}"
    assert (done.returncode == 0) == (broken[2] == "0"), output
    return output


def copy_of_the_package(tmp_path: Path) -> Path:
    """vaebench/ and pyproject.toml copied into tmp_path, to plant an import in without touching ours."""
    shutil.copytree(ROOT / "vaebench", tmp_path / "vaebench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def plant(root: Path, module: str, code: str) -> int:
    """Appends `code` to the module's file; returns the line number of its last line (the import)."""
    path = root / Path(*module.split(".")).with_suffix(".py")
    text = path.read_text().rstrip("\n") + "\n\n" + code.strip("\n") + "\n"
    path.write_text(text)
    return len(text.splitlines())


def status(output: str, contract: str) -> str:
    """KEPT or BROKEN, as lint-imports says for the named contract."""
    found = re.search(rf"^{re.escape(contract)} (KEPT|BROKEN)$", output, re.MULTILINE)
    assert found, f"lint-imports did not check the contract {contract!r}:\n{output}"
    return found[1]


def test_this_checkout_keeps_every_import_contract() -> None:
    output = lint_imports(ROOT)
    assert re.search(r"Contracts: \d+ kept, 0 broken\.", output), output
    for contract in (LAYERS, OBJECTIVES):
        assert status(output, contract) == "KEPT"


def test_the_contracts_cannot_be_dodged() -> None:
    """Type-only imports count, no import is let off, and a new top-level package must be placed."""
    config = (ROOT / "pyproject.toml").read_text().split("[tool.importlinter]", 1)[1]
    settings = [line.strip().replace(" ", "") for line in config.splitlines() if not line.startswith("#")]
    assert "exclude_type_checking_imports=false" in settings
    assert not any(s.startswith(("ignore_imports", "exhaustive_ignores")) for s in settings)
    layers_contract = config.split(f'name = "{LAYERS}"', 1)[1].split("[[tool.importlinter.contracts]]")[0]
    assert "exhaustive = true" in layers_contract


def test_ci_runs_the_contracts_before_the_tests() -> None:
    """`.ci/run` runs lint-imports after the install (which brings it) and before the test suite."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith(("#", "echo"))]
    lint = next(i for i, c in enumerate(commands) if ".venv/bin/lint-imports" in c)
    install = next(i for i, c in enumerate(commands) if "pip install -e" in c)
    tests = next(i for i, c in enumerate(commands) if c.startswith(".venv/bin/python -m pytest"))
    assert install < lint < tests


@pytest.mark.parametrize(
    "code",
    [
        "import vaebench.cli",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import vaebench.cli",
    ],
    ids=["import", "type-checking-import"],
)
def test_an_upward_import_breaks_the_layers_and_is_named(tmp_path: Path, code: str) -> None:
    """The model (second layer from the bottom) importing the CLI (the top), even for type hints only."""
    root = copy_of_the_package(tmp_path)
    line = plant(root, "vaebench.model.vae", code)
    output = lint_imports(root)
    assert status(output, LAYERS) == "BROKEN"
    assert "vaebench.model is not allowed to import vaebench.cli" in output
    assert f"- vaebench.model.vae -> vaebench.cli (l.{line})" in output


@pytest.mark.parametrize(
    ("contract", "importer", "imported"),
    [
        (OBJECTIVES, "vaebench.objectives.elbo", "vaebench.objectives.iwae"),
        (
            "decoder heads do not import each other",
            "vaebench.model.decoders.sigma_vae",
            "vaebench.model.decoders.isotropic",
        ),
        (
            "metrics do not import each other",
            "vaebench.evaluation.metrics.latent",
            "vaebench.evaluation.metrics.bounds",
        ),
        (
            "report plots do not import each other; their shared helpers are below them",
            "vaebench.report.plots.curves",
            "vaebench.report.plots.effects",
        ),
    ],
    ids=["objectives", "decoder-heads", "metrics", "report-plots"],
)
def test_an_import_between_two_registry_entries_breaks_their_independence(
    tmp_path: Path, contract: str, importer: str, imported: str
) -> None:
    """Only that contract breaks: the import points neither up a layer nor round a circle."""
    root = copy_of_the_package(tmp_path)
    line = plant(root, importer, f"import {imported}")
    output = lint_imports(root)
    assert status(output, contract) == "BROKEN"
    assert re.search(r"Contracts: \d+ kept, 1 broken\.", output), output
    assert f"- {importer} -> {imported} (l.{line})" in output


def test_a_circle_between_two_modules_of_a_package_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    """runs/io.py imports runs/paths.py; paths importing io back closes a circle inside runs/."""
    root = copy_of_the_package(tmp_path)
    plant(root, "vaebench.runs.paths", "import vaebench.runs.io")
    output = lint_imports(root)
    assert status(output, "no import cycles between the modules of a package") == "BROKEN"
    assert re.search(r"Contracts: \d+ kept, 1 broken\.", output), output
    assert "No cycles are allowed in vaebench.runs." in output


def layers_top_first() -> list[list[str]]:
    """The layers contract's layers, highest first, each a list of its sibling packages or modules."""
    config = (ROOT / "pyproject.toml").read_text()
    contract = config.split(f'name = "{LAYERS}"', 1)[1]
    layers = re.search(r"^layers = \[(.*?)^\]", contract, re.MULTILINE | re.DOTALL)
    assert layers, f"no layers in the contract {LAYERS!r}"
    return [[name.strip() for name in layer.split("|")] for layer in re.findall(r'"([^"]+)"', layers[1])]


def test_the_readme_layout_lists_every_package_from_the_bottom_layer_up() -> None:
    """README's "Layout": one line per package of vaebench/ (and cli.py), none missing, none extra."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n### Layout\n" in readme, 'the README has no "### Layout" section'
    layout = readme.split("\n### Layout\n", 1)[1].split("\n#", 1)[0]
    listed = []
    for head in re.findall(r"^- (.*?): ", layout, re.MULTILINE):  # "- `vaebench/model/`: the VAE, ..."
        for name in re.findall(r"`(?:vaebench/)?([\w.]+?)(?:/|\.py)?`", head):
            listed.append(name)
    package = ROOT / "vaebench"
    tree = {p.parent.name for p in package.glob("*/__init__.py")}
    tree |= {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    assert not tree - set(listed), f"not in README's layout: {sorted(tree - set(listed))}"
    assert not set(listed) - tree, f"in README's layout but not in vaebench/: {sorted(set(listed) - tree)}"
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    layer = {name: i for i, names in enumerate(layers_top_first()) for name in names}
    assert [layer[name] for name in listed] == sorted((layer[name] for name in listed), reverse=True), (
        f"README's layout is not from the bottom layer up: {listed}, layers (top first) {layers_top_first()}"
    )
