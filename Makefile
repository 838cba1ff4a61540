# Quickstart targets (README): `make demo` and `make test` each set up .venv first.
PY := .venv/bin/python
WORKDIR ?= runs/demo

.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m csr_jax.main --config configs/ucip.py:demo --workdir $(WORKDIR)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m benchmarks.ucip_speed
