"""``flow_mlp``: a small flow-matching action-chunk policy (state, optionally one small image)."""

from __future__ import annotations

import itertools
import math
from collections import deque

import torch
import torch.nn.functional as F
from lerobot.configs.types import FeatureType
from lerobot.policies.common.flow_matching import euler_integrate, sample_noise, sample_time_beta
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor, nn

from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig


def sinusoidal_embedding(tau: Tensor, dim: int) -> Tensor:
    """``[B] -> [B, dim]`` sin/cos features of the flow time at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=tau.device) / half)
    angles = tau.float()[:, None] * freqs[None, :] * 2.0 * math.pi
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FlowMLPBlock(nn.Sequential):
    """Linear -> LayerNorm -> SiLU: the model's layer, always called through ``forward`` (the class to name
    in FSDP's transformer-based auto-wrap, as a VLA's decoder layer)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.SiLU())


class ImageEncoder(nn.Module):
    """A few strided convs and a global average pool: ``[B, C, H, W] -> [B, out_dim]``."""

    def __init__(self, in_channels: int, channels: list[int], out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for ch in channels:
            layers += [nn.Conv2d(c, ch, kernel_size=3, stride=2, padding=1), nn.GroupNorm(1, ch), nn.SiLU()]
            c = ch
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c, out_dim)

    def forward(self, image: Tensor) -> Tensor:
        return self.proj(self.convs(image).mean(dim=(-2, -1)))


class FlowMLPModel(nn.Module):
    """Observation encoder + velocity field ``v(x, tau | obs)`` with per-action-token hidden features."""

    def __init__(self, config: FlowMLPConfig, state_dim: int, action_dim: int, image_key: str | None):
        super().__init__()
        self.config = config
        self.action_dim = action_dim
        self.image_key = image_key
        self.state_encoder = nn.Sequential(
            FlowMLPBlock(state_dim, config.hidden_dim), FlowMLPBlock(config.hidden_dim, config.obs_dim)
        )
        if image_key is not None:
            channels = config.input_features[image_key].shape[0]
            self.image_encoder = ImageEncoder(channels, config.image_channels, config.obs_dim)
            self.obs_fuse = FlowMLPBlock(2 * config.obs_dim, config.obs_dim)
        chunk_flat = config.chunk_size * action_dim
        dims = [chunk_flat + config.time_embed_dim + config.obs_dim] + [config.hidden_dim] * config.num_layers
        self.trunk = nn.Sequential(*[FlowMLPBlock(a, b) for a, b in itertools.pairwise(dims)])
        self.to_tokens = nn.Linear(config.hidden_dim, config.chunk_size * config.token_dim)
        self.token_out = nn.Linear(config.token_dim, action_dim)

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        z = self.state_encoder(batch[OBS_STATE].float())
        if self.image_key is not None:
            z = self.obs_fuse(torch.cat([z, self.image_encoder(batch[self.image_key].float())], dim=-1))
        return z

    def velocity(self, z: Tensor, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        bsz = x.shape[0]
        h = torch.cat([x.flatten(1), sinusoidal_embedding(tau, self.config.time_embed_dim), z], dim=-1)
        tokens = F.silu(self.to_tokens(self.trunk(h))).view(
            bsz, self.config.chunk_size, self.config.token_dim
        )
        return self.token_out(tokens), tokens


class FlowMLPPolicy(PreTrainedPolicy):
    """Flow-matching policy trained with the conditional flow-matching loss, sampled with Euler steps."""

    config_class = FlowMLPConfig
    name = "flow_mlp"

    def __init__(self, config: FlowMLPConfig, **kwargs):
        super().__init__(config)
        config.validate_features()
        self.config = config
        images = [k for k, ft in config.input_features.items() if ft.type is FeatureType.VISUAL]
        self.model = FlowMLPModel(
            config,
            state_dim=config.input_features[OBS_STATE].shape[0],
            action_dim=config.output_features[ACTION].shape[0],
            image_key=images[0] if images else None,
        )
        self.reset()

    def _get_default_peft_targets(self) -> dict:
        """LoRA by default on the velocity network's linear layers (the action expert), as LeRobot's pi0 and
        SmolVLA target their experts."""
        return {"target_modules": r"model\.(trunk\.\d+\.0|to_tokens|token_out)", "modules_to_save": []}

    def get_optim_params(self) -> dict:
        return self.parameters()

    def reset(self) -> None:
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """Conditional flow-matching loss on a (normalised) batch with an action chunk."""
        actions = batch[ACTION].float()
        if actions.ndim == 2:
            actions = actions[:, None]
        bsz = actions.shape[0]
        cfg = self.config
        noise = sample_noise(actions.shape, actions.device)
        tau = sample_time_beta(
            bsz,
            actions.device,
            alpha=cfg.time_beta_alpha,
            beta=cfg.time_beta_beta,
            scale=cfg.time_scale,
            offset=cfg.time_offset,
        )
        t = tau[:, None, None]
        x_t = t * noise + (1.0 - t) * actions
        target = noise - actions
        v, _ = self.model.velocity(self.model.encode(batch), x_t, tau)
        per_elem = F.mse_loss(v, target, reduction="none")
        if "action_is_pad" in batch:
            keep = (~batch["action_is_pad"].bool()).float()[..., None].expand_as(per_elem)
            loss = (per_elem * keep).sum() / keep.sum().clamp_min(1.0)
        else:
            loss = per_elem.mean()
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """Deterministic Euler sampling of a whole chunk ``[B, chunk_size, action_dim]``."""
        self.eval()
        z = self.model.encode(batch)
        bsz = z.shape[0]
        if noise is None:
            noise = sample_noise((bsz, self.config.chunk_size, self.model.action_dim), z.device)

        def velocity(x: Tensor, tau: Tensor) -> Tensor:
            return self.model.velocity(z, x, tau)[0]

        return euler_integrate(velocity, noise, self.config.num_inference_steps)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        if len(self._action_queue) == 0:
            actions = self.predict_action_chunk(batch, noise=noise)[:, : self.config.n_action_steps]
            self._action_queue.extend(actions.transpose(0, 1))
        return self._action_queue.popleft()
