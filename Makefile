# nat-toolkit developer entry points. `make help` lists them.
PY := .venv/bin/python

.PHONY: help env env-d2 quickstart test test-fast lint benchmark-attention benchmark-hf collect-env

help:
	@echo "make quickstart          set up .venv (idempotent) and run the main job on its embedded default"
	@echo "make test                set up .venv and .venv-d2 (idempotent), lint, run the test suite in both"
	@echo "make test-fast           the same, only the tests not marked slow"
	@echo "make env                 only create/update .venv (first run builds mmcv: ~30 min on 2 cores)"
	@echo "make env-d2              only create/update .venv-d2: Detectron2, Mask2Former, OneFormer"
	@echo "make benchmark-attention full attention benchmark -> docs/benchmarks.md inputs in bench_out/"
	@echo "make benchmark-hf        transformers' DinatModel on our attention vs SwinModel vs core DiNAT-T"
	@echo "make collect-env         print versions and available attention backends"

env:
	bash tools/setup_env.sh

env-d2:
	bash tools/setup_d2_env.sh

quickstart: env
	$(PY) tools/quickstart.py

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Main suite in .venv, then the Detectron2 suite in .venv-d2 (set up on the way; skipped
# with a line saying why when no upstream source exists, never in CI): nattk/dev/run_tests.py.
test: lint
	$(PY) -m nattk.dev.run_tests

test-fast: lint
	$(PY) -m nattk.dev.run_tests --fast

benchmark-attention: env
	$(PY) tools/benchmark_attention.py --out bench_out

benchmark-hf: env
	$(PY) tools/benchmark_hf.py --out bench_out/hf.md

collect-env: env
	$(PY) tools/collect_env.py
