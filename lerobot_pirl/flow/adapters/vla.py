"""What the pi0 / pi05 / smolvla adapters share.

The three LeRobot VLAs have the same shape: a VLM encodes the prefix (images, language, for smolvla also
the state) once into a per-layer KV cache, and an action expert evaluates the velocity of the action
tokens against that cache (``model.denoise_step``), ending in ``model.action_out_proj``. The adapters
call LeRobot's own methods for every piece of model math; they only re-run the few orchestration steps
of ``sample_actions`` that build the cache, so that it can be kept and re-used by πRL's sampler.

The per-token hidden features the noise and value heads read are the input of ``action_out_proj``
(the expert's last hidden state after its final norm, cast to float32 by LeRobot), captured with a
forward pre-hook, so ``denoise_step`` runs unmodified.

Nothing here imports transformers or LeRobot's modeling modules at import time: ``import lerobot_pirl``
stays light and works without the ``pi`` / ``smolvla`` extras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lerobot.utils.constants import ACTION
from torch import Tensor, nn

from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix


@dataclass
class VLAContext:
    """The encoded prefix a VLA's ``denoise_step`` needs (the ``Prefix.context`` of the VLA adapters)."""

    past_key_values: Any  # transformers DynamicCache of the prefix
    prefix_pad_masks: Tensor  # [B, L] bool, True for real prefix tokens
    state: Tensor | None = None  # [B, max_state_dim] padded state (pi0 only: its state is a suffix token)


@contextlib.contextmanager
def eval_mode(module: nn.Module, enabled: bool = True):
    """Run ``module`` in eval mode and restore every submodule's own mode afterwards."""
    if not enabled:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def capture_input(module: nn.Module, box: dict[str, Tensor]):
    """Store the (first) positional input of ``module``'s next call in ``box["input"]``."""

    def hook(_module: nn.Module, args: tuple) -> None:
        box["input"] = args[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``[B, L, F]`` over the positions where ``mask`` ``[B, L]`` is true, in float32."""
    w = mask.unsqueeze(-1).to(torch.float32)
    return (x.to(torch.float32) * w).sum(1) / w.sum(1).clamp_min(1.0)


class VLAAdapter(FlowAdapter):
    """Shared part of the pi0 / pi05 / smolvla adapters.

    Subclasses name their modules (``_backbone_module``, ``_expert_modules``), their unsupported
    settings (``_check_config``) and implement ``_encode`` (prefix forward -> context and pooled
    features) and ``_denoise`` (one call of LeRobot's ``denoise_step``).
    """

    # The model reads ``observation.state`` padded to ``max_state_dim`` (pi0, smolvla; pi05 reads it
    # as text in the prompt).
    pads_state: bool = True

    def __init__(self, policy: nn.Module):
        super().__init__(policy)
        self._check_common_config(policy.config)
        self._check_config(policy.config)

    # ------------------------------------------------------------------ shapes
    @property
    def chunk_size(self) -> int:
        return self.policy.config.chunk_size

    @property
    def action_dim(self) -> int:
        return self.policy.config.max_action_dim

    @property
    def real_action_dim(self) -> int:
        return self.policy.config.output_features[ACTION].shape[0]

    @property
    def n_action_steps(self) -> int:
        return self.policy.config.n_action_steps

    @property
    def hidden_dim(self) -> int:
        return self.policy.model.action_out_proj.in_features

    # ------------------------------------------------------------------ checks
    def _check_common_config(self, cfg) -> None:
        rtc = getattr(cfg, "rtc_config", None)
        if rtc is not None and getattr(rtc, "enabled", False):
            raise ValueError(
                f"rtc_config: real-time chunking guides the velocity with the previous chunk, which πRL's "
                f"chain log-likelihood does not model; disable it (rtc_config.enabled=false) for {cfg.type}"
            )
        if getattr(cfg, "n_obs_steps", 1) != 1:
            raise ValueError(f"n_obs_steps: pi_rl supports n_obs_steps=1 only, got {cfg.n_obs_steps}")
        action = cfg.output_features.get(ACTION)
        if action is None:
            raise ValueError(f"output_features: the {cfg.type} config has no '{ACTION}' feature")
        if action.shape[0] > cfg.max_action_dim:
            raise ValueError(
                f"max_action_dim: the action has {action.shape[0]} dims but max_action_dim is "
                f"{cfg.max_action_dim} (LeRobot pads, it never truncates)"
            )
        state = cfg.robot_state_feature
        if self.pads_state and state is not None and state.shape[-1] > cfg.max_state_dim:
            raise ValueError(
                f"max_state_dim: the state has {state.shape[-1]} dims but max_state_dim is {cfg.max_state_dim}"
            )

    def _check_config(self, cfg) -> None:
        """Family-specific refusals (raise ``ValueError`` naming the field)."""

    # ------------------------------------------------------------------ parameter groups
    def _backbone_module(self) -> nn.Module:
        """The VLM (frozen by ``train_expert_only``)."""
        raise NotImplementedError

    def _expert_modules(self) -> list[nn.Module]:
        """The action expert and its projections (what ``train_expert_only`` trains)."""
        raise NotImplementedError

    def expert_parameters(self) -> Iterator[nn.Parameter]:
        """The expert's parameters except its (unused) ``lm_head``, which is never part of the velocity."""
        seen: set[int] = set()
        for module in self._expert_modules():
            for name, p in module.named_parameters():
                if "lm_head" in name.split(".") or id(p) in seen:
                    continue
                seen.add(id(p))
                yield p

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Everything else of the base policy: the VLM, unused heads and (smolvla) the state projection."""
        expert = {id(p) for p in self.expert_parameters()}
        return (p for p in self.policy.parameters() if id(p) not in expert)

    def _backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone_parameters())

    # ------------------------------------------------------------------ the interface
    def encode(self, batch: dict[str, Tensor]) -> Prefix:
        """Run the prefix once (images, language [, state]) and keep its KV cache.

        With a frozen backbone (``train_expert_only``) the prefix runs without autograd and in eval
        mode, like LeRobot's own ``train_expert_only`` keeps the VLM in eval: the cache then carries no
        graph and the gradient-checkpointing flag of pi0 / pi05 cannot switch the cache off.
        """
        frozen = self._backbone_frozen()
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and not frozen),
            eval_mode(self._backbone_module(), enabled=frozen),
        ):
            context, features = self._encode(batch)
        if context.past_key_values is None:
            raise RuntimeError(
                f"{self.policy.config.type}: the prefix forward returned no KV cache (a trainable VLM with "
                "gradient checkpointing in train mode disables it); keep train_expert_only=true or disable "
                "gradient_checkpointing in the base config"
            )
        return Prefix(features=features, context=context)

    def velocity(self, prefix: Prefix, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        """LeRobot's ``denoise_step`` at ``(x, tau)``; the hidden is what ``action_out_proj`` reads."""
        with capture_input(self.policy.model.action_out_proj, {}) as box:
            v = self._denoise(prefix.context, x, tau)
        return v, box["input"]

    def _encode(self, batch: dict[str, Tensor]) -> tuple[VLAContext, Tensor]:
        raise NotImplementedError

    def _denoise(self, context: VLAContext, x: Tensor, tau: Tensor) -> Tensor:
        raise NotImplementedError
