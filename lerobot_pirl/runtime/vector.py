"""Stepping vector envs one action chunk at a time without mixing episodes."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np


@dataclass
class ChunkResult:
    next_obs: dict[
        str, np.ndarray
    ]  # per env: the observation after its last executed step (final obs if it ended)
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
    """Executes ``[N, H, A]`` action chunks on ``N`` envs.

    Exact mode (a gymnasium ``SyncVectorEnv``, e.g. ``pirl_metaworld``): the sub-envs are stepped one
    by one, an env whose episode ends at step ``h < H`` is not stepped again in this chunk and is reset
    after it, so every transition lies inside one episode and every episode starts at its reset state.

    Auto-reset mode (any other vector env with ``SAME_STEP`` auto-reset, e.g. LeRobot's benchmark
    envs in subprocesses): an ended env is reset by the vector env itself and the rest of the chunk's
    actions run in its new episode before that episode's first transition starts; those steps are not
    attributed to any transition.
    """

    def __init__(self, vec: gym.vector.VectorEnv):
        self.vec = vec
        self.num_envs = vec.num_envs
        self.exact = isinstance(vec, gym.vector.SyncVectorEnv)
        if not self.exact and vec.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("env: a non-Sync vector env must use SAME_STEP auto-reset")
        self._obs: list[dict] = []
        self._episode_success = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed: int | list[int] | None = None) -> dict[str, np.ndarray]:
        self._episode_success[:] = False
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
        n, horizon = actions.shape[:2]
        active = np.ones(n, dtype=bool)
        rewards, steps = np.zeros(n), np.zeros(n, dtype=int)
        terminated, truncated, success = (np.zeros(n, dtype=bool) for _ in range(3))
        if self.exact:
            for i, env in enumerate(self.vec.envs):
                for h in range(horizon):
                    obs, r, term, trunc, info = env.step(actions[i, h])
                    self._obs[i] = obs
                    rewards[i] += float(r)
                    steps[i] += 1
                    success[i] |= bool(info.get("is_success", False))
                    if term or trunc:
                        terminated[i], truncated[i] = bool(term), bool(trunc) and not term
                        break
            next_obs = last_obs = _stack(self._obs)
        else:
            next_list: list[dict] | None = None
            last_obs = None
            for h in range(horizon):
                if not active.any():
                    break
                obs, r, term, trunc, info = self.vec.step(actions[:, h])
                last_obs = obs
                per_env = _unstack(obs, n)
                ended = (np.asarray(term) | np.asarray(trunc)) & active
                for i in np.flatnonzero(ended):
                    per_env[i] = info["final_obs"][i]
                if next_list is None:
                    next_list = per_env
                else:
                    for i in np.flatnonzero(active):
                        next_list[i] = per_env[i]
                rewards += np.where(active, np.asarray(r, dtype=np.float64), 0.0)
                steps += active
                success |= np.asarray(info.get("is_success", np.zeros(n)), dtype=bool) & active
                terminated |= np.asarray(term, dtype=bool) & active
                truncated |= np.asarray(trunc, dtype=bool) & active & ~terminated
                active &= ~ended
            next_obs = _stack(next_list)
        self._episode_success |= success
        return ChunkResult(
            next_obs=next_obs,
            last_obs=last_obs,
            rewards=rewards,
            steps=steps,
            terminated=terminated,
            truncated=truncated,
            success=success,
            episode_success=self._episode_success.copy(),
        )

    def reset_done(self, result: ChunkResult) -> dict[str, np.ndarray]:
        """The observations the next chunk starts from (ended envs start a new episode)."""
        ended = result.terminated | result.truncated
        self._episode_success[ended] = False
        if not self.exact:
            return result.last_obs
        for i in np.flatnonzero(ended):
            self._obs[i] = self.vec.envs[i].reset()[0]
        return _stack(self._obs)

    def close(self) -> None:
        self.vec.close()
