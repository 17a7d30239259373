#!/usr/bin/env bash
# The GPU check: vaebench's fast path, compiled objectives, throughput and data path on a CUDA machine,
# stage by stage, each with its own time limit, in about 5 minutes at most. It needs no network and no
# `pip install -e .`: it runs vaebench from this source tree.
#
#   bash benchmarks/gpu_wheels.sh                                # HERE, once: the wheels the GPU machine lacks
#   bash benchmarks/gpu_check.sh "$OUT"                          # THERE (carry .whl): every stage
#   bash benchmarks/gpu_check.sh "$OUT" --only train packing     # rerun some stages (OUT_DIR first)
#   bash benchmarks/gpu_check.sh --dry-run /tmp/out              # a CPU rehearsal at toy sizes (CI runs it)
#
# First it installs the wheels of $WHEELS (default .whl, made by gpu_wheels.sh) into $SITE (default
# /tmp/site) with pip, no index and no dependencies; then `benchmarks/gpu_check.py` runs the stages with
# PYTHONPATH=$SITE:<this tree>. $PYTHON picks the interpreter (default python3: the GPU machines' own,
# which holds torch). OUT_DIR (default benchmarks/results) gets summary.json and check.log; see
# benchmarks/gpu_check.py for the stages, their limits and what each writes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || { echo "gpu_check: installing the wheels of $WHEELS into $SITE failed" >&2; exit 1; }
  echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_check: no wheels in $WHEELS, so $PY's own packages must hold pydantic (on a GPU machine: run" \
       "benchmarks/gpu_wheels.sh here first and carry .whl)"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
