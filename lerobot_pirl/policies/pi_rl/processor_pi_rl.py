"""Pre/post-processing of ``pi_rl``: exactly the base policy's (same normalisation as its SFT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lerobot.policies.factory import make_pre_post_processors
from lerobot.processor import PolicyAction, PolicyProcessorPipeline, make_default_pre_post_processors
from lerobot.utils.constants import POLICY_PREPROCESSOR_DEFAULT_NAME

from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig


def make_pi_rl_pre_post_processors(
    config: PiRLConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Load the base checkpoint's processors when there are any; otherwise build LeRobot's default
    pipeline for the base config from ``dataset_stats`` (a fresh base model)."""
    path = config.base_policy_path
    local = path is not None and Path(path).is_dir()
    has_saved = local and (Path(path) / f"{POLICY_PREPROCESSOR_DEFAULT_NAME}.json").is_file()
    if path is not None and (has_saved or not local):
        if config.base is None:
            raise ValueError(
                "base: build the pi_rl policy (which loads its base config) before its processors"
            )
        return make_pre_post_processors(
            config.base_config(),
            pretrained_path=path,
            preprocessor_overrides={"device_processor": {"device": str(config.device)}},
        )
    if config.base is None:
        raise ValueError("base: pi_rl needs an inline base config or a base_policy_path with processors")
    stats = dataset_stats if dataset_stats is not None else config.dataset_stats
    return make_default_pre_post_processors(config.base_config(), stats, normalizer_device=config.device)
