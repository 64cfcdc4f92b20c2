"""Checkpoints of a SAC baseline run (:mod:`lerobot_pirl.bench.sac`), so that a run longer than one sitting
continues where it stopped.

A checkpoint is LeRobot's layout (``checkpoints/<env steps>/`` with ``pretrained_model/`` for the policy and
its processors, ``training_state/`` for the optimisers, RNG and step, ``algorithm/`` for SAC's critics,
targets and temperature; ``last`` links to the newest), plus what LeRobot's learner keeps elsewhere or not
at all: the online replay buffer and the loop's counters. It is written into a hidden folder that is
renamed into place before ``last`` is swapped (:func:`lerobot_pirl.runtime.checkpoint.publish_checkpoint`),
and only the newest one is kept (the buffer makes each about 35 MB). A fresh (not resumed) run deletes them.

The buffer is saved as its tensors, oldest transition first, not with LeRobot's ``to_lerobot_dataset``:
that rebuilds episodes from consecutive entries, and with several envs consecutive entries come from
different envs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from lerobot.common.train_utils import get_step_checkpoint_dir, save_training_state
from lerobot.utils.constants import (
    ALGORITHM_DIR,
    OBS_STATE,
    PRETRAINED_MODEL_DIR,
    TRAINING_STATE_DIR,
    TRAINING_STEP,
)
from lerobot.utils.io_utils import load_json, write_json
from safetensors.torch import load_file, load_model, save_file

from lerobot_pirl.runtime.checkpoint import (
    last_checkpoint_dir,
    publish_checkpoint,
    restore_training_state,
    staging_dir,
)

BUFFER_FILE = "online_buffer.safetensors"
RUN_STATE = "sac_run.json"  # the loop's counters: env steps, owed training steps, time, seed offset


def buffer_transitions(buffer) -> dict[str, torch.Tensor]:
    """The transitions of LeRobot's ``ReplayBuffer``, oldest first (empty for an empty buffer)."""
    n = len(buffer)
    if n == 0:
        return {}
    order = torch.arange(n) if n < buffer.capacity else (torch.arange(n) + buffer.position) % n
    return {
        "state": buffer.states[OBS_STATE][order],
        "next_state": buffer.next_states[OBS_STATE][order],
        "action": buffer.actions[order],
        "reward": buffer.rewards[order],
        "done": buffer.dones[order],
        "truncated": buffer.truncateds[order],
    }


def refill_buffer(buffer, transitions: dict[str, torch.Tensor]) -> None:
    """Add ``transitions`` (as :func:`buffer_transitions` returns them) to an empty buffer, in order."""
    if len(buffer):
        raise ValueError("refill_buffer: the buffer must be empty")
    for i in range(len(transitions.get("reward", ()))):
        buffer.add(
            state={OBS_STATE: transitions["state"][i : i + 1]},
            action=transitions["action"][i : i + 1],
            reward=float(transitions["reward"][i]),
            next_state={OBS_STATE: transitions["next_state"][i : i + 1]},
            done=bool(transitions["done"][i]),
            truncated=bool(transitions["truncated"][i]),
        )


def save_sac_checkpoint(
    out: Path, total_steps: int, run_state: dict, policy, algorithm, processors, buffer
) -> Path:
    """Write ``out/checkpoints/<run_state["env_steps"]>/`` atomically, point ``last`` at it and delete the
    older ones; ``processors``: the policy's pre- and post-processor. Returns the checkpoint folder."""
    final = get_step_checkpoint_dir(out, total_steps, run_state["env_steps"])
    tmp = staging_dir(final)
    for part in (policy, *processors):
        part.save_pretrained(tmp / PRETRAINED_MODEL_DIR)
    save_training_state(tmp, run_state["updates"], algorithm.get_optimizers())
    write_json(
        {"step": run_state["updates"], "interaction_step": run_state["env_steps"]},
        tmp / TRAINING_STATE_DIR / TRAINING_STEP,
    )
    algorithm.save_pretrained(tmp / ALGORITHM_DIR)
    save_file({k: v.contiguous() for k, v in buffer_transitions(buffer).items()}, str(tmp / BUFFER_FILE))
    write_json(run_state, tmp / RUN_STATE)
    final.parent.mkdir(parents=True, exist_ok=True)
    publish_checkpoint(tmp, final)
    for old in final.parent.iterdir():  # older checkpoints, and staging folders a crash left behind
        if old.is_dir() and not old.is_symlink() and old.name != final.name:
            shutil.rmtree(old)
    return final


def load_sac_checkpoint(out: Path, policy, algorithm, buffer, settings: dict) -> dict:
    """Restore the last checkpoint under ``out`` into a freshly built run (the policy's weights in place,
    the optimisers, RNG, SAC's own tensors, the online buffer); returns its run state. ``settings``: the
    run's learning settings, which must be the checkpoint's (checked before anything is loaded)."""
    checkpoint = last_checkpoint_dir(out)
    if not checkpoint.exists():
        raise FileNotFoundError(f"no SAC checkpoint to resume from: {checkpoint} does not exist")
    run_state = load_json(checkpoint / RUN_STATE)
    saved = run_state.get("settings", {})
    changed = [
        f"{k}: checkpoint {v!r}, now {settings.get(k)!r}" for k, v in saved.items() if v != settings.get(k)
    ]
    if changed:
        raise ValueError(
            f"cannot resume the SAC run under {out} with other settings ({'; '.join(changed)}): "
            "pass the checkpoint's --sac_* values, or start afresh without --resume"
        )
    load_model(policy, str(checkpoint / PRETRAINED_MODEL_DIR / "model.safetensors"))
    updates, env_steps = restore_training_state(checkpoint, algorithm)
    refill_buffer(buffer, load_file(str(checkpoint / BUFFER_FILE)))
    if (run_state["updates"], run_state["env_steps"]) != (updates, env_steps):
        raise ValueError(f"{checkpoint}: {RUN_STATE} and {TRAINING_STATE_DIR}/{TRAINING_STEP} disagree")
    return run_state


def sac_resume_point(out: Path) -> tuple[int, float] | None:
    """Where a SAC run under ``out`` would continue: the training steps and the training wall time of its
    last checkpoint; None without one."""
    checkpoint = last_checkpoint_dir(out)
    if not (checkpoint / RUN_STATE).is_file():
        return None
    state = load_json(checkpoint / RUN_STATE)
    return int(state["updates"]), float(state["wall_s"])
