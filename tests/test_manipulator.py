"""The actor on LeRobot's ``gym_manipulator`` stack: LeRobot's own env processors and step
function, human interventions flagged in ``complementary_info`` and kept out of the policy gradient.

The env is a toy that speaks gym_hil's protocol (``agent_pos`` observations; ``is_intervention`` and
``teleop_action`` in ``info`` when the "human" took over a step, whose action it then executed); it
runs through LeRobot's real gym_hil processor pipelines (``make_processors`` with ``name="gym_hil"``).
"""

from __future__ import annotations

import threading
import time
from queue import Empty

import gymnasium as gym
import numpy as np
import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import HILSerlProcessorConfig, HILSerlRobotEnvConfig, ResetConfig
from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.transport.utils import state_to_bytes
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_pirl import transition_keys as keys
from lerobot_pirl.actor import PiRLActor
from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm
from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLActorConfig, PiRLConfig
from lerobot_pirl.runtime.config import resolve_pi_rl_config
from lerobot_pirl.runtime.manipulator import ManipulatorChunkStepper
from lerobot_pirl.runtime.transitions import decode_transitions
from tests.helpers import tiny_flow_mlp_config

EXPERT_ACTION = np.array([0.5, -0.5], dtype=np.float32)


class ToyHILReach(gym.Env):
    """2-D reach with a scripted "human" who takes over the steps in ``intervene_at`` (per episode)."""

    def __init__(self, intervene_at=(3, 4), goal_after: int | None = None):
        self.observation_space = gym.spaces.Dict(
            {"agent_pos": gym.spaces.Box(-10, 10, shape=(4,), dtype=np.float32)}
        )
        self.action_space = gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32)
        self.intervene_at = set(intervene_at)
        self.goal_after = goal_after  # the episode succeeds (terminates) at this step
        self.t = 0
        self.executed: list[np.ndarray] = []

    def _obs(self):
        return {"agent_pos": np.array([self.t, 0.0, 1.0, 1.0], dtype=np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        human = self.t in self.intervene_at
        ran = EXPERT_ACTION if human else np.asarray(action, dtype=np.float32).reshape(-1)
        self.executed.append(ran.copy())
        self.t += 1
        info = {"is_intervention": human}
        if human:
            info["teleop_action"] = EXPERT_ACTION.copy()
        success = self.goal_after is not None and self.t >= self.goal_after
        info["is_success"] = success
        return self._obs(), float(success), success, False, info


def _env_cfg(control_time_s: float = 2.0) -> HILSerlRobotEnvConfig:
    return HILSerlRobotEnvConfig(
        name="gym_hil",
        task="ToyHILReach",
        fps=10,
        processor=HILSerlProcessorConfig(reset=ResetConfig(control_time_s=control_time_s)),
    )


def test_stepper_runs_lerobot_pipeline_and_reports_the_human_actions():
    env = ToyHILReach(intervene_at=(3, 4), goal_after=8)
    stepper = ManipulatorChunkStepper(_env_cfg(), env=env)
    obs = stepper.reset()
    assert obs[OBS_STATE].shape == (1, 4)  # LeRobot features with a batch dim (env processor output)
    policy_actions = np.full((1, 5, 2), 0.1, dtype=np.float32)

    first = stepper.step_chunk(policy_actions)
    assert first.steps[0] == 5 and first.intervention_steps[0] == 2
    np.testing.assert_allclose(first.executed_actions[0, 3:5], np.stack([EXPERT_ACTION] * 2))
    np.testing.assert_allclose(first.executed_actions[0, :3], policy_actions[0, :3])
    np.testing.assert_allclose(np.stack(env.executed), first.executed_actions[0])  # what really ran
    assert not first.terminated[0] and not first.success[0]

    second = stepper.step_chunk(policy_actions)  # the goal is reached at step 8: the chunk stops there
    assert second.steps[0] == 3 and second.terminated[0] and second.success[0]
    assert second.rewards[0] == pytest.approx(1.0)
    # LeRobot's gym_hil action processor replays the human's last action on the step after the
    # intervention ends; that step ran a human action, so the chunk counts as intervened too.
    np.testing.assert_allclose(second.executed_actions[0, 0], EXPERT_ACTION)
    np.testing.assert_allclose(np.stack(env.executed[5:8]), second.executed_actions[0, :3])
    assert second.intervention_steps[0] == 1
    assert stepper.reset_done(second)[OBS_STATE][0, 0] == 0  # a new episode

    # LeRobot's time limit (control_time_s * fps = 20 steps) truncates an episode that never ends.
    stepper.env.goal_after = None
    stepper.reset()
    results = [stepper.step_chunk(policy_actions) for _ in range(4)]
    assert results[-1].truncated[0] and not results[-1].terminated[0]
    with pytest.raises(ValueError, match="one env"):
        stepper.step_chunk(np.zeros((2, 5, 2), dtype=np.float32))


def _actor_cfg(tmp_path) -> TrainRLServerPipelineConfig:
    base = tiny_flow_mlp_config(chunk_size=6, n_action_steps=3, state_dim=4, action_dim=2)
    base.input_features = {OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(4,))}
    base.output_features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(2,))}
    policy = PiRLConfig(
        device="cpu",
        base=base,
        push_to_hub=False,
        sampler=FlowSamplerConfig(action_chunk=3),
        actor=PiRLActorConfig(chunks_per_version=0, eval_every=1, stats_period_s=0.05, task="reach"),
    )
    algo = PiRLAlgorithmConfig(rollout_size=8, minibatch_size=8)
    cfg = TrainRLServerPipelineConfig(policy=policy, algorithm=algo, env=_env_cfg(), output_dir=tmp_path)
    return resolve_pi_rl_config(cfg)


def test_actor_flags_intervened_chunks_and_the_learner_gives_them_no_credit(tmp_path, monkeypatch):
    import lerobot.rl.gym_manipulator as gym_manipulator

    cfg = _actor_cfg(tmp_path)
    # LeRobot's make_robot_env would open gym_hil's viewer or a real robot: hand it the toy instead.
    monkeypatch.setattr(gym_manipulator, "make_robot_env", lambda env_cfg: (ToyHILReach((4,), None), None))
    shutdown = threading.Event()
    actor = PiRLActor(cfg, shutdown)
    learner_side = PiRLAlgorithm(actor.policy, cfg.algorithm)
    actor.parameters_queue.put(state_to_bytes(learner_side.get_weights()))
    thread = threading.Thread(target=actor.run, daemon=True)
    thread.start()
    transitions = []
    deadline = time.time() + 90
    pushed_v1 = False
    while len(transitions) < 20 and time.time() < deadline:
        try:
            transitions += decode_transitions(actor.transitions_queue.get(timeout=1.0))
        except Empty:
            continue
        if len(transitions) >= 2 and not pushed_v1:  # new weights arrive in the middle of an episode
            learner_side.policy_version = 1
            actor.parameters_queue.put(state_to_bytes(learner_side.get_weights()))
            pushed_v1 = True
    shutdown.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(transitions) >= 20

    # A robot changes weights only between episodes: one policy version per episode, and v1 is used.
    versions: dict[int, set[int]] = {}
    for t in transitions:
        info = t["complementary_info"]
        versions.setdefault(int(info[keys.EPISODE_ID]), set()).add(int(info[keys.POLICY_VERSION]))
    assert all(len(v) == 1 for v in versions.values()), versions
    assert versions[0] == {0} and {1} in versions.values()

    flags = [bool(t["complementary_info"][keys.INTERVENTION]) for t in transitions]
    # Chunks of 3 steps from t=0: the human's step 4 falls in the second chunk of each 20-step episode.
    assert flags[:3] == [False, True, False]
    intervened = transitions[1]
    np.testing.assert_allclose(intervened["action"][1].numpy(), EXPERT_ACTION)  # the action that ran
    assert intervened["state"][OBS_STATE].shape == (1, 4)
    assert intervened["state"][keys.TASK] == ["reach"]

    # The learner: intervened chunks keep their rewards (critic) but get zero advantage (policy).
    algo = PiRLAlgorithm(actor.policy, cfg.algorithm)
    buffer = RolloutBuffer(algo.transition_spec())
    assert buffer.add(transitions) == len(transitions)
    batch, _ = buffer.take(version=1, max_lag=1)
    rollout = algo.prepare_rollout(batch)
    assert torch.equal(batch.intervention, torch.tensor(flags))
    assert (rollout.advantages[batch.intervention] == 0).all()
    kept = rollout.advantages[~batch.intervention]
    assert float(kept.mean()) == pytest.approx(0.0, abs=1e-5)  # normalised without the intervened chunks
    assert float(kept.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    assert algo.rollout_stats(rollout, batch, 0)["intervention_fraction"] == pytest.approx(np.mean(flags))
