"""A stand-in for `vaebench run` in the sweep tests: a run folder with known metrics, in a tenth of a second.

Reads the parameters a W&B agent passes (`--x=1.5 --rows=3 --pause=0.1`) and the sweep run's name and
runs folder from the environment, like `vaebench run` does, and writes
`$VAEBENCH_RUNS_DIR/fake/base+$VAEBENCH_SWEEP_RUN/seed0/` with one metrics.jsonl row per "step"
(val/loss = (x - 2)^2 + 1/step), a summary.json (val/loss = (x - 2)^2, plus the parameters and the start
and end times) and DONE. A rerun continues after the rows already written, as a resumed run would.
x >= 99 fails with an `error:` line, as vaebench does for a user error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    if os.environ.get("VAEBENCH_WORKER"):  # like vaebench's own entry point: honour the executor's SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
    params: dict[str, object] = {}
    for arg in sys.argv[1:]:
        key, _, raw = arg.lstrip("-").partition("=")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    x = float(params.get("x", 0.0))  # type: ignore[arg-type]
    if x >= 99:
        print(f"error: x = {x} is out of range (the fake run fails on purpose)", flush=True)
        return 3
    rows, pause = int(params.get("rows", 3)), float(params.get("pause", 0.0))  # type: ignore[arg-type]
    name = os.environ["VAEBENCH_SWEEP_RUN"]
    folder = Path(os.environ["VAEBENCH_RUNS_DIR"]) / "fake" / f"base+{name}" / "seed0"
    folder.mkdir(parents=True, exist_ok=True)
    metrics = folder / "metrics.jsonl"
    done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    print(f"start {name} at step {done}", flush=True)
    started = time.time()
    with metrics.open("a") as f:
        for step in range(done + 1, rows + 1):
            time.sleep(pause)
            f.write(json.dumps({"step": step, "val/loss": (x - 2) ** 2 + 1 / step}) + "\n")
            f.flush()
    summary = {"val/loss": (x - 2) ** 2, "params": params, "started": started, "ended": time.time()}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "DONE").write_text("done\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
