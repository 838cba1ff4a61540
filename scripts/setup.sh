#!/usr/bin/env bash
# Creates .venv with everything the main job, the prep step (with its Beam runner) and the
# tests need.
# Order matters: torch is pinned first (a local CPU wheel; anything unpinned pulls a
# multi-GB CUDA build), then the package with its extras, then compressai with --no-deps
# (its metadata asks for numpy<2 and torchvision, neither of which works beside jax/CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.csr_jax_setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[prep,dev,beam]"
pip install -q --no-deps compressai==1.2.8
echo "$want" > "$stamp"
echo "setup: $VENV ready"
