"""Output that is not a terminal is never hard-wrapped: the CLI as CI, SLURM and a pipe see it.

Each test runs `python -m vaebench` as a subprocess from a working directory whose path is over 100
characters, with stdout and stderr piped and COLUMNS unset, 40 or 500: vaebench's own messages and
tables, and Typer's help and usage errors, must arrive as whole lines whatever the width.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.core.weights import WEIGHTS

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PARALLEL_HELP = (
    "Runs at once, each a `vaebench run` subprocess with its own log: one per --devices entry (GPU), "
    "or CPU workers. Default: 1, in this process; with --executor slurm, jobs queued at once."
)


@pytest.fixture
def deep_folder(tmp_path: Path) -> Path:
    """A working directory whose path is over 100 characters, holding copies of the shipped experiments."""
    folder = tmp_path / "a-clone-in-a-folder-whose-name-is-long" / "and-nested-again-like-a-real-project-tree"
    folder.mkdir(parents=True)
    shutil.copytree(EXPERIMENTS, folder / "experiments")
    assert len(str(folder)) > 100
    return folder


def vaebench(cwd: Path, columns: str | None, *argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """`python -m vaebench ARGV` in `cwd` for each argv, output piped, with COLUMNS set to `columns` (None:
    unset). The processes run at once: each spends seconds importing torch, and the cases are independent."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    if columns is not None:
        env["COLUMNS"] = columns
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vaebench", *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("columns", [None, "40", "500"], ids=["COLUMNS-unset", "COLUMNS-40", "COLUMNS-500"])
def test_cli_output_in_a_pipe_is_never_wrapped_whatever_the_path_or_columns(
    deep_folder: Path, columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(deep_folder / "empty_torch_home"))
    quickstart = deep_folder / "experiments" / "quickstart.yaml"
    missing = deep_folder / "experiments" / "no-such-experiment.yaml"
    ok, error, table, usage, help_, weights = vaebench(
        deep_folder,
        columns,
        ["spec", "validate", str(quickstart)],
        ["spec", "validate", str(missing)],
        ["spec", "show", str(deep_folder / "experiments" / "ablation.yaml")],
        ["run", str(quickstart), "--device", "gpu"],
        ["run", "--help"],
        ["weights", "list", "vgg16"],
    )

    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"ok: {quickstart} expands to 2 valid variant(s)."]

    # a vaebench error (a rich console on stderr) names the whole path on its one line
    assert error.returncode == 1
    assert error.stderr.splitlines()[0].startswith(f"error: Experiment file {missing} does not exist")

    # a table: every variant name of the 16-variant grid whole on its row, none folded
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if "_batch-" in line]
    assert len(rows) == 16 and all("decoder-" in row and "perceptual-" in row for row in rows)

    # Typer's usage error and help: whole lines too (no panel narrower than its text)
    assert usage.returncode == 2
    assert any(
        "'gpu' is not a device: give auto, cpu, cuda or cuda:N (e.g. cuda:1)." in line
        for line in usage.stderr.splitlines()
    ), usage.stderr
    assert help_.returncode == 0
    assert any(PARALLEL_HELP in line for line in help_.stdout.splitlines()), help_.stdout

    # what each weights file is for, on one line (the torch hub cache is empty)
    assert weights.returncode == 0, weights.stderr
    assert weights.stdout.splitlines()[:2] == [
        "vgg16: missing: run `vaebench weights fetch vgg16`",
        "  file: vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth)",
    ]
    assert f"  used by: {WEIGHTS['vgg16'].description}" in weights.stdout.splitlines()


def test_a_console_on_a_pipe_keeps_rules_and_short_tables_at_the_usual_width() -> None:
    """Only what does not fit grows: a rule is as wide as rich makes it without a terminal, not a
    million characters, and a long line stays one line."""
    from vaebench.core.console import make_console

    out = io.StringIO()
    console = make_console(file=out)
    console.rule("quickstart / isotropic")
    console.print("x" * 300)
    lines = out.getvalue().splitlines()
    assert len(lines[0]) == 40 and "quickstart / isotropic" in lines[0]  # COLUMNS=40 (conftest)
    assert lines[1] == "x" * 300
