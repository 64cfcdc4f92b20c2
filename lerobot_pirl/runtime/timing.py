"""Where an actor's and a learner's wall time goes: seconds per named phase, taken as a running tally.

The actor sends its tally with every statistics message; the learner adds the tallies of all actors to
its own and logs them with each update (``time_*`` keys of the metric glossary), so a run's metrics say
whether env stepping, sampling, transport, the update or waiting bounds its env steps per second.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import contextmanager

# The actor's phases: chunk sampling (pre-processing, the stochastic chain, post-processing), env stepping
# (the chunk and the resets after it), building and queueing transitions, waiting for the learner's next
# weights (and loading them), held-out evaluation.
ACTOR_PHASES = ("sample", "env", "send", "wait", "eval")
# The learner's phases: decoding the actors' messages, waiting for a full rollout, taking and preparing it
# (values, advantages), the PPO epochs, publishing the weights, writing checkpoints.
LEARNER_PHASES = ("receive", "rollout_wait", "prepare", "optimise", "publish", "checkpoint")


class PhaseClock:
    """Seconds spent in each phase since the last :meth:`take`."""

    def __init__(self, phases: tuple[str, ...]):
        self.phases = phases
        self._seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str):
        if name not in self.phases:
            raise KeyError(f"unknown phase {name!r}; expected one of {self.phases}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        if name not in self.phases:
            raise KeyError(f"unknown phase {name!r}; expected one of {self.phases}")
        self._seconds[name] += seconds

    def take(self) -> dict[str, float]:
        """The tally since the last call, every phase present (0 when unused); starts a new tally."""
        out = {name: round(self._seconds.get(name, 0.0), 4) for name in self.phases}
        self._seconds.clear()
        return out


def valid_actor_times(value) -> bool:
    """An actor's tally as the learner accepts it: known phases, finite non-negative seconds."""
    return (
        isinstance(value, dict)
        and set(value) <= set(ACTOR_PHASES)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 1e7
            for v in value.values()
        )
    )


def time_record(actor_s: dict[str, float], learner_s: dict[str, float]) -> dict[str, float]:
    """The ``time_*`` fields of an update record: each phase's seconds since the previous update (actor
    phases summed over actors) and, for the actors, each phase's share of their tallied time."""
    record = {f"time_actor_{k}_s": round(actor_s.get(k, 0.0), 3) for k in ACTOR_PHASES}
    total = sum(actor_s.get(k, 0.0) for k in ACTOR_PHASES)
    for k in ACTOR_PHASES:
        record[f"time_actor_{k}_frac"] = actor_s.get(k, 0.0) / total if total > 0 else float("nan")
    record.update({f"time_learner_{k}_s": round(learner_s.get(k, 0.0), 3) for k in LEARNER_PHASES})
    return record
