"""Chunked rollouts on LeRobot's ``gym_manipulator`` env (real robots and the gym_hil simulator).

The env, its teleoperator and its two processor pipelines come from LeRobot itself
(``make_robot_env``, ``make_processors``) and every env step goes through LeRobot's
``step_env_and_process_transition``, exactly as ``lerobot.rl.actor`` steps it: the action processor
replaces the policy's action by the human's while the teleoperator intervenes, adds success /
termination events, and the env processor turns raw observations into LeRobot features (with a
batch dimension, on the policy's device).

A chunk executes up to ``H`` actions on the single env, paced at the env's ``fps`` like LeRobot's actor,
and yields one :class:`ChunkResult` whose ``intervention_steps`` counts the steps a human acted in, and
whose ``executed_actions`` are the actions the robot really ran. A step counts as intervened when the
processors flag it (``TeleopEvents.IS_INTERVENTION``) or when what ran differs from the policy's action:
LeRobot's gym_hil pipeline replays the human's last action on the step after an intervention ends.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from lerobot.processor import TransitionKey
from lerobot.teleoperators.utils import TeleopEvents
from lerobot.utils.robot_utils import precise_sleep

from lerobot_pirl.runtime.vector import ChunkResult

TELEOP_ACTION = "teleop_action"  # LeRobot's complementary-data key of the executed action


def _success(info: dict) -> bool:
    """Success as LeRobot's processors (``TeleopEvents.SUCCESS``) or the env (``is_success``) report it."""
    return bool(info.get(TeleopEvents.SUCCESS, False) or info.get("is_success", False))


class ManipulatorChunkStepper:
    """A one-env chunk stepper over LeRobot's ``gym_manipulator`` stack (same interface as
    :class:`~lerobot_pirl.runtime.vector.ChunkStepper`; observations are LeRobot feature dicts)."""

    num_envs = 1

    def __init__(self, env_cfg, device: str = "cpu", env=None, teleop_device=None):
        from lerobot.rl.gym_manipulator import make_processors, make_robot_env

        if env is None:
            env, teleop_device = make_robot_env(env_cfg)
        self.env = env
        self.teleop_device = teleop_device
        self.env_processor, self.action_processor = make_processors(env, teleop_device, env_cfg, device)
        self.period_s = 1.0 / env_cfg.fps if getattr(env_cfg, "fps", None) else 0.0
        self._transition: dict | None = None
        self._episode_success = False

    def _observation(self) -> dict[str, Any]:
        return dict(self._transition[TransitionKey.OBSERVATION])

    def reset(self, seed: int | list[int] | None = None) -> dict[str, Any]:
        from lerobot.rl.gym_manipulator import reset_and_build_transition

        # No seed: LeRobot's reset takes none, and resetting a robot twice to seed it would move it twice.
        self._transition = reset_and_build_transition(self.env, self.env_processor, self.action_processor)
        self._episode_success = False
        return self._observation()

    def step_chunk(self, actions: np.ndarray) -> ChunkResult:
        """Execute ``actions[0, :H]`` (env action space, unnormalised) until the episode ends."""
        from lerobot.rl.gym_manipulator import step_env_and_process_transition

        if actions.shape[0] != 1:
            raise ValueError(f"gym_manipulator runs one env; got actions for {actions.shape[0]}")
        horizon = actions.shape[1]
        executed = torch.as_tensor(actions[0], dtype=torch.float32).clone()
        reward, steps, interventions = 0.0, 0, 0
        terminated = truncated = success = False
        for h in range(horizon):
            started = time.perf_counter()
            action = torch.as_tensor(actions[0, h : h + 1], dtype=torch.float32)  # [1, A], as LeRobot's actor
            self._transition = step_env_and_process_transition(
                env=self.env,
                transition=self._transition,
                action=action,
                env_processor=self.env_processor,
                action_processor=self.action_processor,
            )
            tr = self._transition
            info = tr.get(TransitionKey.INFO) or {}
            ran = (tr.get(TransitionKey.COMPLEMENTARY_DATA) or {}).get(TELEOP_ACTION)
            if ran is not None:
                ran = torch.as_tensor(ran).detach().float().cpu().reshape(-1)
                if ran.numel() != executed.shape[1]:
                    raise ValueError(
                        f"env: the executed (teleop) action has {ran.numel()} dims, the policy's has "
                        f"{executed.shape[1]}; check processor.gripper.use_gripper against the policy"
                    )
                executed[h] = ran
            human = bool(info.get(TeleopEvents.IS_INTERVENTION, False))
            interventions += human or not torch.allclose(executed[h], action[0], atol=1e-6)
            reward += float(tr.get(TransitionKey.REWARD) or 0.0)
            steps += 1
            success |= _success(info)
            terminated = bool(tr.get(TransitionKey.DONE, False))
            truncated = bool(tr.get(TransitionKey.TRUNCATED, False)) and not terminated
            if self.period_s:
                precise_sleep(max(self.period_s - (time.perf_counter() - started), 0.0))
            if terminated or truncated:
                break
        self._episode_success |= success
        obs = self._observation()
        return ChunkResult(
            next_obs=obs,
            last_obs=obs,
            rewards=np.array([reward]),
            steps=np.array([steps]),
            terminated=np.array([terminated]),
            truncated=np.array([truncated]),
            success=np.array([success]),
            episode_success=np.array([self._episode_success]),
            intervention_steps=np.array([interventions]),
            executed_actions=executed[None].numpy(),
        )

    def reset_done(self, result: ChunkResult) -> dict[str, Any]:
        if bool(result.terminated[0] or result.truncated[0]):
            return self.reset()
        return self._observation()

    def close(self) -> None:
        self.env.close()
        if self.teleop_device is not None and hasattr(self.teleop_device, "disconnect"):
            self.teleop_device.disconnect()
