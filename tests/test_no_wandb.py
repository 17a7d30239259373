"""`python -m vaebench run` with tracking off imports neither W&B nor the launchers' extras.

The GPU machines have no wandb, submitit or sweeps, and benchmarks/gpu_check.sh runs vaebench there from
the source tree (carrying the wandb wheel would cost about 20 MiB of the 64 MiB that travel), so W&B
must be imported only when tracking is on. The run happens in a subprocess whose import system refuses
those packages and records every attempt, even one that vaebench would catch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tiny

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("wandb", "submitit", "sweeps")
BLOCKER = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            with open({log!r}, "a") as f:
                f.write(name + "\\n")
            raise ImportError(f"{{name}} is blocked by the test")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv[0] = "vaebench"
runpy.run_module("vaebench", run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_with_tracking_off_never_imports_wandb(tmp_path: Path) -> None:
    attempts = tmp_path / "imports.txt"
    code = BLOCKER.format(blocked=BLOCKED, log=str(attempts))
    args = ["run", str(tiny.QUICKSTART), "--variant", "isotropic", "--device", "cpu", "--quiet"]
    args += ["--runs-dir", str(tmp_path / "runs"), *tiny.set_args({**tiny.TINY, "eval.at_end": True})]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert list((tmp_path / "runs").rglob("summary.json")), "the run wrote no summary"
    assert not attempts.exists(), f"imported with tracking off: {attempts.read_text().split()}"
