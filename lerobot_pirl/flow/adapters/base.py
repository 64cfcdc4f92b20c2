"""The one interface between πRL's numerics and a base flow-matching model.

An adapter wraps a LeRobot policy (it does not own its parameters) and exposes three things:
- ``encode(batch)``: run the observation part of the model once (for a VLA: the prefix and its KV
  cache) and return a :class:`Prefix`;
- ``velocity(prefix, x, tau)``: the velocity ``v(x, tau | obs)`` for a chunk ``x`` ``[B, T, D]`` at
  per-sample times ``tau`` ``[B]``, plus the per-action-token hidden features ``[B, T, F]`` the noise
  head and an expert-placed value head read;
- the shapes: model chunk ``T`` (``chunk_size``), model action width ``D`` (``action_dim``, padded for
  pi0-like models), the real action width and the widths of the hidden features.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Prefix:
    """What ``encode`` returns: pooled observation features and whatever the model needs to re-use."""

    features: Tensor  # [B, prefix_dim] pooled observation features (value head "prefix" placement)
    context: Any = None  # model-specific cache (e.g. KV cache, encoder output)


class FlowAdapter(abc.ABC):
    """Base class of the per-family adapters (``flow_mlp``, ``pi0``, ``pi05``, ``smolvla``)."""

    # Where this family's value head reads by default: "prefix" (pooled observation features) or
    # "expert" (action-token features averaged over the denoising steps).
    default_value_placement: str = "prefix"

    def __init__(self, policy: nn.Module):
        self.policy = policy

    @property
    @abc.abstractmethod
    def chunk_size(self) -> int:
        """Number of actions the model predicts per chunk (``T``)."""

    @property
    @abc.abstractmethod
    def action_dim(self) -> int:
        """Width of an action in model space (``D``; includes padding)."""

    @property
    @abc.abstractmethod
    def real_action_dim(self) -> int:
        """Width of the environment's action (the dims that enter the log-likelihood)."""

    @property
    @abc.abstractmethod
    def hidden_dim(self) -> int:
        """Width of the per-action-token hidden features returned by :meth:`velocity`."""

    @property
    @abc.abstractmethod
    def prefix_dim(self) -> int:
        """Width of :attr:`Prefix.features`."""

    @property
    @abc.abstractmethod
    def n_action_steps(self) -> int:
        """How many actions of a chunk the base policy executes (default executed chunk ``H``)."""

    @abc.abstractmethod
    def encode(self, batch: dict[str, Tensor]) -> Prefix:
        """Encode a preprocessed observation batch once."""

    @abc.abstractmethod
    def velocity(self, prefix: Prefix, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """Velocity ``[B, T, D]`` and per-token hidden ``[B, T, F]`` at per-sample times ``tau`` ``[B]``."""

    @abc.abstractmethod
    def expert_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the action expert (what ``train_expert_only`` trains)."""

    @abc.abstractmethod
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the observation backbone (frozen with ``train_expert_only``)."""

    def export_overrides(self, num_denoise_steps: int, action_chunk: int) -> dict[str, int]:
        """Config fields an exported base checkpoint gets so that it deploys what πRL trained: the
        ODE with ``num_denoise_steps`` steps and ``action_chunk`` executed actions."""
        return {"num_inference_steps": num_denoise_steps, "n_action_steps": action_chunk}

    def sample_noise(self, batch_size: int, device: torch.device | str, generator=None) -> Tensor:
        """Standard normal ``x_0`` of shape ``[B, T, D]`` (float32)."""
        return torch.randn(batch_size, self.chunk_size, self.action_dim, device=device, generator=generator)


logger = logging.getLogger(__name__)

_ADAPTERS: dict[str, type[FlowAdapter]] = {}


def register_adapter(policy_type: str):
    """Class decorator: ``policy_type`` (a LeRobot policy ``type``) is served by this adapter."""

    def wrap(cls: type[FlowAdapter]) -> type[FlowAdapter]:
        _ADAPTERS[policy_type] = cls
        return cls

    return wrap


ADAPTER_GROUP = "lerobot_pirl.adapters"  # the entry-point group adapter plug-ins are declared in


def load_adapter_plugins() -> list[str]:
    """Import every module of the ``lerobot_pirl.adapters`` entry-point group (each registers its adapters
    on import); returns the names loaded. A plug-in that fails is logged and skipped, never fatal."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ADAPTER_GROUP):
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as e:  # a broken third-party plug-in must not break import lerobot_pirl
            logger.warning("adapter plug-in %r (%s) failed to load: %s", ep.name, ep.value, e)
    return loaded


def supported_base_types() -> list[str]:
    return sorted(_ADAPTERS)


def make_adapter(policy: nn.Module) -> FlowAdapter:
    """The adapter for a LeRobot policy; a clear error for a policy that is not a supported flow model."""
    policy_type = getattr(getattr(policy, "config", None), "type", None)
    if policy_type not in _ADAPTERS:
        raise ValueError(
            f"base_policy_path: policy type {policy_type!r} is not a flow-matching policy supported by "
            f"pi_rl; expected one of {supported_base_types()}"
        )
    return _ADAPTERS[policy_type](policy)
