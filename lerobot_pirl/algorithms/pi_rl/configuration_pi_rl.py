"""Configuration of the πRL update (PPO or GRPO) as a LeRobot ``RLAlgorithmConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lerobot.configs import PreTrainedConfig
from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_pirl.checks import check_choice

ESTIMATORS = ("gae", "grpo")
OFFLINE_SCHEDULES = ("constant", "linear", "cosine")
OFFLINE_PARAMS = ("actor", "expert")
PER_TASK_STDS = ("task", "rollout")


@RLAlgorithmConfig.register_subclass("pi_rl")
@dataclass
class PiRLAlgorithmConfig(RLAlgorithmConfig):
    """PPO (GAE) or GRPO on chunk-level transitions of a ``pi_rl`` policy.

    CLI: ``--algorithm.type=pi_rl``. Defaults follow the paper's LIBERO settings; the CPU recipes in
    ``recipes/`` override the learning rates and batch sizes for the small ``flow_mlp`` policy.
    """

    # Advantage estimator: "gae" (PPO with a critic) or "grpo" (group-relative returns, no critic).
    estimator: str = "gae"
    # Discount per chunk step.
    gamma: float = 0.99
    # GAE lambda.
    gae_lambda: float = 0.95
    # PPO ratio clip below 1 (ratio >= 1 - clip_ratio_low).
    clip_ratio_low: float = 0.2
    # PPO ratio clip above 1 (ratio <= 1 + clip_ratio_high).
    clip_ratio_high: float = 0.2
    # Value clipping around the rollout's values (null disables it).
    value_clip: float | None = 0.2
    # Delta of the Huber value loss.
    huber_delta: float = 10.0
    # Passes over each rollout.
    update_epochs: int = 4
    # Chunk transitions per minibatch.
    minibatch_size: int = 128
    # Usable chunk transitions that trigger an update.
    rollout_size: int = 2048
    # Normalise advantages over the rollout (zero mean, unit std).
    normalize_advantages: bool = True
    # Normalise them within each task (the transitions' task strings) instead of over the whole rollout, so
    # every task of a multi-task mix weighs alike in the update (one task: the same as over the rollout).
    normalize_advantages_per_task: bool = False
    # With per-task normalisation, the std each task's centred advantages are divided by: "task" (its own) or
    # "rollout" (one std over all tasks, so a task whose rollout carries no success signal is not blown up to unit noise).
    per_task_advantage_std: str = "task"
    # Learning rate of the base policy's trainable parameters.
    actor_lr: float = 5e-6
    # Learning rate of the value head.
    critic_lr: float = 1e-4
    # Learning rate of the Flow-Noise head (null = actor_lr).
    noise_head_lr: float | None = None
    # Entropy bonus coefficient (0.005 for Flow-Noise in the paper, 0 for Flow-SDE).
    entropy_coef: float = 0.0
    # Weight of the value loss in the total loss.
    value_loss_coef: float = 1.0
    # Gradient clipping norm, applied per parameter group.
    max_grad_norm: float = 1.0
    # Stop the epochs of an update early when approx_kl exceeds this (null disables it).
    target_kl: float | None = None
    # Updates at the start of training that train only the value head (the actor's parameters do not move),
    # so PPO starts from a critic fitted to the SFT policy's returns (RLinf does this for LIBERO).
    critic_warmup_updates: int = 0
    # GRPO: number of envs that share a reset state (a group).
    grpo_group_size: int = 8
    # GRPO: drop groups whose mean success is outside [grpo_success_low, grpo_success_high].
    grpo_success_filter: bool = True
    # GRPO: lower bound of the kept groups' mean success.
    grpo_success_low: float = 0.1
    # GRPO: upper bound of the kept groups' mean success.
    grpo_success_high: float = 0.9
    # Oldest usable data: transitions sampled more than this many policy versions ago are dropped.
    max_policy_lag: int = 1
    # Hybrid fine-tuning: weight of the base's flow-matching loss on offline chunks (demos, corrections) per minibatch.
    offline_loss_coef: float = 0.0
    # Offline weight schedule: "constant", or "linear" / "cosine" decay to offline_loss_coef_final.
    offline_loss_schedule: str = "constant"
    # Offline weight at the end of a linear / cosine schedule (kept afterwards).
    offline_loss_coef_final: float = 0.0
    # Updates over which a linear / cosine schedule decays.
    offline_loss_decay_updates: int = 100
    # Offline chunks per PPO minibatch as a fraction of minibatch_size (the offline side of an online_ratio).
    offline_ratio: float = 0.25
    # What the offline loss may move: "actor" (PPO's trainable base parameters) or "expert" (the adapter's expert).
    offline_params: str = "actor"
    # Human-corrected chunks (gym_manipulator interventions) kept in the offline buffer (0: keep none).
    correction_capacity: int = 10_000
    # Tolerance of the first-minibatch ratio guard (|ratio - 1| on on-policy data).
    ratio_guard_tol: float = 1e-3
    # Seed of the minibatch shuffling.
    seed: int = 0
    # The policy config (filled in by the pipeline config).
    policy_config: PreTrainedConfig | None = None

    def __post_init__(self) -> None:
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("per_task_advantage_std", self.per_task_advantage_std, PER_TASK_STDS)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        for name in ("clip_ratio_low", "clip_ratio_high"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.clip_ratio_low >= 1.0:
            raise ValueError(f"clip_ratio_low must be < 1, got {self.clip_ratio_low}")
        if self.value_clip is not None and self.value_clip <= 0:
            raise ValueError(f"value_clip must be > 0 or null, got {self.value_clip}")
        if self.huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta}")
        for name in ("update_epochs", "minibatch_size", "rollout_size", "grpo_group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_size > self.rollout_size:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) must be <= rollout_size ({self.rollout_size})"
            )
        for name in ("actor_lr", "critic_lr", "max_grad_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.noise_head_lr is not None and self.noise_head_lr <= 0:
            raise ValueError(f"noise_head_lr must be > 0 or null, got {self.noise_head_lr}")
        for name in ("entropy_coef", "value_loss_coef", "offline_loss_coef", "offline_loss_coef_final"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_choice("offline_loss_schedule", self.offline_loss_schedule, OFFLINE_SCHEDULES)
        if self.offline_loss_decay_updates < 1:
            raise ValueError(
                f"offline_loss_decay_updates must be >= 1, got {self.offline_loss_decay_updates}"
            )
        if not 0.0 < self.offline_ratio <= 4.0:
            raise ValueError(f"offline_ratio must be in (0, 4], got {self.offline_ratio}")
        check_choice("offline_params", self.offline_params, OFFLINE_PARAMS)
        if self.correction_capacity < 0:
            raise ValueError(f"correction_capacity must be >= 0, got {self.correction_capacity}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl must be > 0 or null, got {self.target_kl}")
        if not 0.0 <= self.grpo_success_low <= self.grpo_success_high <= 1.0:
            raise ValueError(
                "grpo_success_low/high must satisfy 0 <= low <= high <= 1, got "
                f"{self.grpo_success_low}, {self.grpo_success_high}"
            )
        if self.critic_warmup_updates < 0:
            raise ValueError(f"critic_warmup_updates must be >= 0, got {self.critic_warmup_updates}")
        if self.critic_warmup_updates and self.estimator == "grpo":
            raise ValueError("critic_warmup_updates: estimator='grpo' trains no critic; set it to 0")
        if self.max_policy_lag < 0:
            raise ValueError(f"max_policy_lag must be >= 0, got {self.max_policy_lag}")
        if self.ratio_guard_tol <= 0:
            raise ValueError(f"ratio_guard_tol must be > 0, got {self.ratio_guard_tol}")

    @classmethod
    def from_policy_config(cls, policy_cfg: Any) -> PiRLAlgorithmConfig:
        """Defaults for a policy: Flow-Noise gets the paper's entropy bonus (0.005)."""
        entropy = (
            0.005
            if getattr(getattr(policy_cfg, "sampler", None), "noise_method", "") == "flow_noise"
            else 0.0
        )
        return cls(policy_config=policy_cfg, entropy_coef=entropy)

    @property
    def offline_batch_size(self) -> int:
        """Offline chunks drawn for each PPO minibatch."""
        return max(1, round(self.offline_ratio * self.minibatch_size))
