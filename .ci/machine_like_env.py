"""Make a virtual environment that holds only the GPU machines' packages, taken from this interpreter's.

    .venv/bin/python .ci/machine_like_env.py ENV_DIR benchmarks/gpu_machine_packages.txt

CI cannot reproduce the GPU machines (their Python, a CUDA torch), but it can reproduce what matters to
benchmarks/gpu_check.sh there: which packages exist. ENV_DIR becomes a fresh venv (with pip, which the
check uses to install its wheels) whose site-packages has one .pth file pointing at a folder of symbolic
links into this interpreter's site-packages: the listed distributions and, transitively, what they
require (the machines' packages work, so their requirements are there under some name), nothing else.
pydantic, wandb, submitit and sweeps stay absent: a requirement on one of them is not followed (typer
0.29 requires pydantic, but the machines have a typer and no pydantic), and it is printed.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

MUST_BE_ABSENT = {"pydantic", "pydantic-core", "wandb", "submitit", "sweeps"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(wanted: set[str], installed: dict[str, md.Distribution]) -> tuple[set[str], list[str]]:
    """The installed distributions among `wanted` and what they require (extras left out), but none of
    MUST_BE_ABSENT; and the requirements on those that were not followed."""
    env = default_environment() | {"extra": ""}
    todo = [name for name in wanted if name in installed]
    seen: set[str] = set()
    refused: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = normalize(req.name)
            if dep in MUST_BE_ABSENT:
                refused.append(f"{name} requires {dep}")
            elif dep in installed and dep not in seen:
                todo.append(dep)
    return seen, refused


def top_level_entries(dist: md.Distribution) -> set[str]:
    """The names directly in site-packages that a distribution installed (packages, modules, dist-info)."""
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            names.add(first)
    return names


def main(env_dir: Path, package_list: Path) -> None:
    wanted = {
        normalize(line.strip())
        for line in package_list.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    installed = {normalize(d.metadata["Name"]): d for d in md.distributions()}
    chosen, refused = closure(wanted, installed)
    leaked = sorted(chosen & MUST_BE_ABSENT)
    if leaked:
        sys.exit(f"{leaked} are on the machines' list: the rehearsal would prove nothing")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
    links = env_dir / "machine-packages"
    links.mkdir()
    for name in sorted(chosen):
        dist = installed[name]
        site = Path(str(dist.locate_file("")))
        for entry in top_level_entries(dist):
            target = site / entry
            if target.exists() and not (links / entry).exists():
                (links / entry).symlink_to(target)
    (site_packages,) = env_dir.glob("lib/python*/site-packages")
    (site_packages / "machine-packages.pth").write_text(f"{links.resolve()}\n")
    absent = sorted(set(wanted) - set(installed))
    print(
        f"{env_dir}: {len(chosen)} distributions linked ({len(wanted & chosen)} of the machines' list, "
        f"{len(chosen - wanted)} they require); {len(absent)} of the list are not installed here"
    )
    if refused:
        print(f"requirements left out (absent on the machines): {', '.join(sorted(set(refused)))}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
