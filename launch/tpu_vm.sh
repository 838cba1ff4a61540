#!/usr/bin/env bash
# Multi-host training on a Cloud TPU VM slice: the same command on every host.
#
#   launch/tpu_vm.sh CONFIG gs://BUCKET/runs/NAME [--config.x=y ...]
#
# Recipe (README, "Multi-host on Cloud TPU"):
#   1. Bucket layout: gs://BUCKET/data/<set>/ (prep outputs: shards, .idx, manifest.json),
#      gs://BUCKET/runs/<name>/ (the workdir: checkpoints/, metrics.csv, tb/, report.md).
#   2. Stage data once from any machine: python -m data_prep.prepare ... --out data/train, then
#      gsutil -m cp -r data/train gs://BUCKET/data/train (or prepare straight into gs://).
#   3. On every host: git clone, bash scripts/setup.sh, .venv/bin/pip install "jax[tpu]==0.10.2".
#   4. gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command \
#        "cd csr_jax && launch/tpu_vm.sh configs/ucip.py:middle gs://BUCKET/runs/ucip \
#         --config.data.train_dir=gs://BUCKET/data/train --config.data.cache_dir=/tmp/csr_cache"
#   5. After a preemption run the same command: every host resumes from the newest committed
#      checkpoint in the shared workdir (Orbax; a half-written step is ignored) with the same
#      next batch.
# JAX discovers the slice (--distributed). config.data.batch_size is GLOBAL: each of the H
# hosts loads batch_size / H examples per step (a disjoint share of the records) and the step
# count does not depend on H. For GPU clusters without auto-detection set
# COORDINATOR=host0:1234 NUM_PROCESSES=N PROCESS_ID=i on each host instead.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:?config}"
WORKDIR="${2:?workdir shared by all hosts (gs://BUCKET/runs/NAME or NFS)}"
shift 2
if [[ -n "${COORDINATOR:-}" ]]; then
  DIST=(--coordinator_address "$COORDINATOR" --num_processes "${NUM_PROCESSES:?}"
        --process_id "${PROCESS_ID:?}")
else
  DIST=(--distributed)
fi
exec .venv/bin/python -m csr_jax.main --config "$CONFIG" --workdir "$WORKDIR" "${DIST[@]}" "$@"
