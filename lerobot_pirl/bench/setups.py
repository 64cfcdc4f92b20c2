"""The few-shot MetaWorld tasks of the benchmark, their fixed per-task settings, and the policies a row
can fine-tune (``flow_mlp`` on the state; a tiny SmolVLA on a camera image, the instruction and the state)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lerobot_pirl.envs.metaworld import mixed_task_names
from lerobot_pirl.seeds import EVAL_PROTOCOL

DEFAULT_TASK = "button-press-v3"
BENCH_TASKS = ("button-press-v3", "door-open-v3", "drawer-close-v3", "push-v3", "pick-place-v3")
NOISE_METHODS = ("flow_sde", "flow_noise")
# "online": πRL alone; "hybrid": πRL plus the flow-matching loss on the SFT demos (recipes/*_hybrid.json).
MODES = ("online", "hybrid")
# "ppo" / "grpo": πRL with GAE or group-relative advantages (recipes/*_grpo.json); "sac": LeRobot's SAC
# from scratch with the demos in its offline buffer (lerobot_pirl/bench/sac.py).
ALGORITHMS = ("ppo", "grpo", "sac")
# How a mix's envs are shared among its tasks: "even" (the same number each), or "failure" (at least one
# each, the rest in proportion to each task's SFT failure rate on the bench's validation episodes, so the
# tasks the SFT solves keep a foothold and the env steps go where there is something to learn), or
# "adaptive" ("failure" at the start, then re-split every bench.stages.MIX_REBALANCE_EVERY policy versions
# by each task's training failure rate since the last split: policy.actor.rebalance_envs_every).
MIX_ALLOCATIONS = ("even", "failure", "adaptive")


@dataclass(frozen=True)
class TaskSetup:
    """Per-task few-shot setting, fixed per task (chosen from SFT success on validation seeds, never from
    the held-out evaluation seeds)."""

    demos: int = 5  # scripted demos for SFT
    # Std of the Gaussian noise on the expert's xyz commands (an imperfect teleoperator).
    action_noise: float = 1.5
    # Noise on the gripper command too (not for grasping tasks: it breaks their grasps).
    noise_gripper: bool = True
    sft_steps: int = 1000  # lerobot-train steps
    # lerobot-train's data-loading processes. 2 makes MT50's SFT 1.7x faster (5.8 steps/s against 3.5; with 0,
    # LeRobotDataset's __getitem__ takes 75 % of it) but gives another checkpoint, not bit-identical: the rows
    # made with 0 stay reproducible with the default.
    sft_workers: int = 0
    rl_updates: int = 60  # learner updates (policy.online_steps)
    episode_length: int = EVAL_PROTOCOL.episode_length  # env steps per episode

    def sft_fields(self) -> dict:
        """The fields that decide the demos and the SFT checkpoint (everything but the RL budget)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "rl_updates"}


TASKS: dict[str, TaskSetup] = {
    # Chosen from SFT success on validation seeds (never the held-out ones): button-press 0.30,
    # door-open 0.42, drawer-close 0.72 with 5 demos. Push and pick-place are harder to imitate from few
    # noisy demos: push 5 / 10 / 15 demos -> 0.12 / 0.33 / 0.50, pick-place 5 / 7 / 10 / 15 ->
    # 0.10 / 0.20 / 0.48 / 0.75; 10 demos keep them clearly imperfect, and they get the whole 1M env-step
    # budget (200 updates; push on validation seeds: 0.30 -> 0.87 after 100 updates).
    "button-press-v3": TaskSetup(action_noise=2.0),
    "door-open-v3": TaskSetup(action_noise=1.5),
    "drawer-close-v3": TaskSetup(action_noise=2.0),
    "push-v3": TaskSetup(demos=10, action_noise=0.3, noise_gripper=False, rl_updates=200),
    "pick-place-v3": TaskSetup(demos=10, action_noise=0.3, noise_gripper=False, rl_updates=200),
}


# The one rule for every task nobody tuned by hand: a task outside TASKS, and every task of a multi-task mix
# (MT10, MT50). The same demos and noise for all, the noise on the xyz commands only (gripper noise breaks
# the grasping tasks' grasps); chosen on validation seeds so MT10's SFT average lands near the paper's
# few-shot start (about 0.5): see benchmarks/README.md, "Multi-task".
RULE = TaskSetup(demos=5, action_noise=1.0, noise_gripper=False)
# A mix of K tasks: SFT_STEPS_PER_TASK * K lerobot-train steps (at least the rule's), and K times the rule's
# πRL updates (the same env steps per task as a single-task run; a wall-time cap usually ends it first).
SFT_STEPS_PER_TASK = 200


def task_setup(task: str, **overrides) -> TaskSetup:
    """The task's setup (:data:`RULE` for a task outside the table, scaled to a mix for a multi-task one)
    with the given fields replaced; ``None`` values are ignored, so command-line options that were not
    given change nothing."""
    given = {k: v for k, v in overrides.items() if v is not None}
    mixed = len(mixed_task_names(task))
    if mixed:
        base = dataclasses.replace(
            RULE,
            sft_steps=max(RULE.sft_steps, SFT_STEPS_PER_TASK * mixed),
            rl_updates=RULE.rl_updates * mixed,
        )
    else:
        base = TASKS.get(task, RULE)
    return dataclasses.replace(base, **given)


def _no_backbone(root: Path) -> list[str]:
    return []


def tiny_smolvlm_backbone(root: Path) -> list[str]:
    """Write the tiny SmolVLM backbone (vocabulary: the words of every MetaWorld instruction) under
    ``root`` and point SmolVLA at it."""
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    from lerobot_pirl.bench.tiny_vla import instruction_words, write_tiny_smolvlm

    path = root / "tiny_smolvlm"
    if not (path / "config.json").is_file():
        words = instruction_words(TASK_DESCRIPTIONS.values())
        write_tiny_smolvlm(
            path, words, image_size=64, patch_size=8, text_width=64, text_layers=4, vision_width=32
        )
    return [f"--policy.vlm_model_name={path.resolve()}"]


@dataclass(frozen=True)
class ModelSetup:
    """A policy the benchmark fine-tunes: how vanilla ``lerobot-train`` builds it, the recipes that run
    it (``recipes/metaworld_<name>_<method>.json``) and what the env renders for it."""

    name: str
    sft_args: tuple[str, ...]  # lerobot-train arguments that choose and size the policy
    sft_batch_size: int = 64
    sft_steps: int | None = None  # replaces the task's SFT steps (None: keep them)
    image_size: int | None = None  # side of the camera image the policy reads (None: state only)
    camera_every: int = 1  # env steps between camera frames (the policy's n_action_steps: it reads no others)
    # Writes what the policy needs next to the demos (e.g. a backbone) and returns lerobot-train arguments.
    backbone: Callable[[Path], list[str]] = field(default=_no_backbone)


MODELS: dict[str, ModelSetup] = {
    "flow_mlp": ModelSetup(
        "flow_mlp", ("--policy.type=flow_mlp", "--policy.discover_packages_path=lerobot_pirl")
    ),
    # LeRobot's SmolVLAPolicy at CPU size, trained from scratch (no pretrained VLM can be downloaded or
    # run on 2 cores): 4 text layers of width 64, a 1-layer SigLIP on 64 px images (16 image tokens),
    # a word-level tokenizer. 5-step chunks as flow_mlp; SFT with vanilla lerobot-train.
    "smolvla_tiny": ModelSetup(
        "smolvla_tiny",
        (
            "--policy.type=smolvla",
            "--policy.load_vlm_weights=false",
            "--policy.num_vlm_layers=4",
            "--policy.num_expert_layers=-1",
            "--policy.self_attn_every_n_layers=2",
            "--policy.resize_imgs_with_padding=[64,64]",
            "--policy.chunk_size=5",
            "--policy.n_action_steps=5",
            "--policy.max_state_dim=40",
            "--policy.max_action_dim=4",
            "--policy.tokenizer_max_length=16",
            "--policy.freeze_vision_encoder=false",
            "--policy.train_expert_only=false",
            "--policy.optimizer_lr=1e-3",
            "--policy.scheduler_warmup_steps=50",
            "--policy.scheduler_decay_steps=600",
            "--policy.scheduler_decay_lr=1e-4",
        ),
        sft_batch_size=32,
        sft_steps=600,
        image_size=64,
        camera_every=5,
        backbone=tiny_smolvlm_backbone,
    ),
}
