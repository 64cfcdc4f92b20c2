"""Sharing a multi-task actor's envs among its tasks by how often each task fails.

At the start a mix's envs are split by the env config (evenly, or ``envs_per_task``). With
``policy.actor.rebalance_envs_every`` set, the actor re-splits them every that many policy versions from its own
training episodes since the last split: every task keeps one env, the others go to the tasks in proportion to
their failure rate, so that envs move from the tasks the policy has learnt to the ones it has not. An env
changes task only when its episode ends (it plays the new task from its next reset), so no episode is cut and
no transition mixes two tasks.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def allocate_envs(failure_rates: list[float], total: int) -> list[int]:
    """``total`` envs over tasks with these failure rates: one each, the rest in proportion to the rates
    (largest remainders, ties to the earlier task); an even split when no task fails."""
    k = len(failure_rates)
    if k == 0 or total < k:
        raise ValueError(f"allocate_envs: {total} envs cannot give each of {k} tasks one")
    rates = np.clip(np.asarray(failure_rates, dtype=float), 0.0, 1.0)
    if rates.sum() == 0:
        rates = np.ones(k)
    shares = (total - k) * rates / rates.sum()
    counts = np.floor(shares).astype(int)
    for i in sorted(range(k), key=lambda i: (counts[i] - shares[i], i))[: total - k - counts.sum()]:
        counts[i] += 1
    return [int(c) + 1 for c in counts]


def failure_rates(episodes: list[dict], tasks: list[str]) -> list[float]:
    """Each task's failure rate over the episodes that name it, smoothed as ``(failures + 1) / (episodes + 2)``
    so that a task with few (or no) episodes since the last split counts as half failing, not as solved."""
    runs, fails = Counter(), Counter()
    for ep in episodes:
        task = ep.get("task")
        runs[task] += 1
        fails[task] += float(ep.get("success", 0.0)) < 1.0
    return [(fails[t] + 1) / (runs[t] + 2) for t in tasks]


def reassign(current: list[str], tasks: list[str], counts: list[int]) -> list[str | None]:
    """Per env, the task it moves to (``None``: it keeps its own) so that task ``j`` ends up with ``counts[j]``
    envs, moving as few envs as possible: envs keep their task, in env order, while it has room; the rest
    take the tasks still short of their count, in task order."""
    if len(counts) != len(tasks) or sum(counts) != len(current):
        raise ValueError(f"reassign: counts {counts} of {len(tasks)} tasks do not split {len(current)} envs")
    room = dict(zip(tasks, counts, strict=True))
    plan: list[str | None] = []
    for task in current:
        keeps = room.get(task, 0) > 0
        room[task] = room.get(task, 0) - keeps
        plan.append(None if keeps else "")
    short = [t for t in tasks for _ in range(max(room[t], 0))]
    return [p if p is None else short.pop(0) for p in plan]


class EnvRebalancer:
    """The actor's side of re-splitting its envs: collects the training episodes' outcomes per task and, when a
    split is due, says which env moves to which task (:meth:`split`); :meth:`counts` is the split aimed at."""

    def __init__(self, env_tasks: list[str], every: int):
        if every < 1:
            raise ValueError(f"actor.rebalance_envs_every must be >= 1 to re-split envs, got {every}")
        self.tasks = list(dict.fromkeys(env_tasks))  # in the envs' order: the mix's order for block splits
        if len(self.tasks) < 2:
            raise ValueError(
                "actor.rebalance_envs_every: the envs play one task, so there is nothing to re-split "
                "(set it for a multi-task env such as pirl_metaworld_mt)"
            )
        self.every = every
        self.targets = list(env_tasks)
        self._episodes: list[dict] = []
        self._last_version: int | None = None  # of the last split (at first: the first version seen)

    def record(self, episodes: list[dict]) -> None:
        """Finished training episodes (each with its ``task`` and ``success``)."""
        self._episodes += [ep for ep in episodes if ep.get("task") in self.tasks]

    def due(self, version: int) -> bool:
        """Whether ``every`` versions have passed since the last split, counted from the first version this
        actor played (a resumed run starts from the env config's split and re-splits ``every`` versions on)
        and again from any version below the last split's (a learner resumed from an earlier checkpoint)."""
        if self._last_version is None or version < self._last_version:
            self._last_version = version
        return version - self._last_version >= self.every

    def split(self, version: int) -> list[str | None]:
        """Which env moves to which task (``None``: stays) after the episodes since the last split; the
        episodes are then forgotten, so each split reads the policy as it is now."""
        rates = failure_rates(self._episodes, self.tasks)
        counts = allocate_envs(rates, len(self.targets))
        plan = reassign(self.targets, self.tasks, counts)
        self.targets = [t if p is None else p for t, p in zip(self.targets, plan, strict=True)]
        self._episodes, self._last_version = [], version
        return plan

    def counts(self) -> dict[str, int]:
        """Envs per task of the latest split (an env moves when its episode ends)."""
        counted = Counter(self.targets)
        return {t: counted[t] for t in self.tasks}
