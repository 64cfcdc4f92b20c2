"""Interaction messages (episode statistics, evaluation results) between actor and learner.

LeRobot pickles these messages and its learner unpickles whatever arrives. πRL actors send JSON
instead (same gRPC message), and the learner only ever parses JSON, so a learner that listens beyond
loopback does not execute code sent by a peer.
"""

from __future__ import annotations

import json
import logging
import math

from lerobot_pirl.runtime.timing import valid_actor_times

logger = logging.getLogger(__name__)


def encode_interaction(message: dict) -> bytes:
    return json.dumps(message).encode("utf-8")


def _task_name_ok(name) -> bool:
    """A task name a peer may make the learner log under (``episode_success/<task>``, ``envs/<task>``)."""
    return isinstance(name, str) and 0 < len(name) <= 100


# Fields the learner reads from an interaction message, with the check each must pass when present.
_FIELD_CHECKS = {
    "env_steps": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**9,
    "actor_id": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "policy_version": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "episodes": lambda v: isinstance(v, list),
    "env_steps_per_s": lambda v: isinstance(v, int | float) and math.isfinite(v) and v >= 0,
    "eval_success_rate": lambda v: isinstance(v, int | float) and 0.0 <= v <= 1.0,
    "eval_episodes": lambda v: isinstance(v, int) and v > 0,
    "eval_videos": lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v),
    "time_s": valid_actor_times,
    "env_counts": lambda v: (
        isinstance(v, dict)
        and len(v) <= 100
        and all(_task_name_ok(k) for k in v)
        and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**6 for n in v.values())
    ),
}


def decode_interaction(payload: bytes) -> dict | None:
    """The message as a dict, or ``None`` (logged) when it is not a JSON object or a field the learner
    reads has the wrong type or range (a peer's message must never raise in the learner)."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        logger.warning("[LEARNER] ignored a non-JSON interaction message (%d bytes)", len(payload))
        return None
    if not isinstance(message, dict):
        logger.warning("[LEARNER] ignored an interaction message that is not an object")
        return None
    bad = [k for k, ok in _FIELD_CHECKS.items() if k in message and not ok(message[k])]
    if bad:
        logger.warning("[LEARNER] ignored an interaction message with invalid %s", ", ".join(bad))
        return None
    return message


class EpisodeLog:
    """Episodes finished since the last summary (return, success, length, human intervention rate)."""

    def __init__(self):
        self._episodes: list[dict] = []
        self.total = 0

    def add(self, episodes: list[dict]) -> None:
        for ep in episodes:
            if isinstance(ep, dict) and all(
                isinstance(ep.get(k), int | float) for k in ("return", "success", "length")
            ):
                self._episodes.append(ep)
                self.total += 1

    def summary(self) -> dict[str, float]:
        eps, self._episodes = self._episodes, []
        if not eps:
            return {"episodes": 0.0}
        n = len(eps)
        out = {
            "episodes": float(n),
            "episodes_total": float(self.total),
            "episode_return": sum(e["return"] for e in eps) / n,
            "episode_success": sum(float(e["success"]) for e in eps) / n,
            "episode_length": sum(e["length"] for e in eps) / n,
        }
        rates = [
            float(e["intervention_rate"]) for e in eps if isinstance(e.get("intervention_rate"), int | float)
        ]
        if rates:
            out["episode_intervention_rate"] = sum(rates) / len(rates)
        return {**out, **per_task_success(eps)}


def per_task_success(episodes: list[dict], max_tasks: int = 100) -> dict[str, float]:
    """``episode_success/<task>`` over the episodes that name their task (a multi-task env's), for at most
    ``max_tasks`` task names (a peer cannot grow the record without bound)."""
    by_task: dict[str, list[float]] = {}
    for ep in episodes:
        task = ep.get("task")
        if _task_name_ok(task) and (task in by_task or len(by_task) < max_tasks):
            by_task.setdefault(task, []).append(float(ep["success"]))
    return {f"episode_success/{t}": sum(v) / len(v) for t, v in sorted(by_task.items())}


def env_count_record(
    per_actor: dict[int, tuple[dict[str, int], float]], since: float, max_tasks: int = 100
) -> dict[str, float]:
    """``envs/<task>``: the envs each task gets in the latest split of every actor that re-splits its envs and
    reported at or after time ``since`` (an actor that stopped no longer counts), for at most ``max_tasks``
    task names."""
    total: dict[str, float] = {}
    for counts, at in per_actor.values():
        if at < since:
            continue
        for task, n in counts.items():
            if f"envs/{task}" in total or len(total) < max_tasks:
                total[f"envs/{task}"] = total.get(f"envs/{task}", 0.0) + float(n)
    return dict(sorted(total.items()))
