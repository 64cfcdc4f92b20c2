"""Scripted MetaWorld expert demos written as a local LeRobotDataset (no Hub).

``lerobot-pirl-collect --task button-press-v3 --episodes 10 --root outputs/demos/button-press-v3``

Demo episodes use their own seed range (``--seed``, default the start of ``lerobot_pirl.seeds.DEMOS``),
disjoint from the RL training and evaluation seeds.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_STATE
from tqdm import tqdm

from lerobot_pirl.datasets import image_feature, state_action_features, write_dataset
from lerobot_pirl.envs.metaworld import (
    ACTION_DIM,
    STATE_DIM,
    MetaWorldStateEnv,
    mix_descriptions,
    mixed_task_names,
    task_description,
)
from lerobot_pirl.envs.task_order import one_hot_names
from lerobot_pirl.seeds import DEMOS

DEMO_SEED = DEMOS.start


def expert_policy(task: str):
    from metaworld.policies import ENV_POLICY_MAP

    if task not in ENV_POLICY_MAP:
        raise ValueError(f"task: no scripted MetaWorld expert for {task!r}")
    return ENV_POLICY_MAP[task]()


def collect_episodes(
    task: str,
    episodes: int,
    seed: int = DEMO_SEED,
    episode_length: int = 200,
    action_noise: float = 0.0,
    noise_gripper: bool = False,
    only_successes: bool = True,
    progress: bool = True,
    image_size: int | None = None,
    task_index: int | None = None,
    num_tasks: int = 0,
) -> tuple[list[list[dict]], dict]:
    """Expert rollouts (frames of ``observation.state`` / ``action``, and ``observation.image`` with
    ``image_size``) and collection statistics. With ``num_tasks``, the state carries the one-hot of
    ``task_index`` after its 39 MetaWorld dims, as in the multi-task env (the expert reads the 39)."""
    env = MetaWorldStateEnv(
        task,
        episode_length=episode_length,
        reward_type="sparse",
        terminate_on_success=True,
        image_size=image_size,
        task_index=task_index,
        num_tasks=num_tasks,
    )
    expert = expert_policy(task)
    rng = np.random.default_rng(seed)
    kept, tried, next_seed = [], 0, seed
    bar = tqdm(total=episodes, desc=f"demos {task}", unit="ep", disable=not progress)
    while len(kept) < episodes:
        if tried >= 20 * episodes:
            raise RuntimeError(f"the {task} expert succeeded in only {len(kept)} of {tried} episodes")
        obs, _ = env.reset(seed=next_seed)
        next_seed += 1
        tried += 1
        frames, success = [], False
        for _ in range(episode_length):
            state = obs["agent_pos"]
            action = np.asarray(expert.get_action(state[:STATE_DIM].astype(np.float64)), dtype=np.float32)
            if action_noise > 0:  # jitter of the commands (with noise_gripper, of the gripper command too)
                dims = action.shape[0] if noise_gripper else 3
                action[:dims] += rng.normal(0.0, action_noise, size=dims).astype(np.float32)
            action = np.clip(action, -1.0, 1.0)
            frame = {OBS_STATE: state, ACTION: action}
            if image_size:
                frame[OBS_IMAGE] = obs["pixels"]
            frames.append(frame)
            obs, _, terminated, truncated, info = env.step(action)
            success = success or bool(info["is_success"])
            if terminated or truncated:
                break
        if success or not only_successes:
            kept.append(frames)
            bar.update(1)
    bar.close()
    env.close()
    stats = {"episodes": len(kept), "attempts": tried, "frames": sum(len(e) for e in kept)}
    return kept, stats


def collect_dataset(
    task: str | Sequence[str],
    episodes: int,
    root: str | Path,
    repo_id: str | None = None,
    seed: int = DEMO_SEED,
    episode_length: int = 200,
    action_noise: float = 0.0,
    noise_gripper: bool = False,
    overwrite: bool = True,
    progress: bool = True,
    image_size: int | None = None,
) -> dict:
    """Collect ``episodes`` successful expert demos (per task) into a local LeRobotDataset at ``root``;
    frames carry their task's language instruction, and a rendered ``image_size`` camera image when it is
    given. Several tasks make one multi-task dataset whose state ends with the task's one-hot over
    ``task`` (the layout of ``pirl_metaworld_mt`` with ``tasks`` = ``task``)."""
    tasks = [task] if isinstance(task, str) else list(task)
    multi = len(tasks) > 1
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"root: {root} exists (pass --overwrite)")
        shutil.rmtree(root)
    eps, descriptions, stats = [], [], {"episodes": 0, "attempts": 0, "frames": 0}
    instructions = mix_descriptions(tasks) if multi else {tasks[0]: task_description(tasks[0])}
    for k, name in enumerate(tasks):
        task_eps, task_stats = collect_episodes(
            name,
            episodes,
            seed,
            episode_length,
            action_noise,
            noise_gripper=noise_gripper,
            progress=progress,
            image_size=image_size,
            task_index=k if multi else None,
            num_tasks=len(tasks) if multi else 0,
        )
        eps += task_eps
        descriptions += [instructions[name]] * len(task_eps)
        stats = {key: stats[key] + task_stats[key] for key in stats}
    # A mix's one-hot dims are named after their tasks: the order travels with the dataset.
    features = state_action_features(STATE_DIM, ACTION_DIM, one_hot_names(tasks) if multi else ())
    if image_size:
        features.update(image_feature(image_size))
    repo_id = repo_id or f"local/{tasks[0] if not multi else f'{len(tasks)}_tasks'}"
    write_dataset(root, repo_id, fps=80, features=features, episodes=eps, task=descriptions)
    return {**stats, "tasks": tasks, "root": str(root), "repo_id": repo_id}


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli

    p = argparse.ArgumentParser(description="Collect scripted MetaWorld expert demos as a LeRobotDataset")
    p.add_argument(
        "--task",
        default="button-press-v3",
        help="a MetaWorld task, several separated by commas, or MT10 / MT50 (one multi-task dataset)",
    )
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--root", required=True)
    p.add_argument("--repo_id", default=None)
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--episode_length", type=int, default=200)
    p.add_argument(
        "--action_noise", type=float, default=0.0, help="std of noise on the xyz part of the actions"
    )
    p.add_argument("--noise_gripper", action="store_true", help="also add the noise to the gripper command")
    p.add_argument(
        "--image_size", type=int, default=None, help="also record a rendered camera image of this side"
    )
    args = p.parse_args(argv)

    def startup():
        tasks = mixed_task_names(args.task) or [args.task]
        for task in tasks:
            expert_policy(task)  # an unknown task is a one-line error
        return lambda: print(
            collect_dataset(
                tasks,
                args.episodes,
                args.root,
                args.repo_id,
                args.seed,
                args.episode_length,
                args.action_noise,
                noise_gripper=args.noise_gripper,
                image_size=args.image_size,
            )
        )

    run_cli(startup)


if __name__ == "__main__":
    main()
