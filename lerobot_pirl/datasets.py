"""Writing local LeRobotDatasets (demos) without the Hub."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from lerobot.datasets import LeRobotDataset
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_STATE


def state_action_features(state_dim: int, action_dim: int, extra_state_names: Sequence[str] = ()) -> dict:
    """LeRobotDataset features of a state-only dataset: ``observation.state`` (``state_dim`` dims named
    ``s<i>``, then one dim per ``extra_state_names``, e.g. a task one-hot) and ``action``."""
    names = [f"s{i}" for i in range(state_dim)] + list(extra_state_names)
    return {
        OBS_STATE: {"dtype": "float32", "shape": (len(names),), "names": names},
        ACTION: {"dtype": "float32", "shape": (action_dim,), "names": [f"a{i}" for i in range(action_dim)]},
    }


def image_feature(size: int) -> dict:
    """LeRobotDataset feature of one square RGB camera image, ``observation.image`` (stored as images)."""
    return {OBS_IMAGE: {"dtype": "image", "shape": (size, size, 3), "names": ["height", "width", "channels"]}}


def _frame_value(value) -> np.ndarray:
    """A frame's array as the dataset stores it: images stay uint8, the rest becomes float32."""
    value = np.asarray(value)
    return value if value.dtype == np.uint8 else value.astype(np.float32)


def write_dataset(
    root: str | Path,
    repo_id: str,
    fps: int,
    features: dict,
    episodes: Iterable[list[dict[str, np.ndarray]]],
    task: str | Sequence[str],
) -> LeRobotDataset:
    """Write ``episodes`` (each a list of frames: feature name -> array) as a local LeRobotDataset, with
    one task string for every episode or (a sequence) one per episode."""
    dataset = LeRobotDataset.create(repo_id=repo_id, fps=fps, features=features, root=root, use_videos=False)
    episodes = list(episodes)
    tasks = [task] * len(episodes) if isinstance(task, str) else list(task)
    if len(tasks) != len(episodes):
        raise ValueError(f"task: {len(tasks)} task strings for {len(episodes)} episodes")
    for frames, episode_task in zip(episodes, tasks, strict=True):
        for frame in frames:
            dataset.add_frame({**{k: _frame_value(v) for k, v in frame.items()}, "task": episode_task})
        dataset.save_episode()
    dataset.finalize()
    return dataset
