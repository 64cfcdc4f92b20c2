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
    """Normalise inputs with the dataset statistics, unnormalise the predicted actions.

    Standard deviations below ``config.normalization_std_floor`` are raised to it (see the config).
    """
    return make_default_pre_post_processors(
        config, floor_std(dataset_stats, config.normalization_std_floor), normalizer_device=config.device
    )


def floor_std(
    stats: dict[str, dict[str, torch.Tensor]] | None, floor: float
) -> dict[str, dict[str, torch.Tensor]] | None:
    """A copy of ``stats`` whose ``std`` entries are at least ``floor``."""
    if stats is None or floor <= 0:
        return stats
    out = {}
    for key, entry in stats.items():
        entry = dict(entry)
        if "std" in entry:
            entry["std"] = torch.clamp(torch.as_tensor(entry["std"], dtype=torch.float32), min=floor)
        out[key] = entry
    return out
