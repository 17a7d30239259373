#!/usr/bin/env bash
# CI: benchmarks/gpu_check.sh --dry-run as it would run on a GPU machine, minus the GPU. The wheel step
# (for this Python), an environment that holds only the machines' packages (linked from .venv, so
# pydantic, wandb and submitit are absent: .ci/machine_like_env.py), no package index while the check
# installs its wheels, then every stage at toy sizes on the CPU. A few minutes on 2 cores; it downloads
# about 3 MB. Run from the repository root after .ci/run has made .venv.
set -euo pipefail
VENV=${VENV:-.venv}  # the environment .ci/run made
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
PYTHON="$VENV/bin/python" bash benchmarks/gpu_wheels.sh --native "$tmp/whl"
"$VENV/bin/python" .ci/machine_like_env.py "$tmp/env" benchmarks/gpu_machine_packages.txt
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null \
  PYTHON="$tmp/env/bin/python" WHEELS="$tmp/whl" SITE="$tmp/site" \
  bash benchmarks/gpu_check.sh --dry-run "$tmp/out"
echo "gpu_check dry run: $(( $(date +%s) - start )) s"
