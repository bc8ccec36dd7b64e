# The two commands of the README: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
KG ?= build/demo-kg

.PHONY: venv test test-all gpu-check demo bench lint clean

venv:
	@bash scripts/ensure_venv.sh

test: venv
	@bash scripts/ensure_browser.sh
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m "not gpu"

# The GPU tier (`pytest -m gpu`; every test skips with its reason where there is no CUDA or no
# faiss-gpu) and the GPU benchmark (writes benchmarks/out/gpu.json; prints "no CUDA device" and
# exits 0 on a CPU-only machine). On a GPU host first swap faiss-cpu for faiss-gpu: docs/INSTALL.md
gpu-check: venv
	$(PY) -m pytest -q -m gpu -rs
	$(PY) benchmarks/gpu.py

demo: venv
	$(PY) -m mmkg.jobs.demo --data $(DATA) --kg $(KG)

# The MARS model experiments (benchmarks/mars_*.py) take hours on 2 cores and resume across runs:
# they are run by hand (see their docstrings), not by `make bench`.
BENCHES := $(filter-out benchmarks/mars_%.py,$(wildcard benchmarks/*.py))

bench: venv
	@for b in $(BENCHES); do echo "== $$b"; $(PY) $$b || exit 1; done

lint: venv
	$(PY) -m ruff check kg_store pipeline retrieval model jobs tests benchmarks deploy examples

clean:
	rm -rf build
