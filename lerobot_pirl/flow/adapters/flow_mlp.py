"""Adapter of the built-in ``flow_mlp`` policy."""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix, register_adapter


@register_adapter("flow_mlp")
class FlowMLPAdapter(FlowAdapter):
    """``encode`` = the observation encoder; ``velocity`` = the MLP velocity field (its token features
    are the hidden the heads read). The "expert" is the velocity network, the "backbone" the encoder."""

    @property
    def chunk_size(self) -> int:
        return self.policy.config.chunk_size

    @property
    def action_dim(self) -> int:
        return self.policy.model.action_dim

    @property
    def real_action_dim(self) -> int:
        return self.policy.model.action_dim

    @property
    def hidden_dim(self) -> int:
        return self.policy.config.token_dim

    @property
    def prefix_dim(self) -> int:
        return self.policy.config.obs_dim

    @property
    def n_action_steps(self) -> int:
        return self.policy.config.n_action_steps

    def encode(self, batch: dict[str, Tensor]) -> Prefix:
        z = self.policy.model.encode(batch)
        return Prefix(features=z, context=z)

    def velocity(self, prefix: Prefix, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        return self.policy.model.velocity(prefix.context, x, tau)

    def expert_parameters(self) -> Iterator[nn.Parameter]:
        model = self.policy.model
        for module in (model.trunk, model.to_tokens, model.token_out):
            yield from module.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        expert = {id(p) for p in self.expert_parameters()}
        return (p for p in self.policy.parameters() if id(p) not in expert)
