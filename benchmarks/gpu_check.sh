#!/usr/bin/env bash
# The GPU check of the fast path, as one prepared script (about 8 minutes on an H100, at most ~10).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root, on a machine with a CUDA GPU
#
# It installs nothing: it needs a python with a CUDA build of torch and vaebench installed (the
# repository's .venv when there is one; else $PYTHON; else python3). Each stage has its own time limit
# and writes as it goes, so a stage that runs out of time still leaves its earlier results:
#   OUT_DIR/env.txt             nvidia-smi, torch and CUDA versions
#   OUT_DIR/pytest.log          the fast path's tests, the CUDA ones included (skipped on CPU)
#   OUT_DIR/throughput.json     train steps at batch 16/32/128 and evaluation, naive vs vaebench, + packing 4
#   OUT_DIR/data.json           the JPEG path against the prepared cache
# Then copy the tables into benchmarks/RESULTS.md with the machine they ran on.
set -uo pipefail
OUT=${1:-${OUT:-benchmarks/results}}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

{
  nvidia-smi || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== 1/3 tests (limit 150 s)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_fastpath.py tests/test_evaluate.py \
  2>&1 | tee "$OUT/pytest.log" | tail -15

echo "== 2/3 throughput (limit 330 s)"
timeout 330 "$PY" benchmarks/throughput.py --packing 4 --json "$OUT/throughput.json" \
  2>&1 | tee "$OUT/throughput.log" | tail -40

echo "== 3/3 data (limit 90 s)"
timeout 90 "$PY" benchmarks/data.py --images 2000 --seconds 3 --json "$OUT/data.json" \
  2>&1 | tee "$OUT/data.log" | tail -15
echo "results in $OUT"
