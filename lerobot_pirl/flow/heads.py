"""The two heads πRL adds to a base flow policy: the Flow-Noise std head and the value head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lerobot_pirl.flow.config import ValueHeadConfig
from lerobot_pirl.flow.steps import as_float32, bounded_std


def mlp(in_dim: int, hidden_dims: list[int], out_dim: int, activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for h in hidden_dims:
        layers += [nn.Linear(dim, h), activation()]
        dim = h
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class NoiseHead(nn.Module):
    """Per action token: hidden ``[B, T, F]`` -> std ``[B, T, D]`` in ``[std_min, std_max]``."""

    def __init__(
        self, hidden_dim: int, action_dim: int, hidden_dims: list[int], std_min: float, std_max: float
    ):
        super().__init__()
        self.net = mlp(hidden_dim, hidden_dims, action_dim, nn.Tanh)
        self.std_min = std_min
        self.std_max = std_max
        # Start near the middle of the band (tanh(~0) -> (std_min + std_max) / 2) with gradients flowing.
        nn.init.normal_(self.net[-1].weight, std=1e-2)
        nn.init.zeros_(self.net[-1].bias)
        self.linears = [m for m in self.net if isinstance(m, nn.Linear)]
        self.register_buffer("std_mid", torch.tensor((std_min + std_max) / 2.0), persistent=False)

    def forward(self, hidden: Tensor) -> Tensor:
        # The layers of ``self.net`` applied on the flattened tokens without a module call per layer: the
        # head runs at every denoising step of every rollout, where call overhead is half its cost.
        *lead, width = hidden.shape
        y = as_float32(hidden.reshape(-1, width))
        *inner, last = self.linears
        for layer in inner:
            y = torch.tanh(F.linear(y, layer.weight, layer.bias))
        raw = F.linear(y, last.weight, last.bias)
        return bounded_std(raw, self.std_min, self.std_max, self.std_mid).view(*lead, -1)


class ValueHead(nn.Module):
    """ReLU MLP on either the pooled prefix features or the mean action-token features."""

    def __init__(self, prefix_dim: int, hidden_dim: int, cfg: ValueHeadConfig, placement: str):
        super().__init__()
        self.placement = placement
        self.detach_input = cfg.detach_critic_input
        in_dim = prefix_dim if placement == "prefix" else hidden_dim
        self.net = mlp(in_dim, cfg.hidden_dims, 1, nn.ReLU)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, prefix_features: Tensor, expert_features: Tensor | None) -> Tensor:
        x = prefix_features if self.placement == "prefix" else expert_features
        if x is None:
            raise ValueError("value_head.placement='expert' needs action-token features")
        if self.detach_input:
            x = x.detach()
        return self.net(x.float()).squeeze(-1)
