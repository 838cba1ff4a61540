#!/usr/bin/env bash
# Multi-host: the same command on every host of a Cloud TPU VM slice, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command \
#     "cd csr_jax && launch/tpu_vm.sh configs/ucip.py:middle gs://BUCKET/runs/ucip --config.data.train_dir=..."
# JAX discovers the slice (--distributed). For GPU clusters without auto-detection set
# COORDINATOR=host0:1234 NUM_PROCESSES=N PROCESS_ID=i on each host instead.
# Each host reads a disjoint share of the records; WORKDIR must be shared (GCS or NFS).
# Needs jax[tpu]==0.10.2 (pip install "jax[tpu]==0.10.2") in .venv on every host.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:?config}"
WORKDIR="${2:?workdir (shared by all hosts)}"
shift 2
if [[ -n "${COORDINATOR:-}" ]]; then
  DIST=(--coordinator_address "$COORDINATOR" --num_processes "${NUM_PROCESSES:?}"
        --process_id "${PROCESS_ID:?}")
else
  DIST=(--distributed)
fi
exec .venv/bin/python -m csr_jax.main --config "$CONFIG" --workdir "$WORKDIR" "${DIST[@]}" "$@"
