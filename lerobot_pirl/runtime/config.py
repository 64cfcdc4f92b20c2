"""Validation of LeRobot's ``TrainRLServerPipelineConfig`` for πRL runs (shared by actor and learner)."""

from __future__ import annotations

import json
from pathlib import Path

from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.utils.constants import CHECKPOINTS_DIR, LAST_CHECKPOINT_LINK

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.envs.task_order import check_task_order
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig


def is_pi_rl(cfg: TrainRLServerPipelineConfig) -> bool:
    """True when the run is a πRL run (otherwise the entry points delegate to LeRobot's SAC runtime)."""
    return isinstance(cfg.policy, PiRLConfig) or isinstance(cfg.algorithm, PiRLAlgorithmConfig)


def resolve_pi_rl_config(cfg: TrainRLServerPipelineConfig) -> TrainRLServerPipelineConfig:
    """Fill in the algorithm from the policy and check that policy, algorithm and env fit together."""
    if not isinstance(cfg.policy, PiRLConfig):
        raise ValueError(
            f"policy.type: the pi_rl algorithm needs --policy.type=pi_rl, got {cfg.policy.type!r}"
        )
    if cfg.algorithm is None:
        cfg.algorithm = PiRLAlgorithmConfig.from_policy_config(cfg.policy)
    if not isinstance(cfg.algorithm, PiRLAlgorithmConfig):
        raise ValueError(
            f"algorithm.type: a pi_rl policy trains with --algorithm.type=pi_rl, got {cfg.algorithm.type!r}"
        )
    if cfg.algorithm.policy_config is None:
        cfg.algorithm.policy_config = cfg.policy
    if cfg.peft is not None:  # lerobot-train's --peft.*: adapters on the base, saved with the policy config
        if cfg.policy.peft is not None and cfg.policy.peft != cfg.peft:
            raise ValueError(
                "peft: set either the run's --peft.* or --policy.peft.*, not two different configs"
            )
        cfg.policy.peft = cfg.peft
    if cfg.env is None:
        raise ValueError("env: pi_rl needs an environment (e.g. --env.type=pirl_metaworld)")
    if cfg.algorithm.estimator == "grpo":
        check_grpo_groups(cfg)
    if cfg.policy.actor.rebalance_envs_every:
        check_rebalancing(cfg.env)
    check_task_order(cfg.policy.base_policy_path, cfg.env)
    if not cfg.job_name:
        cfg.job_name = f"{cfg.env.type}_pi_rl"
    if cfg.output_dir is None:
        raise ValueError("output_dir: set --output_dir (checkpoints, logs and metrics go there)")
    cfg.output_dir = Path(cfg.output_dir)
    if cfg.policy.push_to_hub and not cfg.policy.repo_id:
        raise ValueError(
            "policy.repo_id: set it to push the final policy to the Hub, or --policy.push_to_hub=false"
        )
    return cfg


def check_grpo_groups(cfg: TrainRLServerPipelineConfig) -> None:
    """GRPO compares the episodes of envs that share reset states (an env with ``group_size``): the
    members of a group must start and end their episodes together, and a rollout must hold them whole;
    otherwise groups fall apart over rollouts and most episodes are never graded."""
    env, alg = cfg.env, cfg.algorithm
    group = getattr(env, "group_size", None)
    if group is None:
        return
    if group != alg.grpo_group_size:
        raise ValueError(
            f"env.group_size ({group}) must equal algorithm.grpo_group_size "
            f"({alg.grpo_group_size}): GRPO compares the envs of a group, which share reset states"
        )
    if getattr(env, "terminate_on_success", False):
        raise ValueError(
            "env.terminate_on_success: GRPO needs false: ended on success, a group's episodes end at "
            "different steps and its members drift apart (reward and success are still recorded)"
        )
    length, num_envs = getattr(env, "episode_length", None), getattr(env, "num_envs", None)
    steps = executed_steps_per_chunk(cfg.policy)
    if not length or not num_envs or not steps:
        return
    episode_chunks = -(-length // steps)
    per_env = cfg.policy.actor.chunks_per_env(alg.rollout_size, num_envs)
    if per_env % episode_chunks:
        if cfg.policy.actor.chunks_per_version:
            field, value, unit = "actor.chunks_per_version", per_env, episode_chunks
        else:
            field, value, unit = "algorithm.rollout_size", alg.rollout_size, num_envs * episode_chunks
        raise ValueError(
            f"{field} ({value}): {per_env} chunks per env per rollout do not hold whole episodes of "
            f"{episode_chunks} chunks (env.episode_length {length} / {steps} executed actions per chunk); "
            f"GRPO grades whole episodes only: use a multiple of {unit}"
        )


def check_rebalancing(env) -> None:
    """``policy.actor.rebalance_envs_every`` moves envs between the tasks of a mix, one env at a time: it needs
    a mix of several tasks whose envs can change task (``pirl_metaworld_mt``) and no GRPO groups."""
    field = "policy.actor.rebalance_envs_every"
    if getattr(env, "group_size", 1) > 1:
        raise ValueError(
            f"{field}: the envs of a GRPO group (env.group_size > 1) share their reset states and cannot "
            "change task one by one; set it to 0 or env.group_size to 1"
        )
    tasks = getattr(env, "task_list", None)
    if not hasattr(env, "for_task") or not tasks or len(tasks) < 2 or getattr(env, "task", None) is not None:
        raise ValueError(
            f"{field}: env type {env.type!r} (task {getattr(env, 'task', None)!r}) plays one task or cannot "
            "move an env to another task; it re-splits the envs of a multi-task mix (pirl_metaworld_mt)"
        )


def executed_steps_per_chunk(policy: PiRLConfig) -> int | None:
    """Env steps one sampled chunk runs: ``sampler.action_chunk``, else the base policy's ``n_action_steps``
    (from its local ``config.json``; None when that is not on this machine)."""
    if policy.sampler.action_chunk is not None:
        return int(policy.sampler.action_chunk)
    try:
        base = json.loads((Path(policy.base_policy_path) / "config.json").read_text())
        return int(base["n_action_steps"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def check_fresh_output_dir(cfg: TrainRLServerPipelineConfig) -> None:
    """A fresh (not resumed) learner must not overwrite a run that has checkpoints.

    (LeRobot's ``TrainRLServerPipelineConfig.validate`` cannot be used here: in 0.6.1 it dereferences
    ``cfg.dataset`` even though RL runs have none.)
    """
    last = Path(cfg.output_dir) / CHECKPOINTS_DIR / LAST_CHECKPOINT_LINK
    if last.exists():
        raise FileExistsError(
            f"output_dir: {cfg.output_dir} already has checkpoints; pass --resume=true to continue it"
        )
