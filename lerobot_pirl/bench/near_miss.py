"""How close a policy's failed episodes come to the goal: a diagnostic for a task whose success plateaus.

Plays ``--episodes`` deterministic (ODE) episodes of one MetaWorld task on the **validation** seeds (so a
diagnostic never looks at the held-out ones), one env at a time, and prints per episode: success, the
closest and the final distance to the goal (MetaWorld's own ``obj_to_target``: the hand's distance for
reach, the object's for push / pick-place) and the goal itself; then a summary of the failures.
A failure whose closest distance is just above the success threshold is a near miss (the policy gets
there but not quite, or drifts off); one that stays far never found the goal.

``python -m lerobot_pirl.bench.near_miss --policy_path CKPT --task reach-v3 --mix MT10 --episodes 30``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lerobot_pirl.seeds import HELD_OUT, VALIDATION


@dataclass
class Approach:
    """One episode's path to the goal."""

    seed: int
    success: bool
    closest: float  # smallest goal distance over the episode (m)
    final: float  # goal distance at the episode's last step (m)
    goal: list[float]  # the goal's position (m)


def approach_summary(episodes: list[Approach]) -> dict:
    """Success rate, and the failures' closest / final distances (median and range) and how many ended
    farther from the goal than they had been (drifted off after getting closest)."""
    failed = [e for e in episodes if not e.success]
    out: dict = {"episodes": len(episodes), "success_rate": 1 - len(failed) / max(len(episodes), 1)}
    if failed:
        closest = np.array([e.closest for e in failed])
        final = np.array([e.final for e in failed])
        out |= {
            "failures": len(failed),
            "failed_closest_median": float(np.median(closest)),
            "failed_closest_range": [float(closest.min()), float(closest.max())],
            "failed_final_median": float(np.median(final)),
            "failed_drifted_off": int((final > closest + 1e-3).sum()),
        }
    return out


@torch.no_grad()
def play(policy, preprocessor, postprocessor, env_cfg, seed: int) -> Approach:
    """One ODE episode of ``env_cfg``'s task (sub-env 0's arguments) from ``seed``."""
    from lerobot_pirl.runtime.observations import ObservationPipeline

    env = env_cfg.make_env(seed, env_index=0, num_envs=1)
    observations = ObservationPipeline(env_cfg, policy.config, policy.config.input_features)
    obs, _ = env.reset(seed=seed)
    goal = [float(x) for x in env._env._target_pos]
    distances, success, done = [], False, False
    try:
        while not done:
            batch = {k: v[None] for k, v in obs.items()}
            chunk = policy.predict_action_chunk(preprocessor(observations(batch, [env.task_description])))
            for action in postprocessor(chunk).cpu().numpy()[0]:
                obs, _, terminated, truncated, info = env.step(action)
                distances.append(info["goal_distance"])
                success |= info["is_success"]
                done = terminated or truncated
                if done:
                    break
    finally:
        env.close()
    return Approach(seed, success, float(min(distances)), float(distances[-1]), goal)


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.envs.metaworld import metaworld_env_config
    from lerobot_pirl.evaluate import load_policy_for_eval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy_path", required=True, help="a pi_rl or flow_mlp checkpoint's pretrained_model")
    p.add_argument("--task", required=True, help="the MetaWorld task to play, e.g. reach-v3")
    p.add_argument("--mix", default=None, help="the mix the policy was trained on (MT10, MT50), for its one-hot")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--episode_length", type=int, default=150)
    p.add_argument("--first_seed", type=int, default=VALIDATION.start, help="validation seeds by default")
    p.add_argument("--json", default=None, help="also write every episode and the summary here")
    args = p.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    if args.first_seed < 0 or args.first_seed + args.episodes > HELD_OUT.start:
        raise SystemExit(f"--first_seed: a diagnostic stays below the held-out seeds ({HELD_OUT.start:,})")

    policy, pre, post = load_policy_for_eval(args.policy_path)
    policy.eval()
    if args.mix:
        env_cfg = metaworld_env_config(args.mix, episode_length=args.episode_length).for_task(args.task)
    else:
        env_cfg = metaworld_env_config(args.task, episode_length=args.episode_length)
    episodes = []
    print(f"{'seed':>8} {'success':>7} {'closest':>8} {'final':>8}  goal")
    for seed in range(args.first_seed, args.first_seed + args.episodes):
        torch.manual_seed(seed)
        e = play(policy, pre, post, env_cfg, seed)
        episodes.append(e)
        goal = ", ".join(f"{x:+.3f}" for x in e.goal)
        print(f"{e.seed:>8} {int(e.success):>7} {e.closest:>8.3f} {e.final:>8.3f}  [{goal}]")
    summary = approach_summary(episodes)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"episodes": [asdict(e) for e in episodes], "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
