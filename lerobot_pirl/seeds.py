"""Episode seed ranges and the held-out evaluation protocol, defined once for the whole package.

Every MetaWorld episode is played from an explicit seed (its goal and object positions), and each use of
episodes has its own disjoint range:

- ``TRAINING``: the actors' RL training episodes;
- ``DEMOS``: scripted-expert demonstrations for SFT (``lerobot-pirl-collect``);
- ``DEVELOPMENT``: free for experiments while writing code;
- ``VALIDATION``: choosing setups and recipes (demo counts, noise-head size, sum vs mean);
- ``HELD_OUT``: the published tables, and nothing else (``lerobot-pirl-eval``'s default).

``EVAL_PROTOCOL`` is how every held-out number is measured: the benchmark's SFT and final evaluations,
the actor's in-training evaluations and ``lerobot-pirl-eval`` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeedRange:
    """Episode seeds ``start, start + 1, ...`` below ``stop`` (``None``: no upper end)."""

    name: str
    start: int
    stop: int | None

    def __contains__(self, seed: int) -> bool:
        return self.start <= seed and (self.stop is None or seed < self.stop)


TRAINING = SeedRange("training", 0, 500_000)
DEMOS = SeedRange("demos", 500_000, 1_000_000)
DEVELOPMENT = SeedRange("development", 1_000_000, 2_000_000)
VALIDATION = SeedRange("validation", 2_000_000, 3_000_000)
HELD_OUT = SeedRange("held-out", 3_000_000, None)
RANGES = (TRAINING, DEMOS, DEVELOPMENT, VALIDATION, HELD_OUT)


def range_of(seed: int) -> SeedRange:
    """The range a seed falls in."""
    for r in RANGES:
        if seed in r:
            return r
    raise ValueError(f"seed {seed} is negative: episode seeds start at 0")


@dataclass(frozen=True)
class EvalProtocol:
    """How a policy is evaluated for a reported success rate (deterministic ODE sampling)."""

    # First episode seed; episode j plays seed first_seed + j.
    first_seed: int = HELD_OUT.start
    # Episodes per evaluation.
    episodes: int = 50
    # Env steps per episode before truncation (the MetaWorld benchmark's).
    episode_length: int = 150
    # Envs stepped as one batch: with the ODE's initial noise drawn per batch from a generator seeded
    # with first_seed, the batch size is part of the protocol.
    num_envs: int = 10


EVAL_PROTOCOL = EvalProtocol()
