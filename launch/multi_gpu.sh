#!/usr/bin/env bash
# One node, all its GPUs, one process (JAX drives every local GPU; the batch is split over them).
# Needs the CUDA wheel: .venv/bin/pip install -e .[cuda12]. Usage:
#   launch/multi_gpu.sh configs/ucip.py:middle runs/ucip_middle --config.data.train_dir=DIR ...
# Restrict GPUs with CUDA_VISIBLE_DEVICES=0,1. The global batch must divide by the GPU count.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:?config, e.g. configs/ucip.py:middle}"
WORKDIR="${2:?workdir}"
shift 2
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec .venv/bin/python -m csr_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
