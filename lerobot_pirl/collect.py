"""Scripted MetaWorld expert demos written as a local LeRobotDataset (no Hub).

``lerobot-pirl-collect --task button-press-v3 --episodes 10 --root outputs/demos/button-press-v3``

Demo episodes use their own seed range (``--seed``, default the start of ``lerobot_pirl.seeds.DEMOS``),
disjoint from the RL training and evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
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
# A task's noisy expert gets this many attempts per demo wanted; when it succeeds less often, the noise
# is halved and the task's collection starts again (see :func:`collect_with_noise_backoff`).
ATTEMPTS_PER_DEMO = 20
# Halvings of the noise before the expert runs without noise.
NOISE_HALVINGS = 3


class TooFewSuccessesError(RuntimeError):
    """The expert (with its action noise) succeeded too rarely to fill the demos within the attempts."""


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
        if tried >= ATTEMPTS_PER_DEMO * episodes:
            bar.close()
            env.close()
            raise TooFewSuccessesError(
                f"the {task} expert (action noise {action_noise}) succeeded in only {len(kept)} of {tried} "
                "episodes"
            )
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


def noise_levels(action_noise: float) -> list[float]:
    """The noise levels a task's collection tries in turn: the given one, halved ``NOISE_HALVINGS`` times,
    then none."""
    if action_noise <= 0:
        return [0.0]
    return [action_noise / 2**k for k in range(NOISE_HALVINGS + 1)] + [0.0]


def collect_with_noise_backoff(task: str, episodes: int, action_noise: float, **kwargs) -> tuple[list, dict]:
    """:func:`collect_episodes` at ``action_noise``, or, when the noisy expert succeeds in fewer than one
    of ``ATTEMPTS_PER_DEMO`` episodes, at the next lower of :func:`noise_levels`: one automatic rule for
    every task, so a task whose expert a given noise breaks (e.g. MT50's assembly at 1.0) still gets its
    demos, as imperfect as it allows. The stats carry the noise the demos were collected with."""
    *noisier, last = noise_levels(action_noise)
    for noise in noisier:
        try:
            eps, stats = collect_episodes(task, episodes, action_noise=noise, **kwargs)
            return eps, {**stats, "action_noise": noise}
        except TooFewSuccessesError:
            continue
    eps, stats = collect_episodes(task, episodes, action_noise=last, **kwargs)
    return eps, {**stats, "action_noise": last}


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
    lowered: dict[str, float] = {}  # tasks whose demos needed less noise (see collect_with_noise_backoff)
    instructions = mix_descriptions(tasks) if multi else {tasks[0]: task_description(tasks[0])}
    for k, name in enumerate(tasks):
        task_eps, task_stats = collect_with_noise_backoff(
            name,
            episodes,
            action_noise,
            seed=seed,
            episode_length=episode_length,
            noise_gripper=noise_gripper,
            progress=progress,
            image_size=image_size,
            task_index=k if multi else None,
            num_tasks=len(tasks) if multi else 0,
        )
        if task_stats["action_noise"] != action_noise:
            lowered[name] = task_stats["action_noise"]
        eps += task_eps
        descriptions += [instructions[name]] * len(task_eps)
        stats = {key: stats[key] + task_stats[key] for key in stats}
    # A mix's one-hot dims are named after their tasks: the order travels with the dataset.
    features = state_action_features(STATE_DIM, ACTION_DIM, one_hot_names(tasks) if multi else ())
    if image_size:
        features.update(image_feature(image_size))
    repo_id = repo_id or f"local/{tasks[0] if not multi else f'{len(tasks)}_tasks'}"
    write_dataset(root, repo_id, fps=80, features=features, episodes=eps, task=descriptions)
    return {
        **stats,
        "action_noise": action_noise,
        "noise_lowered": lowered,
        "tasks": tasks,
        "root": str(root),
        "repo_id": repo_id,
    }


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
    p.add_argument("--stats_out", default=None, help="also write the collection statistics to this JSON file")
    args = p.parse_args(argv)

    def startup():
        tasks = mixed_task_names(args.task) or [args.task]
        for task in tasks:
            expert_policy(task)  # an unknown task is a one-line error
        return lambda: report(
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
            ),
            args.stats_out,
        )

    run_cli(startup)


def report(stats: dict, stats_out: str | None) -> None:
    """Print the collection statistics (and write them to ``stats_out`` when given)."""
    print(stats)
    if stats_out:
        Path(stats_out).write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
