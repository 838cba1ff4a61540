#!/usr/bin/env bash
# Train on this machine's CPU (one process). Usage:
#   launch/local_cpu.sh [CONFIG] [WORKDIR] [--config.x=y ...]
#   launch/local_cpu.sh configs/ucip.py:demo runs/demo
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-configs/ucip.py:demo}"
WORKDIR="${2:-runs/$(basename "${CONFIG%%.py*}")}"
shift $(( $# > 2 ? 2 : $# ))
export JAX_PLATFORMS=cpu
# Simulated devices exercise the data-parallel path on CPU: CSR_CPU_DEVICES=8 launch/local_cpu.sh
if [[ -n "${CSR_CPU_DEVICES:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${CSR_CPU_DEVICES} ${XLA_FLAGS:-}"
fi
# Huge-page malloc that keeps XLA:CPU's per-step temporaries for the next step (glibc >= 2.35
# reads it, older ones ignore it; csr_jax/hostenv.py's TUNABLE, with the measurements). The
# caller's own tunables come last and win. CSR_JAX_HUGEPAGES=0 leaves it off.
if [[ "${CSR_JAX_HUGEPAGES:-1}" != 0 && "${GLIBC_TUNABLES:-}" != *glibc.malloc.hugetlb* ]]; then
  export GLIBC_TUNABLES="glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736${GLIBC_TUNABLES:+:${GLIBC_TUNABLES}}"
fi
exec "${CSR_PYTHON:-.venv/bin/python}" -m csr_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
