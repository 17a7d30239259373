#!/usr/bin/env bash
# Downloads the wheels of benchmarks/gpu_wheels.txt for the GPU machines (CPython 3.12, manylinux x86-64)
# into .whl/ (git ignores it), then checks with pip, offline, that they install with nothing else:
#
#   bash benchmarks/gpu_wheels.sh                      # here, before the GPU check; a few seconds, about 3 MB
#   bash benchmarks/gpu_wheels.sh --native DEST        # for $PYTHON's own version and platform (CI's rehearsal)
#
# The GPU machines reach no package index, so benchmarks/gpu_check.sh installs these there with
# `pip install --no-index --no-deps --target`. $PYTHON (default python3) runs pip here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dest=.whl
platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64)
if [ "${1:-}" = "--native" ]; then
  platform=()
  dest=${2:?"--native needs a destination folder"}
fi
mkdir -p "$dest"
rm -f "$dest"/*.whl  # one version of each: an old one beside a new one stops the install there
"$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$dest" -r benchmarks/gpu_wheels.txt
"$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$dest" -r benchmarks/gpu_wheels_nodeps.txt
# Each of those needs only what the machines hold: every Requires-Dist name is in their package list.
"$PY" - "$dest" <<'PYEOF'
import re, sys, zipfile
from pathlib import Path
have = {l.strip().lower().replace("_", "-") for l in Path("benchmarks/gpu_machine_packages.txt").read_text().splitlines()
        if l.strip() and not l.startswith("#")}
wanted = [l.split("==")[0].strip().lower() for l in Path("benchmarks/gpu_wheels_nodeps.txt").read_text().splitlines()
          if l.strip() and not l.startswith("#")]
for wheel in Path(sys.argv[1]).glob("*.whl"):
    name = wheel.name.split("-")[0].lower().replace("_", "-")
    if name not in wanted:
        continue
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        needs = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(?![^\n]*extra ==)", z.read(meta).decode(), re.M)
    missing = sorted({n.lower().replace("_", "-") for n in needs} - have)
    if missing:
        sys.exit(f"gpu_wheels: {wheel.name} needs {missing}, which the GPU machines lack: add their wheels")
PYEOF

# The set must be complete: resolve it with no index and no other source of packages than $dest.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
  "$PY" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$dest" --only-binary=:all: \
  "${platform[@]}" --target "$check/site" -r benchmarks/gpu_wheels.txt
echo "gpu_wheels: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest; they resolve offline:"
ls "$dest"
