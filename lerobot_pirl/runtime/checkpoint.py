"""LeRobot-format checkpoints of a πRL run, written atomically, and their resume."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from lerobot.common.train_utils import get_step_checkpoint_dir, load_training_state, save_checkpoint
from lerobot.optim.optimizers import save_optimizer_state
from lerobot.utils.constants import (
    ALGORITHM_DIR,
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT_LINK,
    PRETRAINED_MODEL_DIR,
    TRAINING_STATE_DIR,
    TRAINING_STEP,
)
from lerobot.utils.io_utils import load_json, write_json
from safetensors.torch import load_file

logger = logging.getLogger(__name__)


OFFLINE_DIR = "offline"  # a hybrid run's human corrections (the demos come back from the dataset)


def last_checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / LAST_CHECKPOINT_LINK


def save_run_checkpoint(
    cfg,
    step: int,
    interaction_step: int,
    policy,
    algorithm,
    preprocessor,
    postprocessor,
    extra=None,
    full_state: tuple[dict, dict[str, dict]] | None = None,
) -> Path:
    """Write ``checkpoints/<step>/`` (``pretrained_model/``, ``training_state/``, ``algorithm/``, and one
    folder per ``extra`` entry: name -> function writing into a folder, e.g. the offline corrections).
    ``full_state``: the policy's and each optimiser's whole state gathered from sharded processes (FSDP),
    written in the one-process layout instead of the live objects' sharded state.

    Everything is written into a hidden temporary folder that is renamed into place, then the ``last``
    link is swapped atomically, so a crash mid-write never leaves ``last`` pointing at a partial
    checkpoint.
    """
    final = get_step_checkpoint_dir(Path(cfg.output_dir), cfg.policy.online_steps, step)
    tmp = staging_dir(final)
    model_state, optimizer_states = full_state if full_state is not None else (None, None)
    save_checkpoint(
        checkpoint_dir=tmp,
        step=step,
        cfg=cfg,
        policy=policy,
        optimizer=algorithm.get_optimizers() if optimizer_states is None else None,
        scheduler=None,
        preprocessor=preprocessor,
        postprocessor=postprocessor,
        model_state_dict=model_state,
    )
    for name, state in (optimizer_states or {}).items():  # LeRobot's layout of a dict of optimisers
        folder = tmp / TRAINING_STATE_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        save_optimizer_state(None, folder, optim_state_dict=state)
    algorithm.save_pretrained(tmp / ALGORITHM_DIR)
    for name, write in (extra or {}).items():
        write(tmp / name)
    write_json({"step": step, "interaction_step": interaction_step}, tmp / TRAINING_STATE_DIR / TRAINING_STEP)
    publish_checkpoint(tmp, final)
    logger.info("[LEARNER] checkpoint written to %s", final)
    return final


def staging_dir(final: Path) -> Path:
    """The hidden folder a checkpoint for ``final`` is written into (emptied first) before
    :func:`publish_checkpoint` moves it into place."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def publish_checkpoint(tmp: Path, final: Path) -> None:
    """Move a completely written checkpoint folder ``tmp`` to ``final`` and point the ``last`` link beside
    it at it, each step an atomic rename: ``last`` never points at a partial checkpoint."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    link_tmp = final.parent / f".{LAST_CHECKPOINT_LINK}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, final.parent / LAST_CHECKPOINT_LINK)


def restore_training_state(checkpoint_dir: Path, algorithm) -> tuple[int, int]:
    """Restore optimisers, RNG, step, interaction step and the algorithm state (policy version).

    Unlike a silent fallback to a fresh start, any missing piece raises: a resumed run must continue
    from what was saved.
    """
    step, _, _ = load_training_state(checkpoint_dir, algorithm.get_optimizers(), None)
    algorithm.load_state_dict(load_file(str(checkpoint_dir / ALGORITHM_DIR / SAFETENSORS_SINGLE_FILE)))
    interaction_step = int(
        load_json(checkpoint_dir / TRAINING_STATE_DIR / TRAINING_STEP).get("interaction_step", 0)
    )
    algorithm.optimization_step = step
    return step, interaction_step


def pretrained_dir(checkpoint_dir: Path) -> Path:
    return checkpoint_dir / PRETRAINED_MODEL_DIR
