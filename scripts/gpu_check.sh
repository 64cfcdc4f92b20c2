#!/usr/bin/env bash
# One-GPU check of the VLA path (H100/H200 class, under 10 minutes), from a clone where `make` built .venv:
#   bash scripts/gpu_check.sh            # real-size pi0 / pi05: sampling cost, one πRL update per setting,
#                                        # peak GPU memory (one table), then the gpu-marked tests
#   bash scripts/gpu_check.sh --dry-run  # the same steps with tiny models on the CPU (part of `make test`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "gpu_check: .venv is missing; run 'make test' (or 'make demo') first" >&2; exit 2; }
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--dry-run" ]; then
  exec "$PY" -m lerobot_pirl.bench.gpu_check --dry-run
fi
"$PY" -m lerobot_pirl.bench.gpu_check "$@"
"$PY" -m pytest -q -m gpu tests
