"""Configuration of ``flow_mlp``: a small flow-matching policy for CPU-sized benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs import NormalizationMode, PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.optim import AdamWConfig
from lerobot.utils.constants import ACTION, OBS_STATE


@PreTrainedConfig.register_subclass("flow_mlp")
@dataclass
class FlowMLPConfig(PreTrainedConfig):
    """A flow-matching action-chunk policy with an MLP velocity field.

    It follows LeRobot's flow convention (``x_tau = tau * noise + (1 - tau) * action``, Euler from
    ``tau = 1`` to ``0``), reads ``observation.state`` and optionally one small image, and exposes the
    same adapter interface as pi0 / pi05 / smolvla so πRL treats it like the big models.

    CLI: ``--policy.discover_packages_path=lerobot_pirl --policy.type=flow_mlp``.
    """

    # Number of observation steps (only 1 is supported).
    n_obs_steps: int = 1
    # Actions predicted per chunk.
    chunk_size: int = 10
    # Actions of a chunk executed before predicting the next one.
    n_action_steps: int = 5
    # Euler steps of the policy's own deterministic sampler.
    num_inference_steps: int = 10

    # Width of the pooled observation features (the "prefix").
    obs_dim: int = 128
    # Width of the hidden layers of the state encoder and of the velocity trunk.
    hidden_dim: int = 256
    # Number of hidden layers of the velocity trunk.
    num_layers: int = 3
    # Width of the per-action-token hidden features (read by πRL's noise / value heads).
    token_dim: int = 32
    # Width of the sinusoidal time embedding.
    time_embed_dim: int = 32
    # Channels of the small conv image encoder (used only when an image feature is present).
    image_channels: list[int] = field(default_factory=lambda: [16, 32, 32])

    # Beta(alpha, beta) time sampling for training, scaled to [offset, offset + scale] (openpi convention).
    time_beta_alpha: float = 1.5
    # Second parameter of the Beta time distribution.
    time_beta_beta: float = 1.0
    # Scale of the sampled training time.
    time_scale: float = 0.999
    # Offset of the sampled training time.
    time_offset: float = 0.001

    # Normalisation of each feature type.
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # Lower bound on the dataset std used for MEAN_STD normalisation. Few-shot datasets have (nearly)
    # constant dims (e.g. a goal that is fixed within a demo); dividing by their ~0 std makes the inputs of
    # a new episode explode. 0 keeps LeRobot's plain statistics.
    normalization_std_floor: float = 0.01

    # AdamW learning rate of the training preset.
    optimizer_lr: float = 1e-3
    # AdamW weight decay of the training preset.
    optimizer_weight_decay: float = 1e-4
    # Gradient clipping norm of the training preset.
    optimizer_grad_clip_norm: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps != 1:
            raise ValueError(f"n_obs_steps: flow_mlp supports only 1, got {self.n_obs_steps}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(
                f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {self.n_action_steps}"
            )
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        for name in ("obs_dim", "hidden_dim", "num_layers", "token_dim", "time_embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.normalization_std_floor < 0:
            raise ValueError(f"normalization_std_floor must be >= 0, got {self.normalization_std_floor}")
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even, got {self.time_embed_dim}")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if OBS_STATE not in self.input_features:
            raise ValueError(
                f"flow_mlp needs '{OBS_STATE}' in input_features, got {list(self.input_features)}"
            )
        if ACTION not in self.output_features:
            raise ValueError(
                f"flow_mlp needs '{ACTION}' in output_features, got {list(self.output_features)}"
            )
        images = [k for k, ft in self.input_features.items() if ft.type is FeatureType.VISUAL]
        if len(images) > 1:
            raise ValueError(f"flow_mlp reads at most one image feature, got {images}")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
