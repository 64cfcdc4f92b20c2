"""Export the base policy of a ``pi_rl`` checkpoint as a plain checkpoint of its own type.

``lerobot-pirl-export --checkpoint outputs/.../checkpoints/last/pretrained_model --out exported/``
writes e.g. a ``flow_mlp`` (later ``pi0``) ``pretrained_model`` with its processors, which LeRobot's
``make_policy`` / ``lerobot-eval`` load like any other checkpoint of that type; ``--repo_id`` also
pushes it to the Hub.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def require_pretrained_dir(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path, or a clear error when it is not a ``pretrained_model`` directory."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(
            f"checkpoint: {checkpoint} is not a pretrained_model directory (no config.json)"
        )
    return checkpoint


def export_checkpoint(checkpoint: str | Path, out: str | Path, repo_id: str | None = None) -> Path:
    from lerobot.policies.factory import make_pre_post_processors

    import lerobot_pirl  # noqa: F401
    from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy

    checkpoint, out = require_pretrained_dir(checkpoint), Path(out)
    policy = PiRLPolicy.from_pretrained(checkpoint)
    policy.export_base(out)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    pre.save_pretrained(out)
    post.save_pretrained(out)
    if repo_id:
        from lerobot_pirl.hub import push_folder

        if not push_folder(out, repo_id, message=f"Export of {checkpoint}"):
            raise OSError(f"repo_id: could not push {out} to {repo_id} (see the log)")
    return out


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli

    p = argparse.ArgumentParser(description="Export the base policy of a pi_rl checkpoint")
    p.add_argument("--checkpoint", required=True, help="a pi_rl pretrained_model directory")
    p.add_argument("--out", required=True, help="where to write the plain base-policy checkpoint")
    p.add_argument("--repo_id", default=None, help="also push the exported policy to this Hub repo")
    args = p.parse_args(argv)

    def startup():
        require_pretrained_dir(args.checkpoint)
        from lerobot_pirl.hub import check_hub_access

        check_hub_access(bool(args.repo_id), args.repo_id)
        return lambda: print(export_checkpoint(args.checkpoint, args.out, args.repo_id))

    run_cli(startup)


if __name__ == "__main__":
    main()
