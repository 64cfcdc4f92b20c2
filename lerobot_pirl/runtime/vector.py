"""Stepping vector envs one action chunk at a time without mixing episodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class ChunkResult:
    next_obs: dict[
        str, np.ndarray
    ]  # per env: the observation after its last executed step (final if it ended)
    last_obs: dict[str, np.ndarray]  # what the envs show now (after an auto-reset, if any)
    rewards: np.ndarray  # [N] summed over the env's executed steps
    steps: np.ndarray  # [N] env steps executed inside the episode
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    success: np.ndarray  # [N] bool: solved inside this chunk
    episode_success: np.ndarray  # [N] bool: solved at any time in the episode so far
    intervention_steps: np.ndarray | None = None  # [N] steps a human teleoperated (gym_manipulator)
    executed_actions: np.ndarray | None = (
        None  # [N, H, A] what really ran, when it can differ from the policy's
    )


def _stack(obs_list: list[dict]) -> dict[str, np.ndarray]:
    return {
        k: (_stack([o[k] for o in obs_list]) if isinstance(v, dict) else np.stack([o[k] for o in obs_list]))
        for k, v in obs_list[0].items()
    }


def _unstack(obs: dict, n: int) -> list[dict]:
    out: list[dict] = [{} for _ in range(n)]
    for k, v in obs.items():
        parts = _unstack(v, n) if isinstance(v, dict) else list(v)
        for i in range(n):
            out[i][k] = parts[i]
    return out


class ChunkStepper:
    """Executes ``[N, H, A]`` action chunks on ``N`` envs so that every env step belongs to exactly one
    chunk transition, inside one episode.

    Per-env mode (a gymnasium ``SyncVectorEnv``: ``pirl_metaworld``, LeRobot's envs built in-process): the
    sub-envs are stepped one by one; an env whose episode ends at step ``h < H`` is not stepped again in
    this chunk and is reset after it.

    Lock-step mode (any other vector env, e.g. an ``AsyncVectorEnv`` stepping its envs in subprocesses):
    all envs step together, so when one env's episode ends at step ``h`` the chunk ends there for every
    env (the others' transitions cover ``h + 1`` steps and their episodes go on). The ended envs then start
    their next episode before the next chunk: the vector env has already reset them (``SAME_STEP``
    auto-reset, the final observation in ``info["final_obs"]``) or they are reset with a reset mask
    (``NEXT_STEP`` / ``DISABLED``). No step runs in a new episode with an action sampled in the old one.

    ``max_episode_steps`` truncates episodes that the envs do not end themselves, as ``lerobot-eval`` does
    with a LeRobot env's ``_max_episode_steps`` (LeRobot's LIBERO envs never truncate on their own).
    """

    def __init__(
        self,
        vec: gym.vector.VectorEnv,
        max_episode_steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ):
        self.vec = vec
        self.on_step = on_step  # called with an env's index after each step it takes (e.g. to render it)
        self.num_envs = vec.num_envs
        self.exact = isinstance(vec, gym.vector.SyncVectorEnv)
        self.max_episode_steps = max_episode_steps
        self._obs: list[dict] = []
        self._episode_success = np.zeros(self.num_envs, dtype=bool)
        self._t = np.zeros(self.num_envs, dtype=int)  # env steps into the current episodes
        self._pending_reset: np.ndarray | None = None  # lock-step: ended envs still to reset

    def reset(self, seed: int | list[int] | None = None) -> dict[str, np.ndarray]:
        self._episode_success[:] = False
        self._t[:] = 0
        self._pending_reset = None
        if not self.exact:
            obs, _ = self.vec.reset(seed=seed)
            return obs
        seeds = (
            seed
            if isinstance(seed, list)
            else [None if seed is None else seed + i for i in range(self.num_envs)]
        )
        self._obs = [env.reset(seed=s)[0] for env, s in zip(self.vec.envs, seeds, strict=True)]
        return _stack(self._obs)

    def step_chunk(self, actions: np.ndarray) -> ChunkResult:
        result = self._step_per_env(actions) if self.exact else self._step_lockstep(actions)
        self._episode_success |= result.success
        result.episode_success = self._episode_success.copy()
        return result

    def _step_per_env(self, actions: np.ndarray) -> ChunkResult:
        n, horizon = actions.shape[:2]
        rewards, steps = np.zeros(n), np.zeros(n, dtype=int)
        terminated, truncated, success = (np.zeros(n, dtype=bool) for _ in range(3))
        for i, env in enumerate(self.vec.envs):
            for h in range(horizon):
                obs, r, term, trunc, info = env.step(actions[i, h])
                if self.on_step is not None:
                    self.on_step(i)
                self._obs[i] = obs
                self._t[i] += 1
                rewards[i] += float(r)
                steps[i] += 1
                success[i] |= bool(info.get("is_success", False))
                trunc = bool(trunc) or self._at_limit()[i]
                if term or trunc:
                    terminated[i], truncated[i] = bool(term), trunc and not term
                    break
        obs = _stack(self._obs)
        return ChunkResult(obs, obs, rewards, steps, terminated, truncated, success, success.copy())

    def _step_lockstep(self, actions: np.ndarray) -> ChunkResult:
        n, horizon = actions.shape[:2]
        rewards, steps = np.zeros(n), np.zeros(n, dtype=int)
        terminated, truncated, success = (np.zeros(n, dtype=bool) for _ in range(3))
        for h in range(horizon):
            obs, r, term, trunc, info = self.vec.step(actions[:, h])
            if self.on_step is not None:
                for i in range(n):
                    self.on_step(i)
            self._t += 1
            term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
            env_ended = term | trunc
            at_limit = self._at_limit() & ~env_ended  # ends the episode here; the env did not
            rewards += np.asarray(r, dtype=np.float64)
            steps += 1
            success |= _success_flags(info, env_ended, n)
            terminated |= term
            truncated |= (trunc | at_limit) & ~term
            if env_ended.any() or at_limit.any() or h == horizon - 1:
                break
        final, now, reset_by_vector = _final_and_current(obs, info, env_ended, n)
        pending = (env_ended & ~reset_by_vector) | at_limit
        self._pending_reset = pending if pending.any() else None
        return ChunkResult(final, now, rewards, steps, terminated, truncated, success, success.copy())

    def reset_done(self, result: ChunkResult) -> dict[str, np.ndarray]:
        """The observations the next chunk starts from (ended envs start a new episode)."""
        ended = result.terminated | result.truncated
        self._episode_success[ended] = False
        self._t[ended] = 0
        if not self.exact:
            if self._pending_reset is None:
                return result.last_obs
            obs, _ = self.vec.reset(options={"reset_mask": self._pending_reset})
            self._pending_reset = None
            return obs
        for i in np.flatnonzero(ended):
            self._obs[i] = self.vec.envs[i].reset()[0]
        return _stack(self._obs)

    def call(self, name: str) -> tuple:
        """An attribute (or method result) of every sub-env, in env order (gymnasium's ``VectorEnv.call``)."""
        return tuple(self.vec.call(name))

    def set_attr(self, name: str, values: list) -> None:
        """Set attribute ``name`` of sub-env ``i`` to ``values[i]`` (gymnasium's ``VectorEnv.set_attr``)."""
        self.vec.set_attr(name, list(values))

    def _at_limit(self) -> np.ndarray:
        if self.max_episode_steps is None:
            return np.zeros(self.num_envs, dtype=bool)
        return self._t >= self.max_episode_steps

    def close(self) -> None:
        self.vec.close()


def episode_step_limit(vec) -> int | None:
    """The ``_max_episode_steps`` of a vector env's sub-envs (what ``lerobot-eval`` ends episodes at), or
    ``None`` when they do not say."""
    try:
        limit = vec.call("_max_episode_steps")[0]
    except (AttributeError, NotImplementedError):
        return None
    return int(limit) if isinstance(limit, int | np.integer) and limit > 0 else None


def _success_flags(info: dict, ended: np.ndarray, n: int) -> np.ndarray:
    """``is_success`` of each env at this step; an env the vector env reset in the same step reports it
    in ``info["final_info"]``."""
    flags = np.asarray(info.get("is_success", np.zeros(n)), dtype=bool).reshape(n)
    final_info = info.get("final_info")
    if isinstance(final_info, dict) and "is_success" in final_info:
        final = np.asarray(final_info["is_success"], dtype=bool).reshape(n)
        flags = np.where(ended, final, flags)
    return flags


def _final_and_current(obs: dict, info: dict, ended: np.ndarray, n: int) -> tuple[dict, dict, np.ndarray]:
    """After a lock-step chunk: per env the observation after its last step, what the envs show now, and
    which envs the vector env has already reset. A ``SAME_STEP`` vector env resets the envs that ended in
    the step itself and puts their final observations in ``info["final_obs"]``; otherwise the ended envs
    still show their final observation."""
    if not ended.any() or "final_obs" not in info:
        return obs, obs, np.zeros(n, dtype=bool)
    per_env = _unstack(obs, n)
    for i in np.flatnonzero(ended):
        per_env[i] = info["final_obs"][i]
    return _stack(per_env), obs, ended.copy()
