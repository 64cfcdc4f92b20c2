"""Configuration of ``pi_rl``: a flow-matching base policy wrapped for πRL fine-tuning."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import draccus
from lerobot.configs import PreTrainedConfig
from lerobot.configs.default import PeftConfig
from lerobot.optim import AdamWConfig
from lerobot.policies.gaussian_actor.configuration_gaussian_actor import (
    ActorLearnerConfig,
    ConcurrencyConfig,
)

from lerobot_pirl.flow.config import FlowSamplerConfig, NoiseHeadConfig, ValueHeadConfig
from lerobot_pirl.runtime.security import TransportSecurityConfig


@dataclass
class PiRLActorConfig:
    """How a πRL actor paces, evaluates and reconnects (read by ``lerobot_pirl.actor`` only)."""

    # Chunks each env runs per policy version before the actor waits for new weights
    # (null = ceil(rollout_size / num_envs): one on-policy rollout per version from a single actor;
    # with A actors use ceil(rollout_size / (num_envs * A)); 0 = never wait).
    chunks_per_version: int | None = None
    # Policy versions between held-out ODE evaluations run by the actor (0 = never).
    eval_every: int = 0
    # Episodes per held-out evaluation (per task of a multi-task env).
    eval_episodes: int = 30
    # Episodes of each held-out evaluation rendered to MP4 under <output_dir>/videos/v<version>/ (per task of
    # a multi-task env: .../v<version>/<task>/; sent to wandb by a learner on the same machine); 0 = none.
    eval_videos: int = 0
    # Seconds between episode-statistics messages to the learner.
    stats_period_s: float = 1.0
    # Reconnection attempts (with exponential back-off) before an actor gives up on its learner.
    max_reconnects: int = 10
    # Torch intra-op threads of the actor process (small models sample fastest on one thread).
    torch_threads: int = 1
    # Language instruction for envs that provide none (gym_manipulator robots); a VLA's prompt.
    task: str = ""
    # Envs an actor steps for env configs without a `num_envs` of their own (LeRobot's `libero`, `metaworld`).
    num_envs: int = 1
    # Step those envs in subprocesses (a gymnasium AsyncVectorEnv): all envs step together and a chunk ends
    # for every env at the first episode end in it (SyncVectorEnv envs are stepped one by one instead).
    async_envs: bool = False
    # Exit when the learner says training is over (false: keep reconnecting, e.g. to a learner that will
    # be resumed with a larger budget).
    exit_when_learner_done: bool = True
    # Policy versions between re-splits of a multi-task env's envs over its tasks by their training failure rate
    # since the last split (one env per task, the rest in proportion; an env switches when its episode ends);
    # 0 = keep the env config's split. Not with GRPO groups (env.group_size > 1).
    rebalance_envs_every: int = 0

    def __post_init__(self) -> None:
        if self.chunks_per_version is not None and self.chunks_per_version < 0:
            raise ValueError(f"actor.chunks_per_version must be >= 0 or null, got {self.chunks_per_version}")
        if self.eval_every < 0 or self.eval_episodes < 1 or self.eval_videos < 0:
            raise ValueError("actor.eval_every and actor.eval_videos must be >= 0, actor.eval_episodes >= 1")
        if self.num_envs < 1:
            raise ValueError(f"actor.num_envs must be >= 1, got {self.num_envs}")
        if self.rebalance_envs_every < 0:
            raise ValueError(f"actor.rebalance_envs_every must be >= 0, got {self.rebalance_envs_every}")
        if self.max_reconnects < 0 or self.torch_threads < 1 or self.stats_period_s <= 0:
            raise ValueError("actor.max_reconnects >= 0, actor.torch_threads >= 1, actor.stats_period_s > 0")

    def chunks_per_env(self, rollout_size: int, num_envs: int) -> int:
        """Chunks each of ``num_envs`` envs runs per policy version (0: unlimited)."""
        if self.chunks_per_version is not None:
            return self.chunks_per_version
        return -(-rollout_size // num_envs)


@PreTrainedConfig.register_subclass("pi_rl")
@dataclass
class PiRLConfig(PreTrainedConfig):
    """πRL wrapper of a flow-matching policy (``flow_mlp`` now; pi0 / pi05 / smolvla through adapters).

    Training rollouts sample the denoising chain stochastically (Flow-SDE / Flow-Noise / CPS) and score
    it exactly; ``select_action`` / ``predict_action_chunk`` always run the deterministic ODE.

    CLI: ``--policy.type=pi_rl --policy.base_policy_path=<checkpoint dir or Hub id>``.
    """

    # A pretrained LeRobot checkpoint of the base flow policy (local dir or Hub id); used when `base` is null.
    base_policy_path: str | None = None
    # Inline config of the base policy, as in its config.json (with "type"); filled in from base_policy_path
    # when the base is loaded, so a saved pi_rl checkpoint is self-contained.
    base: dict[str, Any] | None = None

    # Rollout sampler: noise method, noise level, denoise steps, executed chunk, log-prob options.
    sampler: FlowSamplerConfig = field(default_factory=FlowSamplerConfig)
    # Flow-Noise std head.
    noise_head: NoiseHeadConfig = field(default_factory=NoiseHeadConfig)
    # Critic head.
    value_head: ValueHeadConfig = field(default_factory=ValueHeadConfig)
    # Train only the base's action expert (the velocity network) and keep its observation backbone frozen.
    train_expert_only: bool = True
    # LoRA / PEFT adapters on the base (LeRobot's PeftConfig; also set by the run's top-level --peft.*, as
    # with lerobot-train): only the adapters train in the base; the value and noise heads always fully.
    peft: PeftConfig | None = None

    # Learning rate of the optimizer preset (used only if the policy is trained by lerobot-train).
    optimizer_lr: float = 1e-4

    # Total number of learner updates (the run stops after this many).
    online_steps: int = 1000
    # With repo_id (and push_to_hub), also push every this many checkpoints during training, not only at
    # the end; null: at the end only.
    push_every: int | None = None
    # --- fields of LeRobot's SAC runtime that pi_rl does not use: kept so that LeRobot's configs and
    # earlier pi_rl checkpoints load, refused when set to anything but the default (see UNUSED_FIELDS) ---
    # (unused) Device of LeRobot's replay buffer; pi_rl holds one rollout on the CPU.
    storage_device: str = "cpu"
    # (unused) Transitions before SAC starts learning; pi_rl updates once a rollout is in.
    online_step_before_learning: int = 0
    # (unused) Capacity of LeRobot's online replay buffer.
    online_buffer_capacity: int = 100_000
    # (unused) Capacity of LeRobot's offline replay buffer.
    offline_buffer_capacity: int = 100_000
    # (unused) Asynchronous prefetching of replay batches.
    async_prefetch: bool = False
    # Discrete action head size (not supported by pi_rl; must stay null).
    num_discrete_actions: int | None = None
    # Normalisation statistics used when no processor is loaded from base_policy_path.
    dataset_stats: dict[str, dict[str, list[float]]] | None = None
    # Learner address and port shared by actor and learner, and the streams' queue timeout (pi_rl pushes
    # weights after every update: policy_parameters_push_frequency must stay at its default).
    actor_learner_config: ActorLearnerConfig = field(default_factory=ActorLearnerConfig)
    # (LeRobot's) Threads or processes for the communication side: pi_rl uses threads only, the default.
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    # Actor pacing, periodic evaluation and reconnection.
    actor: PiRLActorConfig = field(default_factory=PiRLActorConfig)
    # TLS and the actor token of the actor-learner channel (off by default: loopback needs neither).
    transport: TransportSecurityConfig = field(default_factory=TransportSecurityConfig)
    # Seconds without any transition (after the first one) after which the learner sends its current
    # weights again: a new chunk budget for every actor, so a rollout left short (a message lost with a
    # broken stream, an actor gone) still fills (null = never).
    learner_resend_s: float | None = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.base, PreTrainedConfig):
            self.base = encode_base_config(self.base)
        if self.base is None and not self.base_policy_path:
            raise ValueError(
                "pi_rl needs a base policy: set base_policy_path (a checkpoint) or base (a config)"
            )
        if self.base is not None and self.base.get("type") in (None, "pi_rl"):
            raise ValueError(
                "base: expected the config of a flow-matching policy with its 'type' (not pi_rl)"
            )
        if self.num_discrete_actions is not None:
            raise ValueError("num_discrete_actions: pi_rl supports continuous actions only (set it to null)")
        self.refuse_unused_fields()
        if self.online_steps < 1:
            raise ValueError(f"online_steps must be >= 1, got {self.online_steps}")
        if self.push_every is not None and self.push_every < 1:
            raise ValueError(f"push_every must be >= 1 or null, got {self.push_every}")
        if self.optimizer_lr <= 0:
            raise ValueError(f"optimizer_lr must be > 0, got {self.optimizer_lr}")
        if self.learner_resend_s is not None and self.learner_resend_s <= 0:
            raise ValueError(f"learner_resend_s must be > 0 or null, got {self.learner_resend_s}")
        if self.base is not None:
            self.base["device"] = self.device
            self.adopt_base_features(self.base_config())

    def refuse_unused_fields(self) -> None:
        """A field pi_rl does not read must keep its default: setting it would otherwise do nothing."""
        for name, reason in UNUSED_FIELDS.items():
            value, default = _get_dotted(self, name), _default_of(type(self), name)
            if value != default:
                raise ValueError(f"{name}: {reason}; leave it at {default!r} (got {value!r})")

    def base_config(self) -> PreTrainedConfig | None:
        """The base policy's config object (decoded from :attr:`base`)."""
        return decode_base_config(self.base) if self.base is not None else None

    def adopt_base_features(self, base: PreTrainedConfig) -> None:
        """The wrapper reads and writes exactly what its base policy does."""
        if base.input_features:
            self.input_features = dict(base.input_features)
            self.output_features = dict(base.output_features)

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=0.0, grad_clip_norm=1.0)

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if self.base is not None:
            self.base_config().validate_features()

    @property
    def observation_delta_indices(self) -> list | None:
        return self.base_config().observation_delta_indices if self.base is not None else None

    @property
    def action_delta_indices(self) -> list | None:
        return self.base_config().action_delta_indices if self.base is not None else None

    @property
    def reward_delta_indices(self) -> None:
        return None


# Fields of `cfg.policy` that pi_rl does not read (most are read by LeRobot's SAC runtime), each with why:
# a value other than the field's default is refused.
UNUSED_FIELDS: dict[str, str] = {
    "storage_device": "pi_rl keeps one on-policy rollout on the CPU, it has no replay buffer device",
    "online_step_before_learning": "pi_rl updates as soon as algorithm.rollout_size transitions are in "
    "(to fit the critic before the actor moves, set algorithm.critic_warmup_updates)",
    "online_buffer_capacity": "pi_rl has no replay buffer (set algorithm.rollout_size instead)",
    "offline_buffer_capacity": "pi_rl has no offline replay buffer",
    "async_prefetch": "pi_rl iterates its rollout in memory, there is nothing to prefetch",
    "actor_learner_config.policy_parameters_push_frequency": "pi_rl pushes new weights after every update",
    "concurrency.actor": "pi_rl actors run their gRPC streams in threads only",
    "concurrency.learner": "the pi_rl learner serves actors from threads only",
    "concurrency.multiprocessing_context": "pi_rl starts no processes",
    "use_amp": "pi_rl does not autocast (the base policy's own dtype, e.g. pi0's `dtype`, applies)",
    "use_peft": "LoRA / PEFT adapters on the base are set with the run's --peft.* (or policy.peft)",
    "n_obs_steps": "pi_rl reads one observation per chunk",
}


def _get_dotted(obj: Any, name: str) -> Any:
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _default_of(cls: type, name: str) -> Any:
    """The default of a (dotted) dataclass field, e.g. ``concurrency.learner``."""
    head, _, rest = name.partition(".")
    f = cls.__dataclass_fields__[head]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return _get_dotted(value, rest) if rest else value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} in a base policy config")


def encode_base_config(cfg: PreTrainedConfig) -> dict[str, Any]:
    """A policy config as the JSON dict of its config.json (with its "type")."""
    return json.loads(json.dumps(draccus.encode(cfg, PreTrainedConfig), default=_json_default))


def decode_base_config(data: dict[str, Any]) -> PreTrainedConfig:
    """The inverse of :func:`encode_base_config`."""
    try:
        PreTrainedConfig.get_choice_class(data["type"])
    except KeyError as e:
        raise ValueError(
            f"base: policy type {data.get('type')!r} is not registered "
            f"(known: {sorted(PreTrainedConfig.get_known_choices())})"
        ) from e
    return draccus.decode(PreTrainedConfig, copy.deepcopy(data))
