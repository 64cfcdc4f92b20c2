"""Pre/post-processing of ``flow_mlp``: LeRobot's standard normalise / batch / device pipeline."""

from __future__ import annotations

from typing import Any

import torch
from lerobot.processor import PolicyAction, PolicyProcessorPipeline, make_default_pre_post_processors

from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig


def make_flow_mlp_pre_post_processors(
    config: FlowMLPConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Normalise inputs with the dataset statistics, unnormalise the predicted actions."""
    return make_default_pre_post_processors(config, dataset_stats, normalizer_device=config.device)
