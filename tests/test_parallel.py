"""Env groups stepped in worker processes give the in-process chunk stepper's results, env for env."""

import gymnasium as gym
import numpy as np
import pytest

from lerobot_pirl.runtime.parallel import ParallelChunkStepper
from lerobot_pirl.runtime.vector import ChunkStepper, episode_step_limit

pytest.importorskip("metaworld")


def _trajectory(stepper, chunks: int, seed: int = 0) -> list[np.ndarray]:
    """Everything the actor reads from a stepper over ``chunks`` random chunks."""
    rng = np.random.default_rng(seed)
    out = [stepper.reset()["agent_pos"]]
    for _ in range(chunks):
        actions = rng.uniform(-1, 1, (stepper.num_envs, 5, 4)).astype(np.float32)
        r = stepper.step_chunk(actions)
        out += [r.next_obs["agent_pos"], r.rewards, r.steps, r.terminated, r.truncated, r.episode_success]
        out.append(stepper.reset_done(r)["agent_pos"])
    return out


def test_env_workers_give_the_in_process_transitions_exactly():
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    # Episodes of 12 steps end inside the third 5-step chunk: truncations, resets and new seeds are covered.
    def config(workers):
        return MetaWorldStateEnvConfig(
            task="reach-v3", num_envs=5, episode_length=12, reward_type="dense", env_workers=workers
        )

    vec = config(1).create_envs()["pirl_metaworld"][0]
    local = ChunkStepper(vec, episode_step_limit(vec))
    parallel = config(2).create_envs()["pirl_metaworld"][0]
    try:
        assert isinstance(parallel, ParallelChunkStepper) and parallel.sizes == [3, 2]
        assert parallel.call("task") == ("reach-v3",) * 5
        expected, got = _trajectory(local, 7), _trajectory(parallel, 7)
        assert any(x.dtype == bool and x.any() for x in expected)  # some episodes ended
        for a, b in zip(expected, got, strict=True):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="actions for 4 envs, expected 5"):
            parallel.step_chunk(np.zeros((4, 5, 4), np.float32))
    finally:
        local.close()
        parallel.close()
    assert all(not p.is_alive() for p in parallel._procs)


def _broken_group():
    raise RuntimeError("no simulator here")


def test_a_group_that_fails_to_build_names_itself():
    def good():
        return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")])

    with pytest.raises(RuntimeError, match=r"env group 1 failed(.|\n)*no simulator here"):
        ParallelChunkStepper([good, _broken_group])


def test_env_workers_is_validated():
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    with pytest.raises(ValueError, match="env_workers must be >= 1"):
        MetaWorldStateEnvConfig(task="reach-v3", num_envs=2, env_workers=0)
    with pytest.raises(ValueError, match="set one"):
        MetaWorldStateEnvConfig(task="reach-v3", num_envs=4, env_workers=2, use_async_envs=True)


def _cartpoles():
    """Two CartPoles whose observations are dicts, as the chunk stepper reads them."""

    class AsDict(gym.ObservationWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Dict({"agent_pos": env.observation_space})

        def observation(self, observation):
            return {"agent_pos": observation}

    return gym.vector.SyncVectorEnv([lambda: AsDict(gym.make("CartPole-v1"))] * 2)


def test_workers_outlive_a_process_group_sigterm_until_the_parent_closes_them():
    import os
    import signal
    import time

    stepper = ParallelChunkStepper([_cartpoles, _cartpoles])
    procs = list(stepper._procs)
    try:
        stepper.reset(seed=0)
        for proc in procs:  # as `kill -- -PGID` or a cluster's job stop would
            os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        result = stepper.step_chunk(np.zeros((4, 3), dtype=np.int64))  # the parent's last step still runs
        assert result.steps.tolist() == [3, 3, 3, 3]
        assert all(p.is_alive() for p in procs)
    finally:
        stepper.close()
    assert [p.exitcode for p in procs] == [0, 0]  # they left at close, not killed

    orphaned = ParallelChunkStepper([_cartpoles], term_grace_s=1)
    worker = orphaned._procs[0]
    try:
        os.kill(worker.pid, signal.SIGTERM)
        worker.join(timeout=15)  # never closed: it leaves after its grace period
        assert worker.exitcode == 128 + signal.SIGTERM
    finally:
        orphaned.close()
