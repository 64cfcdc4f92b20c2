"""Deterministic (ODE) evaluation on held-out seeds, with a 95% confidence interval.

``lerobot-pirl-eval --policy_path <pi_rl or flow_mlp checkpoint> --task button-press-v3``

The defaults are the protocol of the published tables (:data:`lerobot_pirl.seeds.EVAL_PROTOCOL`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lerobot_pirl.runtime.parallel import chunk_stepper
from lerobot_pirl.seeds import EVAL_PROTOCOL, HELD_OUT, VALIDATION

logger = logging.getLogger(__name__)


class EpisodeVideos:
    """Frames of the first ``count`` episodes of an evaluation (envs 0..count-1 of its first batch), rendered
    offscreen after every step, written as MP4 with LeRobot's ``write_video``."""

    def __init__(self, vec, count: int, folder: Path):
        self.envs = list(getattr(vec, "envs", []))
        self.count, self.folder = min(count, len(self.envs)), folder
        self.frames: list[list[np.ndarray]] = [[] for _ in range(self.count)]
        self.active = self.count > 0
        if count and not self.envs:
            logger.warning("videos: the eval env is not an in-process vector env; no videos")

    def capture(self, i: int) -> None:
        if self.active and i < self.count:
            self.frames[i].append(np.asarray(self.envs[i].render()))

    def write(self, fps: int) -> list[str]:
        """The videos (one per recorded episode); recording stops here."""
        from lerobot.utils.io_utils import write_video

        self.active = False
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, frames in enumerate(self.frames):
            if frames:
                path = self.folder / f"eval_episode_{i}.mp4"
                write_video(path, frames, fps)
                paths.append(str(path))
        return paths


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


@torch.no_grad()
def evaluate_policy(
    policy,
    preprocessor,
    postprocessor,
    env_cfg,
    episodes: int,
    progress: bool = False,
    num_envs: int = EVAL_PROTOCOL.num_envs,
    videos: int = 0,
    videos_dir: str | Path | None = None,
    in_process: bool = False,
) -> dict:
    """Run ``episodes`` episodes on seeds ``env_cfg.eval_seed + j`` with the policy's deterministic
    ``predict_action_chunk`` (executing its whole returned chunk), ``num_envs`` envs at a time (not the
    training env's ``num_envs``: the batch decides which noise each episode draws). The ODE's initial
    noise is drawn from torch's generator seeded with ``eval_seed`` (forked: the caller's random stream
    is left as it was), so evaluating one checkpoint twice gives one result. With ``videos``, the first
    ``videos`` episodes are also rendered and written to ``videos_dir`` (their paths: ``report["videos"]``).
    ``in_process`` steps the envs in this process even when the config has ``env_workers`` (same episodes)."""
    device = next(policy.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(env_cfg.eval_seed)
        return _evaluate(
            policy,
            preprocessor,
            postprocessor,
            env_cfg,
            episodes,
            progress,
            num_envs,
            videos,
            videos_dir,
            in_process,
        )


def _evaluate(
    policy,
    preprocessor,
    postprocessor,
    env_cfg,
    episodes: int,
    progress: bool,
    num_envs: int,
    videos: int = 0,
    videos_dir: str | Path | None = None,
    in_process: bool = False,
) -> dict:
    from lerobot_pirl.runtime.observations import ObservationPipeline, env_tasks

    if not hasattr(env_cfg, "make_eval_env"):
        raise ValueError(f"env: held-out evaluation needs an env with make_eval_env (got {env_cfg.type!r})")
    was_training = policy.training
    policy.eval()
    n_envs = max(1, min(episodes, num_envs))
    vec = env_cfg.make_eval_env(n_envs, in_process=in_process or bool(videos))
    recorder = EpisodeVideos(vec, videos, Path(videos_dir or "videos"))
    stepper = chunk_stepper(vec, on_step=recorder.capture)
    observations = ObservationPipeline(env_cfg, policy.config, policy.config.input_features)
    tasks = env_tasks(vec)
    successes, returns, lengths = [], [], []
    bar = tqdm(total=episodes, desc="eval", unit="ep", disable=not progress, leave=False)
    video_paths: list[str] = []
    done_eps = 0
    while done_eps < episodes:
        batch_n = min(n_envs, episodes - done_eps)
        seeds = [env_cfg.eval_seed + done_eps + j for j in range(n_envs)]
        obs = stepper.reset(seed=seeds)
        for i in range(n_envs):
            recorder.capture(i)
        alive = np.arange(n_envs) < batch_n
        ep_ret, ep_len = np.zeros(n_envs), np.zeros(n_envs, dtype=int)
        ep_succ = np.zeros(n_envs, dtype=bool)
        while alive.any():
            chunk = policy.predict_action_chunk(preprocessor(observations(obs, tasks)))
            n_exec = getattr(policy.config, "n_action_steps", None)  # a plain base policy's executed part
            actions = postprocessor(chunk[:, :n_exec] if n_exec else chunk).cpu().numpy()
            res = stepper.step_chunk(actions)
            ep_ret += np.where(alive, res.rewards, 0.0)
            ep_len += np.where(alive, res.steps, 0)
            ep_succ |= res.success & alive
            alive &= ~(res.terminated | res.truncated)
            obs = res.next_obs
        if recorder.active:  # the recorded episodes were the first batch's
            fps = int(getattr(recorder.envs[0], "metadata", {}).get("render_fps", 30))
            video_paths = recorder.write(fps)
        successes += ep_succ[:batch_n].tolist()
        returns += ep_ret[:batch_n].tolist()
        lengths += ep_len[:batch_n].tolist()
        done_eps += batch_n
        bar.update(batch_n)
    bar.close()
    vec.close()
    policy.train(was_training)
    k = int(sum(successes))
    extra = {"videos": video_paths} if videos and recorder.count else {}
    return {
        **extra,
        "success_rate": k / len(successes),
        "ci95": wilson_interval(k, len(successes)),
        "episodes": len(successes),
        "mean_return": float(np.mean(returns)),
        "mean_length": float(np.mean(lengths)),
        "seeds": [env_cfg.eval_seed, env_cfg.eval_seed + episodes - 1],
    }


def mixed_tasks(env_cfg) -> list[str]:
    """The tasks a multi-task env config mixes (``task_list`` with no single ``task`` chosen), else []."""
    tasks = getattr(env_cfg, "task_list", None)
    return list(tasks) if tasks and getattr(env_cfg, "task", None) is None else []


def evaluate_tasks(
    policy,
    preprocessor,
    postprocessor,
    env_cfg,
    episodes: int,
    progress: bool = False,
    num_envs: int = EVAL_PROTOCOL.num_envs,
    videos: int = 0,
    videos_dir: str | Path | None = None,
) -> dict:
    """:func:`evaluate_policy` of every task a multi-task env config mixes (``env_cfg.for_task``),
    ``episodes`` held-out episodes each (the same seeds for every task); any other env config is evaluated
    as one. The report's ``success_rate`` is the average over tasks (with equal episodes per task, the
    pooled rate, whose Wilson interval is ``ci95``); ``tasks`` holds each task's own report."""
    tasks = mixed_tasks(env_cfg)
    if not tasks:
        return evaluate_policy(
            policy, preprocessor, postprocessor, env_cfg, episodes, progress, num_envs, videos, videos_dir
        )
    per_task = {}
    for task in tqdm(tasks, desc="eval tasks", unit="task", disable=not progress, leave=False):
        folder = Path(videos_dir or "videos") / task
        # In this process: worker processes started for every task cost more than they save (measured on
        # MT10, 10 episodes per task: ~200 s with 2 workers per task).
        per_task[task] = evaluate_policy(
            policy,
            preprocessor,
            postprocessor,
            env_cfg.for_task(task),
            episodes,
            False,
            num_envs,
            videos,
            folder,
            in_process=True,
        )
    total = sum(r["episodes"] for r in per_task.values())
    successes = round(sum(r["success_rate"] * r["episodes"] for r in per_task.values()))
    return {
        "success_rate": successes / total,
        "ci95": wilson_interval(successes, total),
        "episodes": total,
        "mean_return": float(np.mean([r["mean_return"] for r in per_task.values()])),
        "mean_length": float(np.mean([r["mean_length"] for r in per_task.values()])),
        "seeds": [env_cfg.eval_seed, env_cfg.eval_seed + episodes - 1],
        "tasks": per_task,
        **({"videos": [p for r in per_task.values() for p in r.get("videos", [])]} if videos else {}),
    }


def load_policy_for_eval(path: str, device: str = "cpu"):
    """A LeRobot checkpoint (pi_rl, or a plain base policy such as flow_mlp) and its processors."""
    from lerobot.configs import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    import lerobot_pirl  # noqa: F401

    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.device = device
    policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg)
    pre, post = make_pre_post_processors(
        policy.config, pretrained_path=path, preprocessor_overrides={"device_processor": {"device": device}}
    )
    return policy, pre, post


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli
    from lerobot_pirl.envs.metaworld import metaworld_env_config
    from lerobot_pirl.envs.task_order import check_task_order

    protocol = EVAL_PROTOCOL
    parser = argparse.ArgumentParser(
        description="Held-out ODE evaluation of a policy on pirl_metaworld. The defaults are the protocol of "
        f"the published tables: {protocol.episodes} episodes of {protocol.episode_length} env steps on the "
        f"held-out seeds from {protocol.first_seed:,}, {protocol.num_envs} envs per batch, the ODE's noise "
        "seeded from the first seed (see lerobot_pirl/seeds.py)."
    )
    parser.add_argument("--policy_path", required=True, help="a LeRobot pretrained_model directory")
    parser.add_argument(
        "--task",
        default="button-press-v3",
        help="a MetaWorld task; several separated by commas, or MT10 / MT50, for a multi-task policy "
        "(--episodes per task, reported per task and averaged)",
    )
    parser.add_argument("--episodes", type=int, default=protocol.episodes)
    parser.add_argument(
        "--num_envs", type=int, default=protocol.num_envs, help="envs per batch (part of the protocol)"
    )
    parser.add_argument(
        "--episode_length", type=int, default=protocol.episode_length, help="env steps per episode"
    )
    parser.add_argument("--videos", type=int, default=0, help="render the first N episodes to MP4")
    parser.add_argument("--videos_dir", default="outputs/eval_videos", help="where the MP4s go")
    parser.add_argument(
        "--eval_seed",
        type=int,
        default=protocol.first_seed,
        help=f"first episode seed (held-out: {HELD_OUT.start:,}+; tune on validation seeds, {VALIDATION.start:,}+)",
    )
    args = parser.parse_args(argv)

    def startup():
        env_cfg = metaworld_env_config(
            args.task, num_envs=args.num_envs, episode_length=args.episode_length, eval_seed=args.eval_seed
        )
        check_task_order(args.policy_path, env_cfg)
        policy, pre, post = load_policy_for_eval(args.policy_path)

        def run() -> None:
            progress = sys.stderr.isatty()
            report = evaluate_tasks(
                policy,
                pre,
                post,
                env_cfg,
                args.episodes,
                progress,
                args.num_envs,
                args.videos,
                args.videos_dir,
            )
            print(json.dumps(report, indent=2))

        return run

    run_cli(startup)


if __name__ == "__main__":
    main()
