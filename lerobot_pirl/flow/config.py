"""Configuration of the πRL chain sampler and of the heads (plain draccus dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot_pirl.checks import check_choice
from lerobot_pirl.flow.steps import NOISE_METHODS

SDE_STEPS = ("one", "all")
HYBRID_STEP_DRAWS = ("per_sample", "per_batch")
LOGPROB_REDUCTIONS = ("sum", "mean")
LOGPROB_LEVELS = ("chunk", "token")
VALUE_PLACEMENTS = ("prefix", "expert")


@dataclass
class FlowSamplerConfig:
    """How training rollouts sample the denoising chain and how its log-likelihood is scored."""

    # Exploration noise: "flow_sde" (fixed-level SDE), "flow_noise" (learned std), "flow_cps", "ode" (none).
    noise_method: str = "flow_sde"
    # Noise level `a` of Flow-SDE / CPS (ignored by flow_noise and ode).
    noise_level: float = 0.5
    # Number of denoising steps K of the rollout chain (also used by the deployed ODE sampler).
    num_denoise_steps: int = 4
    # "one": a single stochastic step k* per sample (hybrid ODE-SDE); "all": every step stochastic.
    # None picks "all" for flow_noise and "one" otherwise.
    sde_steps: str | None = None
    # Draw the hybrid step k* from 0..K-2 instead of 0..K-1.
    exclude_last_step: bool = False
    # Hybrid k*: "per_sample" (each sample its own step) or "per_batch" (one step per sampling call, as
    # RLinf does; cheaper: no per-sample selection work).
    hybrid_step_draw: str = "per_sample"
    # Lower bound of the Flow-Noise head's std.
    noise_std_min: float = 0.08
    # Upper bound of the Flow-Noise head's std.
    noise_std_max: float = 0.16
    # Floor applied to every stochastic step's std, in sampling and scoring alike (0 disables it).
    std_floor: float = 1e-4
    # Executed part of the chunk H (first H actions enter the log-likelihood); None = the base's n_action_steps.
    action_chunk: int | None = None
    # How the chain's log-density terms combine: "sum" (exact likelihood) or "mean" (RLinf's average).
    logprob_reduction: str = "sum"
    # "chunk": one log-prob (and PPO ratio) per sample; "token": one per executed action element.
    logprob_level: str = "chunk"

    def __post_init__(self) -> None:
        check_choice("noise_method", self.noise_method, NOISE_METHODS)
        if self.sde_steps is None:
            self.sde_steps = "all" if self.noise_method == "flow_noise" else "one"
        check_choice("sde_steps", self.sde_steps, SDE_STEPS)
        check_choice("hybrid_step_draw", self.hybrid_step_draw, HYBRID_STEP_DRAWS)
        if self.num_denoise_steps < 1:
            raise ValueError(f"num_denoise_steps must be >= 1, got {self.num_denoise_steps}")
        if self.noise_method == "flow_cps" and self.num_denoise_steps < 2:
            raise ValueError(
                "noise_method='flow_cps' needs num_denoise_steps >= 2 (its last step is deterministic)"
            )
        if self.exclude_last_step and self.num_denoise_steps < 2:
            raise ValueError("exclude_last_step needs num_denoise_steps >= 2")
        if self.noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {self.noise_level}")
        if self.noise_std_min <= 0:
            raise ValueError(f"noise_std_min must be > 0, got {self.noise_std_min}")
        if self.noise_std_min >= self.noise_std_max:
            raise ValueError(
                f"noise_std_min ({self.noise_std_min}) must be < noise_std_max ({self.noise_std_max})"
            )
        if self.std_floor < 0:
            raise ValueError(f"std_floor must be >= 0, got {self.std_floor}")
        if self.action_chunk is not None and self.action_chunk < 1:
            raise ValueError(f"action_chunk must be >= 1 or null, got {self.action_chunk}")
        check_choice("logprob_reduction", self.logprob_reduction, LOGPROB_REDUCTIONS)
        check_choice("logprob_level", self.logprob_level, LOGPROB_LEVELS)


@dataclass
class NoiseHeadConfig:
    """The Flow-Noise std head (per action token, tanh-bounded to [noise_std_min, noise_std_max])."""

    # Hidden widths of the per-token tanh MLP (RLinf's openpi head: 128, 64).
    hidden_dims: list[int] = field(default_factory=lambda: [128, 64])

    def __post_init__(self) -> None:
        if any(d < 1 for d in self.hidden_dims):
            raise ValueError(f"noise_head.hidden_dims must be positive, got {self.hidden_dims}")


@dataclass
class ValueHeadConfig:
    """The critic head."""

    # "prefix": on the pooled observation features; "expert": on action-token features averaged over
    # the denoising steps; null: the base family's default (pi0: expert; flow_mlp, pi05, smolvla: prefix).
    placement: str | None = None
    # Hidden widths of the ReLU MLP.
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128])
    # Stop critic gradients from flowing into the base model.
    detach_critic_input: bool = True

    def __post_init__(self) -> None:
        if self.placement is not None:
            check_choice("value_head.placement", self.placement, VALUE_PLACEMENTS)
        if any(d < 1 for d in self.hidden_dims):
            raise ValueError(f"value_head.hidden_dims must be positive, got {self.hidden_dims}")
