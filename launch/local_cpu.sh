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
# Huge-page malloc for XLA:CPU's per-step temporaries (glibc >= 2.35 reads it, older ones ignore
# it; csr_jax/hostenv.py has the measurements). CSR_JAX_HUGEPAGES=0 leaves it off.
if [[ "${CSR_JAX_HUGEPAGES:-1}" != 0 && "${GLIBC_TUNABLES:-}" != *glibc.malloc.hugetlb* ]]; then
  export GLIBC_TUNABLES="${GLIBC_TUNABLES:+${GLIBC_TUNABLES}:}glibc.malloc.hugetlb=1"
fi
exec "${CSR_PYTHON:-.venv/bin/python}" -m csr_jax.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
