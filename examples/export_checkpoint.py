"""Export a πRL checkpoint as a plain checkpoint of its base policy, then load it the vanilla way.

    python examples/export_checkpoint.py outputs/demo/button-press-v3/flow_sde/rl/checkpoints/last/pretrained_model exported/

The export is a ``flow_mlp`` (or ``pi0``, ``pi05``, ``smolvla``) checkpoint with the trained number of
denoising steps and executed-chunk length, plus its processors: LeRobot's own ``get_policy_class`` /
``make_pre_post_processors`` (and ``lerobot-eval --policy.path=exported/``) load it without knowing
about πRL. ``lerobot-pirl-export`` is the same thing as a command (``--repo_id`` also pushes it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors

from lerobot_pirl.export import export_checkpoint


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a pi_rl pretrained_model directory")
    p.add_argument("out", help="where to write the plain base-policy checkpoint")
    args = p.parse_args(argv)

    out = export_checkpoint(args.checkpoint, args.out)

    # Vanilla LeRobot loading: the config names the base type, the factory finds its class.
    config = PreTrainedConfig.from_pretrained(out)
    policy = get_policy_class(config.type).from_pretrained(out)
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=str(out))
    observation = {key: torch.zeros(feature.shape) for key, feature in policy.config.input_features.items()}
    with torch.no_grad():
        action = postprocessor(policy.select_action(preprocessor(observation)))
    print(
        f"exported a {config.type} checkpoint to {out}: {config.num_inference_steps} denoising steps, "
        f"first action {action.squeeze(0).tolist()}"
    )
    return out


if __name__ == "__main__":
    main()
