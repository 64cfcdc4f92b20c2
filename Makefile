# The two set-up commands of the README: `make demo` and `make test`.
# Each bootstraps .venv (Python 3.12) with the extras it needs, then runs.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test test-fast lint bench bench-sampling bench-transport libero clean

venv:
	@bash scripts/bootstrap.sh "test,metaworld"

test: venv
	$(PY) -m ruff check lerobot_pirl tests examples
	$(PY) -m pytest -m "not gpu" -q

test-fast: venv
	$(PY) -m pytest -m "not gpu and not slow" -q

lint: venv
	$(PY) -m ruff check lerobot_pirl tests examples
	$(PY) -m ruff format --check lerobot_pirl tests examples

demo: venv
	$(PY) -m lerobot_pirl.bench --demo

bench: venv
	$(PY) -m lerobot_pirl.bench $(BENCH_ARGS)

bench-sampling: venv
	$(PY) -m lerobot_pirl.bench.sampling

bench-transport: venv
	$(PY) -m lerobot_pirl.bench.transport

# LIBERO offline: the `libero` extra (hf-libero and its scene assets), then LIBERO's config file and asset
# link (idempotent, no prompts).
libero: venv
	$(PY) -m pip install --quiet -e ".[test,metaworld,libero]"
	$(PY) -m lerobot_pirl.envs.libero_setup

clean:
	rm -rf outputs .pytest_cache .ruff_cache
