"""Results on the Hugging Face Hub: what a push uploads, and pushing without ever stalling or killing training.

A push of a πRL checkpoint uploads one folder to ``policy.repo_id``:

- at the root, the exported base policy (a plain checkpoint of its own type with its processors: what
  ``lerobot-eval --policy.path=<repo>`` and ``make_policy`` load);
- ``pi_rl/``, the ``pi_rl`` checkpoint itself (to resume or continue πRL from);
- ``README.md``, a model card (base model, dataset, env and task, method, final evaluation, env steps);
- ``training_curves.png`` when the run drew one.

The learner hands each push to a :class:`HubPusher` thread: uploads are retried with back-off, failures are
logged, and training goes on either way. ``lerobot-pirl-export --repo_id`` uploads through the same
:func:`push_folder`.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Where the pi_rl checkpoint goes in a pushed repo (the root holds the exported base policy).
PI_RL_SUBFOLDER = "pi_rl"
# Upload attempts per push and the first back-off (doubled each time).
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_S = 2.0


def check_hub_access(push: bool, repo_id: str | None) -> None:
    """At start-up, not after hours of training: a push needs a Hugging Face token."""
    if not push or not repo_id:
        return
    from huggingface_hub import get_token

    if not get_token():
        raise ValueError(
            f"policy.repo_id={repo_id}: pushing to the Hub needs a token (`hf auth login`, or HF_TOKEN); "
            "or pass --policy.push_to_hub=false"
        )


def push_folder(
    folder: Path,
    repo_id: str,
    private: bool | None = None,
    message: str = "Upload with lerobot-pirl",
    attempts: int = PUSH_ATTEMPTS,
    backoff_s: float = PUSH_BACKOFF_S,
) -> bool:
    """Create ``repo_id`` if needed and upload ``folder`` to it, retrying with back-off; False (logged) when
    every attempt failed."""
    from huggingface_hub import HfApi

    api = HfApi()
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message)
            logger.info("[HUB] pushed %s to %s (%s)", folder.name, repo_id, getattr(info, "oid", ""))
            return True
        except Exception as e:  # network, auth, server errors: retried, then given up on
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if attempt == attempts:
                logger.error("[HUB] could not push to %s after %d attempts: %s", repo_id, attempts, first)
                return False
            wait = backoff_s * 2 ** (attempt - 1)
            logger.warning("[HUB] push to %s failed (%s); retrying in %.0fs", repo_id, first, wait)
            time.sleep(wait)
    return False


def model_card(cfg, evaluation: dict | None, env_steps: int, has_plot: bool) -> str:
    """The model card of a pushed πRL run, in LeRobot's conventions (robotics / lerobot tags, base model,
    dataset), with the run's method, task and final evaluation."""
    from huggingface_hub import ModelCard, ModelCardData

    policy = cfg.policy
    base_type = (policy.base or {}).get("type", "flow policy")
    base_path = policy.base_policy_path
    hub_base = base_path if base_path and not Path(base_path).expanduser().exists() else None
    dataset = getattr(getattr(cfg, "dataset", None), "repo_id", None)
    sampler = policy.sampler
    task = getattr(cfg.env, "task", None) if cfg.env is not None else None
    data = ModelCardData(
        license=policy.license or "apache-2.0",
        library_name="lerobot",
        pipeline_tag="robotics",
        tags=sorted(
            {*(policy.tags or []), "robotics", "lerobot", "pi_rl", "reinforcement-learning", base_type}
        ),
        base_model=hub_base,
        datasets=dataset,
    )
    if evaluation is not None:
        low, high = evaluation.get("eval_ci95_low"), evaluation.get("eval_ci95_high")
        interval = f" (95 % interval {low:.2f}-{high:.2f})" if low is not None and high is not None else ""
        result = (
            f"Held-out success of the deterministic policy at policy version {evaluation.get('policy_version')}: "
            f"**{evaluation['eval_success_rate']:.2f}**{interval} over {evaluation.get('eval_episodes')} episodes."
        )
    else:
        result = "No held-out evaluation was logged during this run (`policy.actor.eval_every` was 0)."
    recipe = json.dumps(
        {"sampler": {"noise_method": sampler.noise_method, "num_denoise_steps": sampler.num_denoise_steps}},
    )
    lines = [
        f"# {policy.repo_id}",
        "",
        f"A `{base_type}` policy fine-tuned with online reinforcement learning (πRL: PPO on the flow policy's "
        f"stochastic denoising chain, {sampler.noise_method}) with lerobot-pirl in LeRobot's actor / learner "
        "runtime.",
        "",
        f"- Base policy: `{base_path or 'inline config'}`",
        f"- Environment: `{cfg.env.type if cfg.env is not None else '?'}`"
        + (f", task `{task}`" if task else ""),
        f"- Offline data: `{dataset}`" if dataset else "- Offline data: none (online only)",
        f"- Environment steps: {env_steps:,}",
        f"- Sampler: `{recipe}`",
        "",
        "## Results",
        "",
        result,
        *(["", "![training curves](training_curves.png)"] if has_plot else []),
        "",
        "## Use",
        "",
        "The repository root is a plain checkpoint of the base policy: `lerobot-eval --policy.path=<this repo>`",
        f"or `make_policy` load it. `{PI_RL_SUBFOLDER}/` is the πRL checkpoint (policy, heads, processors) to "
        "continue fine-tuning from.",
    ]
    return ModelCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines)
    ).content


def stage_release(checkpoint_dir: Path, out: Path, card: str, plot: Path | None = None) -> Path:
    """Lay out a push of ``checkpoint_dir`` (a run checkpoint) in ``out``: exported base at the root, the
    pi_rl checkpoint under ``pi_rl/``, the model card, the training curves."""
    from lerobot_pirl.export import export_checkpoint
    from lerobot_pirl.runtime.checkpoint import pretrained_dir

    export_checkpoint(pretrained_dir(checkpoint_dir), out)
    shutil.copytree(pretrained_dir(checkpoint_dir), out / PI_RL_SUBFOLDER)
    (out / "README.md").write_text(card)
    if plot is not None and plot.is_file():
        shutil.copy(plot, out / "training_curves.png")
    return out


class HubPusher:
    """Pushes run checkpoints from a background thread, one at a time, in order; never raises into training.
    ``card(checkpoint_dir)`` gives the model card text of a push."""

    def __init__(self, repo_id: str, private: bool | None, card, plot: Path | None = None):
        self.repo_id, self.private, self.card, self.plot = repo_id, private, card, plot
        self.pushed: list[Path] = []  # checkpoints whose push succeeded
        self.failed: list[Path] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="hub-pusher", daemon=True)
        self._thread.start()

    def submit(self, checkpoint_dir: Path) -> None:
        self._queue.put(Path(checkpoint_dir))

    def _work(self) -> None:
        while (checkpoint := self._queue.get()) is not None:
            try:
                with tempfile.TemporaryDirectory(prefix="pirl_push_") as tmp:
                    folder = stage_release(
                        checkpoint, Path(tmp) / checkpoint.name, self.card(checkpoint), self.plot
                    )
                    ok = push_folder(folder, self.repo_id, self.private, f"πRL checkpoint {checkpoint.name}")
            except Exception as e:  # staging failed (disk, export): logged, training goes on
                logger.error("[HUB] could not prepare the push of %s: %s", checkpoint, e)
                ok = False
            (self.pushed if ok else self.failed).append(checkpoint)

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued pushes (waiting up to ``timeout`` seconds), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("[HUB] pushes still running after %.0fs: not waiting for them", timeout or 0)
