"""Per-env episode bookkeeping on the actor: the ids every transition carries and the statistics of
each finished episode."""

from __future__ import annotations

import numpy as np
import torch

from lerobot_pirl.runtime.vector import ChunkResult


class EpisodeTracker:
    """Counters of ``n`` env streams: episode id, chunk index (over the whole stream), chunk index within
    the episode, and the running return / length / intervened steps of the current episodes."""

    def __init__(self, n: int):
        self.episode_ids = torch.zeros(n, dtype=torch.long)
        self.chunk_indices = torch.zeros(n, dtype=torch.long)
        self.episode_chunks = torch.zeros(n, dtype=torch.long)
        self._return = np.zeros(n)
        self._length = np.zeros(n, dtype=int)
        self._intervened = np.zeros(n, dtype=int)

    def ids(self) -> dict[str, torch.Tensor]:
        """The stream position of the chunk about to be recorded (keyword arguments of
        :func:`~lerobot_pirl.runtime.transitions.chunk_transitions`)."""
        return {
            "episode_ids": self.episode_ids.clone(),
            "chunk_indices": self.chunk_indices.clone(),
            "episode_chunks": self.episode_chunks.clone(),
        }

    def record(
        self, result: ChunkResult, intervened: np.ndarray, tasks: list[str] | None = None
    ) -> list[dict]:
        """Count an executed chunk; returns the statistics of the episodes it ended (and starts new ones),
        each with its env's task name when ``tasks`` (one per env) is given."""
        self.chunk_indices += 1
        self.episode_chunks += 1
        self._return += result.rewards
        self._length += result.steps
        self._intervened += intervened.astype(int)
        finished = []
        for i in np.flatnonzero(result.terminated | result.truncated):
            finished.append(
                {
                    "return": float(self._return[i]),
                    "success": float(result.episode_success[i]),
                    "length": int(self._length[i]),
                    "intervention_rate": float(self._intervened[i]) / max(int(self._length[i]), 1),
                    **({"task": tasks[i]} if tasks else {}),
                }
            )
            self._return[i], self._length[i], self._intervened[i] = 0.0, 0, 0
            self.episode_ids[i] += 1
            self.episode_chunks[i] = 0
        return finished
