"""From a vector env's observations to what a LeRobot policy reads, as LeRobot's own eval does it:
``preprocess_observation`` -> the env's task strings under ``"task"`` -> the env's processor pipeline.
(``gym_manipulator`` envs produce LeRobot features already: :class:`FeatureObservations` selects them.)

The result (the policy's input features plus ``"task"``) is what transitions carry; the policy's own
preprocessor (normalisation, tokenisation) then runs on it, on the actor and on the learner alike.
"""

from __future__ import annotations

from typing import Any

from lerobot.envs.factory import make_env_pre_post_processors
from lerobot.envs.utils import preprocess_observation

from lerobot_pirl.transition_keys import TASK


def env_tasks(vec) -> list[str]:
    """The task description of every sub-env (``task_description``, else ``task``, else "")."""
    for attr in ("task_description", "task"):
        try:
            return [str(t) for t in vec.call(attr)]
        except (AttributeError, NotImplementedError):
            continue
    return [""] * vec.num_envs


def env_task_names(vec) -> list[str] | None:
    """The task name (``task``) of every sub-env when the envs play more than one task, else ``None``."""
    try:
        names = [str(t) for t in vec.call("task")]
    except (AttributeError, NotImplementedError):
        return None
    return names if len(set(names)) > 1 else None


class ObservationPipeline:
    def __init__(self, env_cfg, policy_cfg, input_features: dict[str, Any]):
        self.env_pre, _ = make_env_pre_post_processors(env_cfg, policy_cfg)
        self.keys = set(input_features)

    def __call__(self, obs: dict, tasks: list[str]) -> dict[str, Any]:
        raw = preprocess_observation(obs)
        raw[TASK] = list(tasks)
        raw = self.env_pre(raw)
        out = {k: v for k, v in raw.items() if k in self.keys}
        out[TASK] = list(tasks)
        return out


class FeatureObservations:
    """Observations that already are LeRobot feature dicts (``gym_manipulator``'s env processor output):
    keep the policy's input features and add the task string."""

    def __init__(self, input_features: dict[str, Any]):
        self.keys = list(input_features)

    def __call__(self, obs: dict, tasks: list[str]) -> dict[str, Any]:
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise ValueError(
                f"env: the observation lacks the policy's input features {missing}; it has {sorted(obs)}"
            )
        out = {k: obs[k] for k in self.keys}
        out[TASK] = list(tasks)
        return out
