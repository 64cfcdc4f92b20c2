"""Evaluate a checkpoint on held-out MetaWorld episodes, as the published tables do.

    python examples/evaluate_checkpoint.py outputs/demo/button-press-v3/flow_sde/rl/checkpoints/last/pretrained_model
    python examples/evaluate_checkpoint.py <checkpoint> --task push-v3 --episodes 100

Works for a ``pi_rl`` checkpoint (deterministic ODE with the trained number of denoising steps) and for a
plain base checkpoint such as the SFT ``flow_mlp`` or an export. The protocol (seeds, episode length,
batch, seeded ODE noise) is ``lerobot_pirl.seeds.EVAL_PROTOCOL``; ``lerobot-pirl-eval`` is the same
thing as a command.
"""

from __future__ import annotations

import argparse

from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig
from lerobot_pirl.evaluate import evaluate_policy, load_policy_for_eval
from lerobot_pirl.seeds import EVAL_PROTOCOL


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a LeRobot pretrained_model directory")
    p.add_argument("--task", default="button-press-v3", help="MetaWorld v3 task")
    p.add_argument("--episodes", type=int, default=EVAL_PROTOCOL.episodes)
    args = p.parse_args(argv)

    policy, preprocessor, postprocessor = load_policy_for_eval(args.checkpoint)
    env = MetaWorldStateEnvConfig(
        task=args.task, episode_length=EVAL_PROTOCOL.episode_length, eval_seed=EVAL_PROTOCOL.first_seed
    )
    report = evaluate_policy(policy, preprocessor, postprocessor, env, args.episodes, progress=True)
    low, high = report["ci95"]
    print(
        f"{args.task}: success {report['success_rate']:.2f} (95% CI {low:.2f}-{high:.2f}) over "
        f"{report['episodes']} held-out episodes, seeds {report['seeds'][0]:,}-{report['seeds'][1]:,}"
    )
    return report


if __name__ == "__main__":
    main()
