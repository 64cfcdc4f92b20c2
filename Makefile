# The two set-up commands of the README: `make demo` and `make test`.
# Each bootstraps .venv (Python 3.12) with the extras it needs, then runs.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Headless MuJoCo rendering (LIBERO scenes) with the system's Mesa.
export MUJOCO_GL ?= egl

.PHONY: venv libero demo test test-fast lint bench bench-mt10 bench-sampling bench-transport clean

venv:
	@bash scripts/bootstrap.sh "test,metaworld"

# LIBERO offline: the `libero` extra (hf-libero and its scene assets), then LIBERO's config file and asset
# link (idempotent, no prompts). When that fails, the LIBERO tests skip and say why.
libero:
	@bash scripts/bootstrap.sh "test,metaworld,libero"
	@$(PY) -m lerobot_pirl.envs.libero_setup || echo "LIBERO is not set up: its tests will be skipped"

test: libero
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

# One multi-task flow_mlp policy on MetaWorld's MT10: demos of every task -> one SFT -> πRL on the mix (envs
# re-split by training failure, progress reward, up to 1000 updates in a 60 min cap) -> per-task held-out
# evaluation; rows in benchmarks/results_mt.json (benchmarks/README.md, "Multi-task": 0.576 -> 0.956).
bench-mt10: venv
	$(PY) -m lerobot_pirl.bench --task MT10 --noise_method flow_sde --eval_episodes 50 --train_eval_episodes 10 \
		--eval_every 60 --timeout_min 60 --rl_updates 1000 --mix_envs adaptive --rl_arg=--env.reward_type=progress \
		--out outputs/bench_mt --results benchmarks/results_mt.json $(BENCH_ARGS)

bench-sampling: venv
	$(PY) -m lerobot_pirl.bench.sampling

bench-transport: venv
	$(PY) -m lerobot_pirl.bench.transport

clean:
	rm -rf outputs .pytest_cache .ruff_cache
