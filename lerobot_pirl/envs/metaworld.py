"""State-based MetaWorld for πRL on a CPU (``--env.type=pirl_metaworld``).

LeRobot's own ``metaworld`` env is pixel-based with a 4-dim ``agent_pos``; this one exposes the full
39-dim MetaWorld state as ``agent_pos`` (LeRobot's ``preprocess_observation`` maps it to
``observation.state``), optionally one rendered image as ``pixels``, vectorised with gymnasium. Each
env's ``task_description`` is the task's language instruction (LeRobot's MetaWorld descriptions).

Rendering is the expensive part on a CPU (~30 ms a frame with Mesa's software renderer, against
~0.7 ms for a physics step), so images are rendered without shadows, reflections, skybox or fog, and
``camera_every`` renders a new frame only every N env steps of an episode (the frame is held in
between, like a slower camera): with ``camera_every`` equal to the policy's ``n_action_steps`` every
chunk starts on a fresh frame and nothing the policy does not read is rendered.

Episodes are seeded explicitly: sub-env ``i`` of a training vector env plays the episode seeds
``seed + i, seed + i + n, seed + i + 2n, ...``; evaluation uses ``eval_seed + j``. The two ranges
never meet (a training env refuses to reach ``eval_seed``), so evaluation is always on held-out
task variations (goal / object positions). The defaults are the ranges of :mod:`lerobot_pirl.seeds`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_STATE

from lerobot_pirl.checks import check_choice
from lerobot_pirl.seeds import EVAL_PROTOCOL, TRAINING

STATE_DIM = 39
ACTION_DIM = 4
REWARD_TYPES = ("dense", "progress", "sparse")
CAMERA = "corner"  # the MetaWorld camera the image observation comes from


def task_description(task: str) -> str:
    """The language instruction of a MetaWorld task (LeRobot's descriptions; the task name if none)."""
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    return TASK_DESCRIPTIONS.get(task, task)


def mix_descriptions(tasks: list[str]) -> dict[str, str]:
    """Each task's instruction within a mix, unique: tasks that share LeRobot's description (MT50's push-v3 and
    push-back-v3) get their task name appended, so neither a language policy nor the per-task statistics and
    advantages (grouped by instruction) can mix them up."""
    plain = {t: task_description(t) for t in tasks}
    shared = {d for d in plain.values() if list(plain.values()).count(d) > 1}
    return {t: f"{d} ({t})" if d in shared else d for t, d in plain.items()}


def _metaworld_task(task: str, episode_length: int):
    """A MetaWorld v3 env of ``task`` with the full 39-dim state, a new seeded variation at every reset."""
    import metaworld  # noqa: F401  (optional dependency: the `metaworld` extra)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"task: unknown MetaWorld v3 task {task!r}; e.g. {sorted(ALL_V3_ENVIRONMENTS)[:5]}")
    env = ALL_V3_ENVIRONMENTS[task]()
    env._partially_observable = False  # the goal is part of the 39-dim state ...
    env.__dict__.pop("sawyer_observation_space", None)  # ... and not clipped to 0 by a stale cached space
    env._freeze_rand_vec = False  # every reset draws a new task variation ...
    env.seeded_rand_vec = True  # ... from the env's own seeded generator
    env._set_task_called = True
    env.max_path_length = episode_length + 512  # the actor may step an ended env until its chunk ends
    return env


class MetaWorldStateEnv(gym.Env):
    """One MetaWorld v3 task with explicit per-episode seeds, success in ``info["is_success"]``."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        episode_length: int = 200,
        reward_type: str = "sparse",
        reward_scale: float = 1.0,
        distance_scale: float = 0.0,
        terminate_on_success: bool = True,
        seed_start: int = 0,
        seed_stride: int = 1,
        seed_limit: int | None = None,
        image_size: int | None = None,
        camera_every: int = 1,
        task_index: int | None = None,
        num_tasks: int = 0,
        description: str | None = None,
        mix: tuple[str, ...] | None = None,
    ):
        check_choice("reward_type", reward_type, REWARD_TYPES)
        if camera_every < 1:
            raise ValueError(f"camera_every must be >= 1, got {camera_every}")
        if distance_scale < 0:
            raise ValueError(f"distance_scale must be >= 0, got {distance_scale}")
        if num_tasks and not (task_index is not None and 0 <= task_index < num_tasks):
            raise ValueError(f"task_index must be in [0, num_tasks={num_tasks}), got {task_index}")
        if mix is not None and (
            len(mix) != num_tasks or task not in mix or list(mix).index(task) != task_index
        ):
            raise ValueError(
                f"mix: {task!r} at task_index {task_index} of {num_tasks} tasks is expected in {mix}"
            )
        self._env = _metaworld_task(task, episode_length)
        self.task = task
        self.mix = tuple(mix) if mix is not None else None  # the tasks this env may switch to (next_task)
        self._next_task: str | None = None
        self.task_description = description or task_description(task)
        self.episode_length = episode_length
        self.reward_type = reward_type
        self.reward_scale = reward_scale
        self.distance_scale = distance_scale
        self.terminate_on_success = terminate_on_success
        self.seed_start, self.seed_stride, self.seed_limit = seed_start, seed_stride, seed_limit
        self.image_size = image_size
        self.camera_every = camera_every
        self._renderer = None
        self._frame: np.ndarray | None = None
        self._episodes = 0
        self._t = 0
        self._potentials: dict[str, float] = {}  # each shaping potential at the previous step of the episode
        # Multi-task: the task's one-hot (of num_tasks) follows the 39 state dims.
        self._one_hot = np.zeros(num_tasks, dtype=np.float32)
        if num_tasks:
            self._one_hot[task_index] = 1.0
        state_dim = STATE_DIM + num_tasks
        spaces = {"agent_pos": gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}
        if image_size:
            spaces["pixels"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def _obs(self, state: np.ndarray, new_frame: bool = True) -> dict[str, np.ndarray]:
        obs = {"agent_pos": np.concatenate([state.astype(np.float32), self._one_hot])}
        if self.image_size:
            if new_frame or self._frame is None:
                self._frame = self.render()
            obs["pixels"] = self._frame.copy()
        return obs

    def render(self) -> np.ndarray:
        """An ``image_size`` RGB frame of the camera (64 px when the env has no image observation)."""
        import mujoco

        if self._renderer is None:  # made on first use: in the process (or subprocess) that renders
            size = self.image_size or 64
            self._renderer = mujoco.Renderer(self._env.model, size, size)
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG"):
                self._renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self._renderer.update_scene(self._env.data, camera=CAMERA)
        return np.ascontiguousarray(self._renderer.render()[::-1])

    @property
    def _max_episode_steps(self) -> int:
        """What ``lerobot-eval`` ends an episode at (this env truncates itself there too)."""
        return self.episode_length

    def next_episode_seed(self) -> int:
        seed = self.seed_start + self._episodes * self.seed_stride
        if self.seed_limit is not None and seed >= self.seed_limit:
            raise RuntimeError(
                f"training episode seed {seed} would reach the held-out range (>= {self.seed_limit})"
            )
        return seed

    @property
    def next_task(self) -> str | None:
        """The task of ``mix`` this env plays from its next reset on (``None``: its current one); how an
        actor re-splits a multi-task env's envs (:mod:`lerobot_pirl.runtime.rebalance`)."""
        return self._next_task

    @next_task.setter
    def next_task(self, task: str | None) -> None:
        if task is not None and (self.mix is None or task not in self.mix):
            raise ValueError(f"next_task: {task!r} is not a task of this env's mix {self.mix}")
        self._next_task = task

    def _switch_task(self, task: str) -> None:
        """Play ``task`` of the mix from now on: its MetaWorld env, one-hot and instruction (same seeds)."""
        if self._renderer is not None:  # bound to the old task's model
            self._renderer.close()
            self._renderer = None
        self._env.close()
        self._env = _metaworld_task(task, self.episode_length)
        self.task = task
        self.task_description = mix_descriptions(list(self.mix))[task]
        self._one_hot[:] = 0.0
        self._one_hot[self.mix.index(task)] = 1.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._next_task is not None and self._next_task != self.task:
            self._switch_task(self._next_task)
        self._next_task = None
        episode_seed = seed if seed is not None else self.next_episode_seed()
        self._episodes += 1
        self._env.seed(int(episode_seed))
        state, _ = self._env.reset()
        self._t = 0
        self._potentials = {}  # shaping starts from zero on an episode's first step
        return self._obs(state), {"is_success": False, "episode_seed": episode_seed}

    def step(self, action):
        state, reward, _, _, info = self._env.step(np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0))
        self._t += 1
        success = bool(info.get("success", 0.0) >= 1.0)
        distance = float(info.get("obj_to_target", np.nan))
        reward = self._reward(success, float(reward)) + self._approach(distance)
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.episode_length and not terminated
        new_frame = terminated or truncated or self._t % self.camera_every == 0
        # goal_distance: MetaWorld's own distance to the task's goal ("obj_to_target": the hand's for reach,
        # the object's for push / pick-place), the quantity its success threshold is set on.
        info = {"is_success": success, "goal_distance": distance}
        return self._obs(state, new_frame), reward, terminated, truncated, info

    def _reward(self, success: bool, shaped: float) -> float:
        """The reward of ``reward_type`` from the step's success and MetaWorld's shaped reward."""
        if self.reward_type == "sparse":
            return float(success)
        if self.reward_type == "dense":
            return shaped * self.reward_scale
        # "progress": success plus the change of the shaped reward since the last step (potential-based
        # shaping, zero on an episode's first step); it sums to the episode's net progress, so ending an
        # episode on success is never worth less than hovering next to it.
        return float(success) + self._shaping("progress", shaped) * self.reward_scale

    def _approach(self, distance: float) -> float:
        """``distance_scale`` x how much closer to the goal this step came (m), 0 on an episode's first step:
        potential-based shaping on the distance MetaWorld's success threshold is set on, so an episode's
        shaping sums to its net approach and a near miss that drifts off gives back what it gained."""
        if not self.distance_scale:
            return 0.0
        if not np.isfinite(distance):
            raise ValueError(f"distance_scale: task {self.task!r} reports no goal distance (obj_to_target)")
        return self._shaping("approach", -distance) * self.distance_scale

    def _shaping(self, name: str, potential: float) -> float:
        """The change of potential ``name`` since the episode's previous step (0 on its first step): the
        potential-based shaping term, which sums over an episode to the potential's net change."""
        previous = self._potentials.get(name, potential)
        self._potentials[name] = potential
        return potential - previous

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()


@EnvConfig.register_subclass("pirl_metaworld")
@dataclass
class MetaWorldStateEnvConfig(EnvConfig):
    """A MetaWorld v3 task with the 39-dim state observation (optional image), vectorised.

    With several actors, give each its own ``seed`` (e.g. 0, 100000, 200000) so they play different
    task variations.
    """

    # Training envs draw their own episode seeds (the actor resets them without a seed).
    seeds_episodes: ClassVar[bool] = True

    # MetaWorld v3 task name, e.g. "button-press-v3".
    task: str | None = "button-press-v3"
    # Control frequency of MetaWorld (informational; rollouts are not throttled).
    fps: int = 80
    # Env steps per episode before truncation.
    episode_length: int = 200
    # Number of vectorised envs an actor steps as a batch.
    num_envs: int = 8
    # "sparse": 1 on success, else 0; "progress": sparse plus reward_scale x the step's change of MetaWorld's
    # shaped reward; "dense": the shaped reward x reward_scale (pair with terminate_on_success=false: ended on
    # success, an episode forgoes the shaped reward it would keep collecting next to the goal).
    reward_type: str = "sparse"
    # Multiplier of MetaWorld's shaped reward (in [0, 10]) for "dense" and "progress".
    reward_scale: float = 0.1
    # Added to any reward_type: this x the step's decrease of MetaWorld's goal distance in m (0 = off).
    distance_scale: float = 0.0
    # End an episode (terminated, no bootstrap) when the task is solved.
    terminate_on_success: bool = True
    # First training episode seed; training envs play seed, seed + 1, ... (below eval_seed).
    seed: int = TRAINING.start
    # First evaluation episode seed (default: the held-out range of the published tables).
    eval_seed: int = EVAL_PROTOCOL.first_seed
    # Envs that share reset states (GRPO groups); num_envs must be a multiple of it.
    group_size: int = 1
    # Side of a rendered RGB image observation (null = state only; rendering needs MUJOCO_GL=osmesa/egl).
    image_size: int | None = None
    # Render a new camera frame every N env steps of an episode (held in between); the policy's
    # n_action_steps renders exactly the frames a chunked policy reads.
    camera_every: int = 1
    # Step the envs in subprocesses (gymnasium AsyncVectorEnv: lock-step, a chunk ends for every env at
    # the first episode end in it); prefer env_workers.
    use_async_envs: bool = False
    # Worker processes (at most num_envs) that step the envs, each a contiguous group of them stepped per
    # env exactly as in one process (same transitions, more cores); 1 = step them in the actor's process.
    # Use the cores the actor may take (on 2 cores with a learner beside it: 2).
    env_workers: int = 1
    features: dict[str, PolicyFeature] = field(
        default_factory=lambda: {
            "agent_pos": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
            ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,)),
        }
    )
    features_map: dict[str, str] = field(
        default_factory=lambda: {"agent_pos": OBS_STATE, "pixels": OBS_IMAGE, ACTION: ACTION}
    )

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("task: a MetaWorld v3 task name is required, e.g. 'button-press-v3'")
        check_choice("reward_type", self.reward_type, REWARD_TYPES)
        if self.distance_scale < 0:
            raise ValueError(f"distance_scale must be >= 0, got {self.distance_scale}")
        if self.episode_length < 1 or self.num_envs < 1:
            raise ValueError("episode_length and num_envs must be >= 1")
        if self.group_size < 1 or self.num_envs % self.group_size:
            raise ValueError(f"group_size ({self.group_size}) must divide num_envs ({self.num_envs})")
        if self.camera_every < 1:
            raise ValueError(f"camera_every must be >= 1, got {self.camera_every}")
        if self.env_workers < 1:
            raise ValueError(f"env_workers must be >= 1, got {self.env_workers}")
        if self.env_workers > 1 and self.use_async_envs:
            raise ValueError("env_workers > 1 and use_async_envs are two ways to use subprocesses: set one")
        if not 0 <= self.seed < self.eval_seed:
            raise ValueError(f"seed ({self.seed}) must be in [0, eval_seed={self.eval_seed})")
        if self.image_size is not None:
            self.features["pixels"] = PolicyFeature(
                type=FeatureType.VISUAL, shape=(self.image_size, self.image_size, 3)
            )

    @property
    def gym_kwargs(self) -> dict:
        return {
            "task": self.task,
            "episode_length": self.episode_length,
            "reward_type": self.reward_type,
            "reward_scale": self.reward_scale,
            "distance_scale": self.distance_scale,
            "terminate_on_success": self.terminate_on_success,
            "image_size": self.image_size,
            "camera_every": self.camera_every,
        }

    def env_kwargs(self, env_index: int, num_envs: int) -> dict:
        """The ``MetaWorldStateEnv`` arguments of sub-env ``env_index`` of ``num_envs`` (one task: all alike)."""
        return self.gym_kwargs

    def make_env(
        self,
        seed_start: int,
        seed_stride: int = 1,
        seed_limit: int | None = None,
        env_index: int = 0,
        num_envs: int = 1,
    ) -> MetaWorldStateEnv:
        return MetaWorldStateEnv(
            **self.env_kwargs(env_index, num_envs),
            seed_start=seed_start,
            seed_stride=seed_stride,
            seed_limit=seed_limit,
        )

    def create_envs(self, n_envs: int | None = None, use_async_envs: bool | None = None) -> dict:
        """Training vector env ``{"pirl_metaworld": {0: VectorEnv}}`` without auto-reset: the actor
        resets ended envs itself (``reset_mask``) so no executed chunk runs across two episodes. With
        ``env_workers`` > 1 it is a :class:`ParallelChunkStepper` over that many worker processes."""
        n = n_envs if n_envs is not None else self.num_envs
        use_async = self.use_async_envs if use_async_envs is None else use_async_envs
        groups = max(n // self.group_size, 1)

        def factory(i: int):
            return lambda: self.make_env(self.seed + i // self.group_size, groups, self.eval_seed, i, n)

        if self.env_workers > 1 and n > 1:
            return {self.type: {0: self._parallel([factory(i) for i in range(n)])}}
        cls = gym.vector.AsyncVectorEnv if use_async and n > 1 else gym.vector.SyncVectorEnv
        vec = cls([factory(i) for i in range(n)], autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        return {self.type: {0: vec}}

    def make_eval_env(self, n_envs: int, in_process: bool = False):
        """Envs for held-out evaluation (reset them with explicit seeds ``eval_seed + j``): a
        ``SyncVectorEnv``, or with ``env_workers`` > 1 (and not ``in_process``, which rendering videos
        needs) a :class:`ParallelChunkStepper`."""
        factories = [
            lambda j=j: self.make_env(self.eval_seed, env_index=j, num_envs=n_envs) for j in range(n_envs)
        ]
        if self.env_workers > 1 and n_envs > 1 and not in_process:
            return self._parallel(factories)
        return gym.vector.SyncVectorEnv(factories, autoreset_mode=gym.vector.AutoresetMode.DISABLED)

    def _parallel(self, factories: list):
        from lerobot_pirl.runtime.parallel import ParallelChunkStepper

        def group(fns):
            return lambda: gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)

        parts = np.array_split(np.arange(len(factories)), min(self.env_workers, len(factories)))
        return ParallelChunkStepper([group([factories[i] for i in part]) for part in parts])


# MetaWorld's multi-task benchmarks (their task lists come from MetaWorld itself).
SUITES = ("MT10", "MT50")


def suite_tasks(suite: str) -> list[str]:
    """The tasks of MetaWorld's ``MT10`` or ``MT50`` benchmark, in MetaWorld's order."""
    check_choice("suite", suite, SUITES)
    from metaworld.env_dict import MT10_V3, MT50_V3

    return list((MT10_V3 if suite == "MT10" else MT50_V3).keys())


@EnvConfig.register_subclass("pirl_metaworld_mt")
@dataclass
class MetaWorldMultiTaskEnvConfig(MetaWorldStateEnvConfig):
    """Several MetaWorld v3 tasks mixed in one vector env, for one multi-task policy.

    The envs are split over the tasks in contiguous blocks (``num_envs / len(tasks)`` per task, or the counts
    of ``envs_per_task``; a GRPO group never mixes tasks). The state is the 39 MetaWorld dims followed by the task's one-hot
    (over ``task_list``, for state policies such as ``flow_mlp``); each env's ``task_description`` is its
    task's language instruction (for VLAs). With ``task`` set, every env plays that one task with the same
    observation layout: the per-task held-out evaluation (:func:`lerobot_pirl.evaluate.evaluate_tasks`).
    """

    # Play only this task of the list in every env (null: the mix of every task); for per-task evaluation.
    task: str | None = None
    # MetaWorld's benchmark whose tasks are mixed: "MT10" or "MT50" (unused when `tasks` is given).
    suite: str = "MT10"
    # An explicit task list instead of the suite's: names separated by commas (e.g. "reach-v3,push-v3").
    tasks: str | None = None
    # Number of vectorised envs an actor steps as a batch: a multiple of the number of tasks (or, with
    # envs_per_task, their sum).
    num_envs: int = 20
    # Envs of each task, comma-separated in task-list order (e.g. "1,3,2"; null: num_envs split evenly).
    envs_per_task: str | None = None

    def __post_init__(self) -> None:
        check_choice("suite", self.suite, SUITES)
        tasks = self.task_list
        if len(set(tasks)) != len(tasks) or not all(tasks):
            raise ValueError(f"tasks: a non-empty list of distinct MetaWorld tasks is expected, got {tasks}")
        if self.task is not None and self.task not in tasks:
            raise ValueError(f"task: {self.task!r} is not one of the mixed tasks {tasks}")
        counts = self.task_env_counts()
        if self.task is None and sum(counts) != self.num_envs:
            raise ValueError(
                f"num_envs ({self.num_envs}) must be a multiple of the number of tasks ({len(tasks)}): "
                "each task gets the same number of envs"
                if self.envs_per_task is None
                else f"num_envs ({self.num_envs}) must equal the sum of envs_per_task ({sum(counts)})"
            )
        if self.task is None and any(c % self.group_size for c in counts):
            raise ValueError(f"group_size ({self.group_size}) must divide the envs of every task ({counts})")
        saved, self.task = self.task, tasks[0]  # the parent's checks need one task name
        super().__post_init__()
        self.task = saved
        self.features["agent_pos"] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM + len(tasks),))

    @property
    def task_list(self) -> list[str]:
        """The mixed tasks: ``tasks`` when given, else the suite's."""
        return mix_task_list(self.tasks, self.suite)

    def task_env_counts(self) -> list[int]:
        """The number of envs of each task, in task-list order (``envs_per_task``, or an even split)."""
        tasks = self.task_list
        if self.envs_per_task is None:
            return [self.num_envs // len(tasks)] * len(tasks)
        try:
            counts = [int(c) for c in _split_commas(self.envs_per_task)]
        except ValueError:
            counts = []
        if len(counts) != len(tasks) or min(counts) < 1:
            raise ValueError(
                f"envs_per_task: {len(tasks)} positive integers separated by commas are expected (one per "
                f"task of {tasks}), got {self.envs_per_task!r}"
            )
        return counts

    def env_task(self, env_index: int, num_envs: int) -> str:
        """The task sub-env ``env_index`` of ``num_envs`` plays: contiguous blocks, ``num_envs / len(tasks)``
        each, or ``envs_per_task``'s counts."""
        if self.task is not None:
            return self.task
        tasks = self.task_list
        if self.envs_per_task is not None:
            counts = self.task_env_counts()
            if num_envs != sum(counts):
                raise ValueError(
                    f"envs_per_task {counts} is a split of {sum(counts)} envs, not of {num_envs}"
                )
            return tasks[int(np.searchsorted(np.cumsum(counts), env_index, side="right"))]
        return tasks[min(env_index * len(tasks) // max(num_envs, 1), len(tasks) - 1)]

    def env_kwargs(self, env_index: int, num_envs: int) -> dict:
        task = self.env_task(env_index, num_envs)
        tasks = self.task_list
        return {
            **self.gym_kwargs,
            "task": task,
            "task_index": tasks.index(task),
            "num_tasks": len(tasks),
            "description": mix_descriptions(tasks)[task],
            "mix": tuple(tasks),
        }

    def create_envs(self, n_envs: int | None = None, use_async_envs: bool | None = None) -> dict:
        n = n_envs if n_envs is not None else self.num_envs
        if self.task is None and self.envs_per_task is not None and n != self.num_envs:
            raise ValueError(f"n_envs ({n}) must be num_envs ({self.num_envs}) when envs_per_task is set")
        if self.task is None and self.envs_per_task is None and n % len(self.task_list):
            raise ValueError(
                f"n_envs ({n}) must be a multiple of the number of mixed tasks ({len(self.task_list)})"
            )
        return super().create_envs(n, use_async_envs)

    def for_task(self, task: str) -> MetaWorldMultiTaskEnvConfig:
        """This config with every env playing ``task`` (same one-hot layout, same seeds)."""
        return dataclasses.replace(self, task=task, features=dict(self.features))


def _split_commas(names: str) -> list[str]:
    return [t.strip() for t in names.split(",")]


def mix_task_list(tasks: str | None, suite: str) -> list[str]:
    """A mix's tasks from its config fields: the comma-separated ``tasks`` when given, else ``suite``'s."""
    return _split_commas(tasks) if tasks is not None else suite_tasks(suite)


def mixed_task_names(task: str) -> list[str]:
    """The tasks a task argument names when it names a mix (``MT10``, ``MT50`` or names joined by commas),
    else ``[]``."""
    if task in SUITES:
        return suite_tasks(task)
    return _split_commas(task) if "," in task else []


def metaworld_env_config(task: str, **fields) -> MetaWorldStateEnvConfig:
    """The env config of a task name (``pirl_metaworld``), or of a multi-task mix (``pirl_metaworld_mt``):
    ``MT10`` / ``MT50``, or task names separated by commas. ``fields`` set the config's other fields
    (``num_envs`` is rounded up to a multiple of the number of tasks of a mix)."""
    tasks = mixed_task_names(task)
    if tasks:
        k = len(tasks)
        fields["num_envs"] = -(-fields.get("num_envs", k) // k) * k
        return MetaWorldMultiTaskEnvConfig(tasks=",".join(tasks), **fields)
    return MetaWorldStateEnvConfig(task=task, **fields)
