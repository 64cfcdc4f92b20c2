"""Chunk stepping on vector envs: every env step belongs to exactly one chunk transition, inside one
episode, whether the envs are stepped one by one (SyncVectorEnv) or in lock-step in subprocesses
(AsyncVectorEnv, with SAME_STEP or NEXT_STEP auto-reset, as LeRobot builds them)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from lerobot_pirl.runtime.vector import ChunkStepper

HORIZON = 5


class Counter(gym.Env):
    """Episodes of varying length (3, 7, 4, 9, ... shifted per env); the observation is (episode, step in
    episode, env steps so far), the reward 1 per step, success on an episode's last step."""

    observation_space = gym.spaces.Dict({"agent_pos": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, shift: int = 0):
        self.lengths = [3, 7, 4, 9, 2, 6]
        self.shift, self.episode, self.t, self.total = shift, -1, 0, 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"agent_pos": np.array([self.episode, self.t, self.total], dtype=np.float64)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        ended = self.t >= self.lengths[(self.episode + self.shift) % len(self.lengths)]
        return self._obs(), 1.0, ended, False, {"is_success": ended}


def _vector(kind: str, n: int) -> gym.vector.VectorEnv:
    fns = [lambda i=i: Counter(shift=i) for i in range(n)]
    if kind == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    mode = {"async_same_step": "SAME_STEP", "async_next_step": "NEXT_STEP"}[kind]
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode[mode], context="fork")


@pytest.mark.parametrize("limit", [None, 5])
@pytest.mark.parametrize("kind", ["sync", "async_same_step", "async_next_step"])
def test_no_env_step_is_lost_or_attributed_to_the_wrong_episode(kind, limit):
    """With ``limit``, episodes longer than 5 steps are truncated there (as lerobot-eval ends LIBERO's)."""
    n = 3
    stepper = ChunkStepper(_vector(kind, n), max_episode_steps=limit)
    obs = stepper.reset()
    steps_taken = np.zeros(n, dtype=int)
    episodes_ended = np.zeros(n, dtype=int)
    for _ in range(40):
        before = obs["agent_pos"]
        result = stepper.step_chunk(np.zeros((n, HORIZON, 1), dtype=np.float32))
        after = result.next_obs["agent_pos"]
        ended = result.terminated | result.truncated
        # The whole chunk ran inside the episode it started in, from where that episode stood.
        np.testing.assert_array_equal(after[:, 0], before[:, 0])
        np.testing.assert_array_equal(after[:, 1], before[:, 1] + result.steps)
        np.testing.assert_array_equal(result.rewards, result.steps)
        assert (result.steps >= 1).all() and (result.steps <= HORIZON).all()
        np.testing.assert_array_equal(result.success, result.terminated)  # the last step's success stays
        if limit is not None:
            assert (after[:, 1] <= limit).all()
            np.testing.assert_array_equal(
                result.truncated, ended & (after[:, 1] == limit) & ~result.terminated
            )
        steps_taken += result.steps
        episodes_ended += ended
        obs = stepper.reset_done(result)
        now = obs["agent_pos"]
        # An ended env starts its next episode at its first step; the others go on where they stood.
        np.testing.assert_array_equal(now[:, 0], after[:, 0] + ended)
        np.testing.assert_array_equal(now[:, 1], np.where(ended, 0, after[:, 1]))
        # Every step the envs really took is in a transition.
        np.testing.assert_array_equal(now[:, 2], steps_taken)
    assert (episodes_ended >= 3).all()
    stepper.close()


def test_lock_step_chunks_end_together_at_the_first_episode_end():
    stepper = ChunkStepper(_vector("async_same_step", 2))
    stepper.reset()
    result = stepper.step_chunk(np.zeros((2, HORIZON, 1), dtype=np.float32))
    # Env 0's first episode lasts 3 steps: both envs' chunks stop there; env 1's episode goes on.
    assert result.steps.tolist() == [3, 3] and result.terminated.tolist() == [True, False]
    stepper.close()
