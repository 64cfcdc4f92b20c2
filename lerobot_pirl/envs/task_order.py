"""The one-hot task order of a multi-task checkpoint, and its check against the env it is run on.

A ``pirl_metaworld_mt`` state ends with the task's one-hot over the env's task list. A policy trained
with one order and run with another sees every task under another task's code, and nothing fails: it
just plays the wrong task. The order travels with the run's files, read back here:

- a πRL checkpoint's ``train_config.json`` holds its env (``pirl_metaworld_mt`` with ``tasks`` / ``suite``);
- an SFT checkpoint's ``train_config.json`` names its dataset, whose ``observation.state`` names end with
  ``task:<name>`` for the one-hot dims (``lerobot-pirl-collect`` writes them).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lerobot.utils.constants import OBS_STATE

logger = logging.getLogger(__name__)

TASK_PREFIX = "task:"  # the name prefix of a one-hot dim in a dataset's observation.state names
MT_ENV_TYPE = "pirl_metaworld_mt"
TRAIN_CONFIG = "train_config.json"


def one_hot_names(tasks: list[str]) -> list[str]:
    """The dataset names of the one-hot dims over ``tasks``."""
    return [f"{TASK_PREFIX}{t}" for t in tasks]


def _env_order(env: dict) -> list[str] | None:
    if env.get("type") != MT_ENV_TYPE:
        return None
    from lerobot_pirl.envs.metaworld import MetaWorldMultiTaskEnvConfig, mix_task_list

    return mix_task_list(env.get("tasks"), env.get("suite", MetaWorldMultiTaskEnvConfig.suite))


def _dataset_order(dataset: dict) -> list[str] | None:
    root = dataset.get("root")
    if not root:
        from lerobot.utils.constants import HF_LEROBOT_HOME

        root = HF_LEROBOT_HOME / dataset.get("repo_id", "")
    info = Path(root) / "meta" / "info.json"
    if not info.is_file():
        return None
    names = json.loads(info.read_text()).get("features", {}).get(OBS_STATE, {}).get("names") or []
    order = [n[len(TASK_PREFIX) :] for n in names if isinstance(n, str) and n.startswith(TASK_PREFIX)]
    return order or None


def trained_task_order(policy_dir: str | Path) -> list[str] | None:
    """The one-hot task order the checkpoint at ``policy_dir`` was trained with: its env's task list (a
    πRL checkpoint), else its dataset's one-hot names (an SFT checkpoint), else ``None`` (unknown: no
    ``train_config.json``, no multi-task env, or a dataset that is not on this machine)."""
    path = Path(policy_dir) / TRAIN_CONFIG
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return _env_order(cfg.get("env") or {}) or _dataset_order(cfg.get("dataset") or {})


def check_task_order(policy_dir: str | Path | None, env_cfg) -> None:
    """Refuse to run a multi-task env whose one-hot order differs from the one the policy at
    ``policy_dir`` was trained with (nothing to check for a single-task env, a Hub id, or an unknown
    order)."""
    env_tasks = getattr(env_cfg, "task_list", None)
    if env_tasks is None or not policy_dir or not Path(policy_dir).is_dir():
        return
    trained = trained_task_order(policy_dir)
    if trained is None:
        logger.info("task order: %s does not say which one-hot order it was trained with", policy_dir)
        return
    if trained != env_tasks:
        raise ValueError(
            f"env.tasks: the policy at {policy_dir} was trained with the one-hot task order {trained}, the env "
            f"uses {env_tasks}; pass --env.tasks={','.join(trained)} (the same tasks in the same order)"
        )
