# Quickstart targets (README): `make demo` and `make test` each set up .venv first.
PY := .venv/bin/python
WORKDIR ?= runs/demo

.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

# Train, evaluate and report (report.md), then restore the held-out photos (HEVC-degraded LR the
# demo wrote) into $(WORKDIR)/restored; prints the wall time, setup included. Huge-page malloc
# that keeps freed temporaries (glibc >= 2.35; ignored elsewhere; csr_jax/hostenv.py) spares
# XLA:CPU millions of page faults per step.
demo: export GLIBC_TUNABLES := glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
demo:
	@start=$$(date +%s); \
	bash scripts/setup.sh && \
	$(PY) -m csr_jax.main --config configs/ucip.py:demo --workdir $(WORKDIR) && \
	$(PY) -m csr_jax.restore --checkpoint $(WORKDIR) --ema --codec hevc --self_ensemble \
	    --input $(WORKDIR)/data/heldout_lr --output $(WORKDIR)/restored && \
	echo "demo: done in $$(( $$(date +%s) - start )) s, setup included; see $(WORKDIR)/report.md"

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.ucip_speed
