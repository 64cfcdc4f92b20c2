"""How close a policy's failed episodes come to the goal: a diagnostic for a task whose success plateaus.

Plays ``--episodes`` deterministic (ODE) episodes of one MetaWorld task on the **validation** seeds (so a
diagnostic never looks at the held-out ones), one env at a time, and prints per episode: success, the
closest and the final distance to the goal (MetaWorld's own ``obj_to_target``: the hand's distance for
reach, the object's for push / pick-place) and the goal itself; then a summary of the failures.
A failure whose closest distance is just above the success threshold is a near miss (the policy gets
there but not quite, or drifts off); one that stays far never found the goal.

With ``--demos`` (the SFT dataset's root) each episode also gets its goal's distance to the nearest demo's goal:
whether the policy fails where its demos did not go.

``python -m lerobot_pirl.bench.near_miss --policy_path CKPT --task reach-v3 --mix MT10 --demos DEMOS``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lerobot_pirl.envs.metaworld import STATE_DIM
from lerobot_pirl.seeds import HELD_OUT, VALIDATION


@dataclass
class Approach:
    """One episode's path to the goal."""

    seed: int
    success: bool
    closest: float  # smallest goal distance over the episode (m)
    final: float  # goal distance at the episode's last step (m)
    goal: list[float]  # the goal's position (m)
    demo_gap: float | None = None  # distance from the goal to the nearest demo's goal (m), with --demos


GOAL_DIMS = slice(STATE_DIM - 3, STATE_DIM)  # where MetaWorld's 39-dim state holds the goal position


def demo_goals(root: str | Path, task_index: int | None = None) -> np.ndarray:
    """The goal of every demo episode of a LeRobotDataset written by ``lerobot-pirl-collect`` at ``root``
    (its first state's goal dims), ``[N, 3]``; with ``task_index``, only the episodes of that task of a mix
    (the one-hot after the 39 state dims)."""
    import pandas as pd

    files = sorted(Path(root).glob("data/*/*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"demos: no data/*/*.parquet under {root} (a LeRobotDataset root is expected)"
        )
    frames = pd.concat([pd.read_parquet(f, columns=["frame_index", "observation.state"]) for f in files])
    first = frames[frames["frame_index"] == 0]
    states = np.stack(first["observation.state"].to_numpy())
    if task_index is not None:
        if states.shape[1] <= STATE_DIM + task_index:
            raise ValueError(
                f"demos: {root} has {states.shape[1]}-dim states, no one-hot for task {task_index}"
            )
        states = states[states[:, STATE_DIM + task_index] == 1]
    if not len(states):
        raise ValueError(f"demos: no episode of task index {task_index} in {root}")
    return states[:, GOAL_DIMS]


def nearest_gap(goal: list[float], goals: np.ndarray) -> float:
    """Distance from ``goal`` to the nearest of ``goals``."""
    return float(np.linalg.norm(goals - np.asarray(goal), axis=1).min())


def approach_summary(episodes: list[Approach]) -> dict:
    """Success rate, and the failures' closest / final distances (median and range) and how many ended
    farther from the goal than they had been (drifted off after getting closest)."""
    failed = [e for e in episodes if not e.success]
    out: dict = {"episodes": len(episodes), "success_rate": round(1 - len(failed) / max(len(episodes), 1), 4)}
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
    gaps = {
        k: [e.demo_gap for e in episodes if e.success == k and e.demo_gap is not None] for k in (True, False)
    }
    for won, name in ((True, "succeeded"), (False, "failed")):
        if gaps[won]:
            out[f"{name}_demo_gap_median"] = float(np.median(gaps[won]))
    return out


def initial_noise(policy, scale: float) -> torch.Tensor | None:
    """The ODE's initial noise for one env, times ``scale`` (``None`` at 1: the policy draws its own). Scale 0
    is the flow's central path; it tells whether a failure comes from the spread the policy imitated or from
    where its central path goes."""
    if scale == 1.0:
        return None
    device = next(policy.parameters()).device
    if hasattr(policy, "adapter"):  # pi_rl: the base policy's noise layout (padded action dims included)
        noise = policy.adapter.sample_noise(1, device)
    elif hasattr(policy, "model") and hasattr(policy.config, "chunk_size"):  # flow_mlp
        from lerobot.policies.common.flow_matching import sample_noise  # as flow_mlp draws its own

        noise = sample_noise((1, policy.config.chunk_size, policy.model.action_dim), device)
    else:
        raise ValueError(f"noise_scale: no known noise layout for a {policy.config.type!r} policy")
    return noise * scale


@torch.no_grad()
def play(policy, preprocessor, postprocessor, env_cfg, seed: int, noise_scale: float = 1.0) -> Approach:
    """One ODE episode of ``env_cfg``'s task (sub-env 0's arguments) from ``seed``, the ODE's initial noise
    scaled by ``noise_scale``."""
    from lerobot_pirl.runtime.observations import ObservationPipeline

    env = env_cfg.make_env(seed, env_index=0, num_envs=1)
    observations = ObservationPipeline(env_cfg, policy.config, policy.config.input_features)
    obs, _ = env.reset(seed=seed)
    goal = [float(x) for x in env._env._target_pos]
    distances, success, done = [], False, False
    try:
        while not done:
            batch = {k: v[None] for k, v in obs.items()}
            inputs = preprocessor(observations(batch, [env.task_description]))
            chunk = policy.predict_action_chunk(inputs, noise=initial_noise(policy, noise_scale))
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
    p.add_argument(
        "--mix", default=None, help="the mix the policy was trained on (MT10, MT50), for its one-hot"
    )
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--episode_length", type=int, default=150)
    p.add_argument("--first_seed", type=int, default=VALIDATION.start, help="validation seeds by default")
    p.add_argument(
        "--noise_scale", type=float, default=1.0, help="the ODE's initial noise times this (0: central path)"
    )
    p.add_argument("--demos", default=None, help="the demos' LeRobotDataset root: each goal's gap to theirs")
    p.add_argument("--json", default=None, help="also write every episode and the summary here")
    args = p.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    if args.noise_scale < 0:
        raise SystemExit(f"--noise_scale must be >= 0, got {args.noise_scale}")
    if args.first_seed < 0 or args.first_seed + args.episodes > HELD_OUT.start:
        raise SystemExit(f"--first_seed: a diagnostic stays below the held-out seeds ({HELD_OUT.start:,})")

    policy, pre, post = load_policy_for_eval(args.policy_path)
    policy.eval()
    if args.mix:
        env_cfg = metaworld_env_config(args.mix, episode_length=args.episode_length).for_task(args.task)
    else:
        env_cfg = metaworld_env_config(args.task, episode_length=args.episode_length)
    goals = None
    if args.demos:
        goals = demo_goals(args.demos, env_cfg.task_list.index(args.task) if args.mix else None)
    episodes = []
    print(f"{'seed':>8} {'success':>7} {'closest':>8} {'final':>8} {'demo gap':>8}  goal")
    for seed in range(args.first_seed, args.first_seed + args.episodes):
        torch.manual_seed(seed)
        e = play(policy, pre, post, env_cfg, seed, args.noise_scale)
        if goals is not None:
            e.demo_gap = nearest_gap(e.goal, goals)
        episodes.append(e)
        goal = ", ".join(f"{x:+.3f}" for x in e.goal)
        gap = f"{e.demo_gap:>8.3f}" if e.demo_gap is not None else f"{'-':>8}"
        print(f"{e.seed:>8} {int(e.success):>7} {e.closest:>8.3f} {e.final:>8.3f} {gap}  [{goal}]")
    summary = approach_summary(episodes)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"episodes": [asdict(e) for e in episodes], "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
