"""Offline data for hybrid πRL: demo chunks and human corrections, trained with the base policy's own
flow-matching loss next to every PPO minibatch.

- :func:`offline_loss_weight` is the weight schedule (constant, or linear / cosine decay), a pure function.
- :class:`OfflineBuffer` holds the two sources: the demo dataset (a ``LeRobotDataset`` read with the base
  policy's action-chunk delta timestamps, so each item is an observation and the chunk of actions that
  followed it) and the chunks a human corrected (the raw observation and the actions that really ran,
  padded to the base's chunk length with ``action_is_pad``). It samples uniformly over both, and saves and
  restores the corrections (the demos come back from the dataset).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path

import torch
from lerobot.utils.constants import ACTION
from safetensors.torch import save_file
from torch import Tensor

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import OFFLINE_SCHEDULES
from lerobot_pirl.checks import check_choice
from lerobot_pirl.transition_keys import TASK

ACTION_IS_PAD = "action_is_pad"
CORRECTIONS_FILE = "corrections.safetensors"


def offline_loss_weight(start: float, final: float, schedule: str, decay_updates: int, update: int) -> float:
    """The offline loss weight at ``update`` (0-based): ``start`` throughout for "constant"; for "linear"
    and "cosine", from ``start`` at update 0 to ``final`` at ``decay_updates``, then ``final``."""
    check_choice("offline_loss_schedule", schedule, OFFLINE_SCHEDULES)
    if schedule == "constant":
        return start
    progress = min(max(update, 0) / max(decay_updates, 1), 1.0)
    if schedule == "linear":
        return start + (final - start) * progress
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def feature_mismatch(dataset_features: Mapping, policy_features: Mapping) -> str | None:
    """Why a dataset cannot train a policy (a policy feature it lacks or has with another shape), or None.
    Images may be stored channels-last; their shape is compared as a set of sizes."""
    for key, ft in policy_features.items():
        if key not in dataset_features:
            return f"the dataset has no {key!r} (the policy reads {sorted(policy_features)})"
        want, got = tuple(ft.shape), tuple(dataset_features[key]["shape"])
        if want != got and sorted(want) != sorted(got):
            return f"{key!r} has shape {got} in the dataset, the policy expects {want}"
    return None


class OfflineBuffer:
    """Demo chunks (from a dataset) and human-corrected chunks, sampled uniformly as one pool.

    Decoded demo items are kept in memory up to ``cache_bytes`` (reading a LeRobotDataset item costs
    milliseconds, every minibatch draws dozens): a few-shot dataset ends up wholly in memory, a large one
    is read from disk beyond the budget."""

    def __init__(self, chunk_size: int, capacity: int, demos=None, cache_bytes: int = 2 << 30):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.chunk_size = chunk_size
        self.capacity = capacity
        self.demos = demos  # a torch Dataset whose items carry ACTION [chunk, D] and ACTION_IS_PAD
        self.corrections: deque[dict] = deque(maxlen=capacity or None)
        self.added = Counter()  # corrections received in total (also those the capacity pushed out)
        self.cache_bytes = cache_bytes
        self._cache: dict[int, dict] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return self.num_demos + len(self.corrections)

    @property
    def num_demos(self) -> int:
        return len(self.demos) if self.demos is not None else 0

    def counts(self) -> dict[str, float]:
        """Per-source sizes for the logs."""
        return {
            "offline_demo_chunks": float(self.num_demos),
            "offline_correction_chunks": float(len(self.corrections)),
            "offline_corrections_received": float(self.added["corrections"]),
        }

    def add_correction(self, state: Mapping, actions: Tensor, steps: int | None = None) -> None:
        """A chunk a human corrected: its raw observation (batch dim 1, as transitions carry it) and the
        ``[H, D]`` actions that ran, of which the first ``steps`` were executed (all when None)."""
        if self.capacity == 0:
            return
        actions = torch.as_tensor(actions, dtype=torch.float32).reshape(-1, actions.shape[-1])
        ran = actions.shape[0] if steps is None else max(0, min(int(steps), actions.shape[0]))
        if ran == 0:
            return
        ran = min(ran, self.chunk_size)
        chunk = torch.zeros(self.chunk_size, actions.shape[-1])
        chunk[:ran] = actions[:ran]
        item = {k: _squeeze_batch(v) for k, v in state.items()}
        item[ACTION] = chunk
        item[ACTION_IS_PAD] = torch.arange(self.chunk_size) >= ran
        self.corrections.append(item)
        self.added["corrections"] += 1

    def sample(self, n: int, generator: torch.Generator) -> dict | None:
        """``n`` items drawn uniformly from demos and corrections together, collated (raw: the policy's
        preprocessor normalises them), or None when the buffer is empty."""
        total = len(self)
        if total == 0 or n < 1:
            return None
        idx = torch.randint(total, (n,), generator=generator).tolist()
        items = [self._demo(i) if i < self.num_demos else self.corrections[i - self.num_demos] for i in idx]
        return _collate(items)

    def _demo(self, i: int) -> dict:
        """Demo item ``i``, from memory when it was read before and fit the cache budget."""
        item = self._cache.get(i)
        if item is None:
            item = self.demos[i]
            size = sum(v.numel() * v.element_size() for v in item.values() if isinstance(v, Tensor))
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[i] = item
                self._cached_bytes += size
        return item

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write the corrections to ``directory`` (part of a checkpoint written atomically)."""
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {}
        tasks = []
        for j, item in enumerate(self.corrections):
            for k, v in item.items():
                if k == TASK:
                    continue
                tensors[f"{j}/{k}"] = torch.as_tensor(v).contiguous()
            tasks.append(_task_of(item))
        meta = {"count": str(len(self.corrections)), "received": str(self.added["corrections"])}
        meta.update({f"task/{j}": t for j, t in enumerate(tasks) if t is not None})
        save_file(tensors, str(directory / CORRECTIONS_FILE), metadata=meta)

    def load(self, directory: Path) -> None:
        """Restore the corrections saved by :meth:`save` (a missing file raises: a resume must continue
        from what was saved)."""
        path = directory / CORRECTIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"resume: {path} is missing (the checkpoint's offline corrections)")
        from safetensors import safe_open

        items: dict[str, dict] = {}
        with safe_open(str(path), "pt") as f:  # one read: the metadata and every tensor
            meta = f.metadata() or {}
            for name in f.keys():  # noqa: SIM118  (safe_open is not a Mapping)
                j, key = name.split("/", 1)
                items.setdefault(j, {})[key] = f.get_tensor(name)
        self.corrections.clear()
        for j in range(int(meta.get("count", 0))):
            item = items.get(str(j), {})
            if f"task/{j}" in meta:
                item[TASK] = meta[f"task/{j}"]
            self.corrections.append(item)
        self.added["corrections"] = int(meta.get("received", len(self.corrections)))


def _squeeze_batch(value):
    """A transition's observation entry without its batch dim of 1 (task lists become their string)."""
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    value = torch.as_tensor(value)
    return value[0] if value.ndim > 0 and value.shape[0] == 1 else value


def _task_of(item: Mapping) -> str | None:
    task = item.get(TASK)
    return None if task is None else str(task)


def _collate(items: list[Mapping]) -> dict:
    """Stack tensors key by key; strings (the task) become a list. Keys all items share only."""
    keys = set(items[0]).intersection(*map(set, items[1:]))
    out: dict = {}
    for key in keys:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            out[key] = list(values)
        else:
            out[key] = torch.stack([torch.as_tensor(v) for v in values])
    return out
