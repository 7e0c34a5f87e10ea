# nat-toolkit developer entry points. `make help` lists them.
PY := .venv/bin/python

.PHONY: help env quickstart test test-fast lint benchmark-attention benchmark-hf collect-env

help:
	@echo "make quickstart          set up .venv (idempotent) and run the main job on its embedded default"
	@echo "make test                set up .venv (idempotent), lint, run the test suite"
	@echo "make test-fast           lint, run the tests not marked slow (< 3 min on 2 cores)"
	@echo "make env                 only create/update .venv (first run builds mmcv: ~30 min on 2 cores)"
	@echo "make benchmark-attention full attention benchmark -> docs/benchmarks.md inputs in bench_out/"
	@echo "make benchmark-hf        transformers' DinatModel on our attention vs SwinModel vs core DiNAT-T"
	@echo "make collect-env         print versions and available attention backends"

env:
	bash tools/setup_env.sh

quickstart: env
	$(PY) tools/quickstart.py

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q tests

test-fast: lint
	$(PY) -m pytest -q -m "not slow" tests

benchmark-attention: env
	$(PY) tools/benchmark_attention.py --out bench_out

benchmark-hf: env
	$(PY) tools/benchmark_hf.py --out bench_out/hf.md

collect-env: env
	$(PY) tools/collect_env.py
