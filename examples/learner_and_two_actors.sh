#!/usr/bin/env bash
# A learner and two actors started by hand on one machine, talking gRPC on loopback.
#
#   bash examples/learner_and_two_actors.sh <SFT checkpoint> [output dir] [extra overrides...]
#   e.g. bash examples/learner_and_two_actors.sh outputs/demo/button-press-v3/sft/checkpoints/last/pretrained_model
#
# Each actor steps 16 envs and plays its own training seeds (--env.seed); with two actors each takes half
# of a rollout per policy version (chunks_per_version = ceil(rollout_size / (num_envs * actors))). The
# learner tells its actors when training is over and they exit; Ctrl-C stops all three.
set -euo pipefail
SFT="${1:?usage: $0 <SFT checkpoint> [output dir] [overrides...]}"
OUT="${2:-outputs/pirl/two_actors}"
shift $(( $# >= 2 ? 2 : 1 ))
R=recipes/metaworld_flow_mlp_flow_sde.json
COMMON=(--config_path="$R" --policy.base_policy_path="$SFT" --output_dir="$OUT" --policy.actor.chunks_per_version=32 "$@")
PY="${PYTHON:-python}"

"$PY" -m lerobot_pirl.learner "${COMMON[@]}" &
learner=$!
trap 'kill $learner ${actors[*]:-} 2>/dev/null || true' INT TERM EXIT
sleep 2
actors=()
for seed in 0 100000; do
  "$PY" -m lerobot_pirl.actor "${COMMON[@]}" --env.seed="$seed" &
  actors+=($!)
done
wait "$learner"
wait "${actors[@]}"
echo "metrics: $OUT/metrics.jsonl, checkpoints: $OUT/checkpoints/last"
