"""LeRobot's own SAC on ``pirl_metaworld``: the baseline a LeRobot user with a few demos would otherwise
pick (HIL-SERL's algorithm), on the same task, demos, env-step budget and held-out evaluation as πRL.

Everything that learns is LeRobot's: the ``gaussian_actor`` policy, ``SACAlgorithm`` (critic ensemble,
target networks, temperature), the ``ReplayBuffer``s, the ``OnlineOfflineMixer`` (demos in the offline
buffer, ``online_ratio`` of each batch online, as HIL-SERL mixes them) and the ``RLTrainer``. LeRobot's
actor cannot host this env (it drives ``gym_manipulator``), so the loop that steps the envs and feeds
the buffer runs here, in one process, on the same vectorised env as πRL's actor (``env_workers``
processes); gradient steps are interleaved with env steps at ``updates_per_env_step``.

Settings that differ from LeRobot's defaults, and why:
- the action statistics are the env's action box ``[-1, 1]`` (not the demos' min / max): the replay
  buffer stores executed actions and LeRobot's trainer normalises observations only, so the actor's
  tanh output must already be the env's action (it is when the box is ``[-1, 1]``);
- the online buffer stores each next observation (``optimize_memory=False``): with several envs its
  consecutive entries come from different envs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import nn
from tqdm import tqdm

from lerobot_pirl.envs.metaworld import ACTION_DIM, STATE_DIM


@dataclass(frozen=True)
class SACSettings:
    """The knobs of a SAC run (LeRobot's defaults unless the bench overrides them)."""

    env_steps: int  # env-step budget (the same as the πRL run it is compared with)
    lr: float = 3e-4  # actor, critic and temperature learning rate (LeRobot's default)
    utd_ratio: int = 1  # critic updates per training step (LeRobot's update-to-data knob)
    # Initial entropy temperature (LeRobot's default; lower it when rewards are sparse 0 / 1).
    temperature_init: float = 1.0
    # Entropy the temperature is tuned towards (None: LeRobot's default, -action_dim / 2 = -2); the
    # temperature falls while the policy's entropy is above it.
    target_entropy: float | None = None
    # Training steps per env step: one per vector step of 16 envs. (LeRobot's learner trains freely beside
    # its actor; here a training step costs ~75 ms on 2 CPU cores, so 0.25 would make a 1M-step run ~5 h.)
    updates_per_env_step: float = 0.0625
    online_ratio: float = 0.5  # share of each batch from the online buffer (LeRobot's default)
    batch_size: int = 256  # transitions per training step
    # Online transitions before the first training step (LeRobot's default).
    online_step_before_learning: int = 100
    online_buffer_capacity: int = 100_000  # LeRobot's default
    num_envs: int = 16  # envs stepped as a batch (as πRL's actor)
    env_workers: int = 2  # processes stepping them
    eval_every_steps: int = 50_000  # env steps between held-out evaluations during training (0: none)
    # Env steps between checkpoints (bench/sac_checkpoint.py; also one when the run stops; 0: only then).
    save_every_steps: int = 50_000
    seed: int = 1000

    def __post_init__(self) -> None:
        if self.env_steps < 1 or self.batch_size < 1 or self.utd_ratio < 1 or self.num_envs < 1:
            raise ValueError("env_steps, batch_size, utd_ratio and num_envs must be >= 1")
        if self.eval_every_steps < 0 or self.save_every_steps < 0:
            raise ValueError("eval_every_steps and save_every_steps must be >= 0")
        if not 0.0 < self.online_ratio <= 1.0:
            raise ValueError(f"online_ratio must be in (0, 1], got {self.online_ratio}")
        if self.updates_per_env_step <= 0 or self.lr <= 0 or self.temperature_init <= 0:
            raise ValueError("updates_per_env_step, lr and temperature_init must be > 0")
        if self.target_entropy is not None and not math.isfinite(self.target_entropy):
            raise ValueError(f"target_entropy must be a finite number or None, got {self.target_entropy}")

    def learning_settings(self) -> dict:
        """The settings a resumed run must share with its checkpoint (all but the budget, the evaluation
        and checkpoint cadence and the worker count, which a continuation may change)."""
        free = {"env_steps", "eval_every_steps", "save_every_steps", "env_workers"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in free}


class DeterministicSAC(nn.Module):
    """The SAC actor as the held-out evaluation runs every policy: the tanh of its Gaussian mean, one
    action per chunk (``predict_action_chunk`` is what :func:`lerobot_pirl.evaluate.evaluate_policy` calls)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.config = policy.config

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict) -> torch.Tensor:
        mean = self.policy(batch)["action_mean"]
        action = torch.tanh(mean) if self.config.policy_kwargs.use_tanh_squash else mean
        return action[:, None, :]


def demo_stats(demos) -> dict:
    """Normalisation statistics: the demos' state min / max, the env's action box for the action."""
    states = torch.stack([demos[i][OBS_STATE] for i in range(len(demos))])
    return {
        OBS_STATE: {"min": states.min(0).values, "max": states.max(0).values},
        ACTION: {"min": -torch.ones(ACTION_DIM), "max": torch.ones(ACTION_DIM)},
    }


def demo_buffer(demos, capacity: int | None = None):
    """The demos as LeRobot's offline ``ReplayBuffer``: sparse success reward (1 on each episode's last,
    successful step, which ends it), the next frame as next state."""
    from lerobot.rl.buffer import ReplayBuffer

    n = len(demos)
    buffer = ReplayBuffer(
        capacity=max(capacity or n, n), device="cpu", state_keys=[OBS_STATE], optimize_memory=False
    )
    episodes = demos.hf_dataset["episode_index"]
    for i in range(n):
        frame = demos[i]
        last = i == n - 1 or int(episodes[i + 1]) != int(episodes[i])
        nxt = frame if last else demos[i + 1]
        buffer.add(
            state={OBS_STATE: frame[OBS_STATE][None]},
            action=frame[ACTION][None],
            reward=1.0 if last else 0.0,
            next_state={OBS_STATE: nxt[OBS_STATE][None]},
            done=last,
            truncated=False,
        )
    return buffer


def build_sac(settings: SACSettings, stats: dict):
    """LeRobot's gaussian_actor policy, SAC algorithm and pre / post processors for the 39-dim state."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.gaussian_actor.configuration_gaussian_actor import GaussianActorConfig
    from lerobot.policies.gaussian_actor.modeling_gaussian_actor import GaussianActorPolicy
    from lerobot.rl.algorithms.sac.configuration_sac import SACAlgorithmConfig
    from lerobot.rl.algorithms.sac.sac_algorithm import SACAlgorithm

    cfg = GaussianActorConfig(
        device="cpu",
        input_features={OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
        dataset_stats={k: {s: v.tolist() for s, v in d.items()} for k, d in stats.items()},
        online_buffer_capacity=settings.online_buffer_capacity,
        online_step_before_learning=settings.online_step_before_learning,
    )
    policy = GaussianActorPolicy(cfg)
    alg_cfg = SACAlgorithmConfig.from_policy_config(cfg)
    alg_cfg.actor_lr = alg_cfg.critic_lr = alg_cfg.temperature_lr = settings.lr
    alg_cfg.utd_ratio = settings.utd_ratio
    alg_cfg.temperature_init = settings.temperature_init
    alg_cfg.target_entropy = settings.target_entropy
    algorithm = SACAlgorithm(policy, alg_cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    return policy, algorithm, pre, post


class SACRun:
    """One SAC run: LeRobot's learner side (policy, algorithm, buffers, mixer, trainer) and the loop that
    steps the envs, fills the online buffer and interleaves training steps (:meth:`run`). With ``resume``,
    a run left under ``out`` continues from its last checkpoint: weights, optimisers, temperature, online
    buffer, counters and clock; its log keeps the records up to the checkpoint; its envs start on training
    seeds past every one the run had played."""

    def __init__(
        self,
        env_cfg,
        demos_root: Path,
        out: Path,
        settings: SACSettings,
        eval_episodes: int,
        resume: bool = False,
    ):
        from lerobot.datasets import LeRobotDataset
        from lerobot.rl.buffer import ReplayBuffer
        from lerobot.rl.data_sources import OnlineOfflineMixer
        from lerobot.rl.trainer import RLTrainer

        torch.manual_seed(settings.seed)
        self.env_cfg, self.out, self.settings, self.eval_episodes = env_cfg, out, settings, eval_episodes
        out.mkdir(parents=True, exist_ok=True)
        self.metrics = out / "metrics.jsonl"
        demos = LeRobotDataset(repo_id="local/demos", root=demos_root)
        self.policy, self.algorithm, self.pre, self.post = build_sac(settings, demo_stats(demos))
        self.online = ReplayBuffer(
            capacity=settings.online_buffer_capacity,
            device="cpu",
            state_keys=[OBS_STATE],
            optimize_memory=False,
        )
        mixer = OnlineOfflineMixer(self.online, demo_buffer(demos), online_ratio=settings.online_ratio)
        self.trainer = RLTrainer(self.algorithm, mixer, settings.batch_size, preprocessor=self.pre)
        self.records: list[dict] = []
        self.env_steps = self.updates = 0
        self.owed = 0.0  # training steps due
        self.successes: list[float] = []  # of the training episodes since the last record
        self.episode_success = np.zeros(settings.num_envs, dtype=bool)
        self.episodes = np.ones(settings.num_envs, dtype=np.int64)  # episodes each env has started
        self.seed_offset = 0  # training seeds an earlier invocation of the run used up
        self.last_stats: dict = {}
        self.seconds = {"act": 0.0, "env": 0.0, "learn": 0.0}
        self.t0 = time.time()
        self.saved_at: int | None = None  # env steps of the newest checkpoint
        if resume:
            self.restore()
        else:  # a fresh run: nothing of an earlier one may be resumed into it
            self.metrics.unlink(missing_ok=True)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)

    def run_state(self) -> dict:
        """The loop's counters, as a checkpoint keeps them."""
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "owed": self.owed,
            "wall_s": round(time.time() - self.t0, 3),
            "seconds": self.seconds,
            # the next invocation's training seeds start past every seed this one's envs played
            "seed_offset": self.seed_offset + self.settings.num_envs * int(self.episodes.max()),
            "settings": self.settings.learning_settings(),
        }

    def save(self) -> None:
        """A checkpoint of the run (:mod:`lerobot_pirl.bench.sac_checkpoint`), unless the newest one is of
        these env steps already (a stop on a periodic save, or a resumed run with nothing left to do)."""
        from lerobot_pirl.bench.sac_checkpoint import save_sac_checkpoint

        if self.saved_at == self.env_steps:
            return

        save_sac_checkpoint(
            self.out,
            self.settings.env_steps,
            self.run_state(),
            self.policy,
            self.algorithm,
            (self.pre, self.post),
            self.online,
        )
        self.saved_at = self.env_steps

    def restore(self) -> None:
        """Continue from the last checkpoint under ``out``; the log drops what came after it."""
        from lerobot_pirl.bench.sac_checkpoint import load_sac_checkpoint
        from lerobot_pirl.runtime.metrics_log import keep_records

        state = load_sac_checkpoint(
            self.out, self.policy, self.algorithm, self.online, self.settings.learning_settings()
        )
        self.env_steps, self.updates, self.owed = state["env_steps"], state["updates"], state["owed"]
        self.seconds, self.seed_offset = dict(state["seconds"]), state["seed_offset"]
        self.t0 = time.time() - state["wall_s"]
        self.saved_at = self.env_steps
        self.records = keep_records(self.metrics, lambda r: r.get("env_steps", math.inf) <= self.env_steps)

    def log(self, record: dict) -> None:
        record = {"wall_s": round(time.time() - self.t0, 3), "env_steps": self.env_steps, **record}
        self.records.append(record)
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")

    def progress(self) -> None:
        """An ``update`` record: training-episode success since the last one, rates, where time went."""
        successes, self.successes = self.successes, []
        self.log(
            {
                "kind": "update",
                "update": self.updates,
                "episodes": float(len(successes)),
                "episode_success": float(np.mean(successes)) if successes else math.nan,
                "env_steps_per_s": self.env_steps / max(time.time() - self.t0, 1e-9),
                **{f"time_{k}_s": round(v, 3) for k, v in self.seconds.items()},
                **{k: float(v) for k, v in self.last_stats.items() if isinstance(v, int | float)},
            }
        )

    def evaluate(self) -> None:
        """Held-out evaluation of the current policy (deterministic), logged as an ``eval`` record."""
        from lerobot_pirl.evaluate import evaluate_policy

        report = evaluate_policy(
            DeterministicSAC(self.policy), self.pre, self.post, self.env_cfg, self.eval_episodes
        )
        self.policy.train()
        self.log(
            {
                "kind": "eval",
                "eval_success_rate": report["success_rate"],
                "eval_ci95_low": report["ci95"][0],
                "eval_ci95_high": report["ci95"][1],
                "eval_episodes": report["episodes"],
            }
        )

    def step(self, stepper, obs: dict) -> tuple[dict, int]:
        """One action per env (sampled), one env step each, the transitions into the online buffer;
        returns the next observations and the env steps taken."""
        t = time.perf_counter()
        state = torch.as_tensor(obs["agent_pos"])
        with torch.no_grad():
            batch = self.pre.process_observation({OBS_STATE: state})
            action = self.post.process_action(self.policy.select_action(batch)).clamp(-1.0, 1.0)
        t_env = time.perf_counter()
        result = stepper.step_chunk(action[:, None, :].numpy())
        nxt = torch.as_tensor(result.next_obs["agent_pos"])
        for i in range(len(state)):
            self.online.add(
                state={OBS_STATE: state[i : i + 1]},
                action=action[i : i + 1],
                reward=float(result.rewards[i]),
                next_state={OBS_STATE: nxt[i : i + 1]},
                done=bool(result.terminated[i]),  # a time limit is not a terminal state: it bootstraps
                truncated=bool(result.truncated[i]),
            )
        ended = result.terminated | result.truncated
        self.episodes[ended] += 1  # reset_done starts the next one
        self.episode_success |= result.success
        self.successes += self.episode_success[ended].astype(float).tolist()
        self.episode_success[ended] = False
        obs = stepper.reset_done(result)
        self.seconds["act"] += t_env - t
        self.seconds["env"] += time.perf_counter() - t_env
        return obs, int(result.steps.sum())

    def train(self, steps: int) -> None:
        """The training steps ``steps`` env steps are owed (once the online buffer holds enough)."""
        t = time.perf_counter()
        self.owed += steps * self.settings.updates_per_env_step
        while self.owed >= 1.0 and len(self.online) >= self.settings.online_step_before_learning:
            self.last_stats = self.trainer.training_step().to_log_dict()
            self.updates += 1
            self.owed -= 1.0
        self.seconds["learn"] += time.perf_counter() - t

    def run(self, timeout_s: float | None = None) -> list[dict]:
        """Until the env-step budget (or ``timeout_s`` of training time, a resumed run's earlier time
        included); then a checkpoint and the final policy under ``out/pretrained_model``. SIGINT / SIGTERM
        stop it after the current step with a checkpoint, then raise ``KeyboardInterrupt``."""
        from lerobot_pirl.runtime.parallel import chunk_stepper

        settings = self.settings
        env_cfg = dataclasses.replace(self.env_cfg, seed=self.env_cfg.seed + self.seed_offset)
        stepper = chunk_stepper(env_cfg.create_envs(settings.num_envs)[env_cfg.type][0])

        def after(every: int) -> float:  # the first multiple of ``every`` past the env steps so far
            return (self.env_steps // every + 1) * every if every else math.inf

        next_eval, next_log, next_save = (
            after(settings.eval_every_steps),
            after(5000),
            after(settings.save_every_steps),
        )
        bar = tqdm(total=settings.env_steps, initial=self.env_steps, desc="SAC", unit="step")
        stop, handlers = stop_on_signals()
        try:
            obs = stepper.reset()
            self.policy.train()
            while (
                self.env_steps < settings.env_steps
                and (timeout_s is None or time.time() - self.t0 < timeout_s)
                and not stop.is_set()
            ):
                obs, steps = self.step(stepper, obs)
                self.env_steps += steps
                bar.update(steps)
                self.train(steps)
                if self.env_steps >= next_log or self.env_steps >= settings.env_steps:
                    next_log += 5000
                    self.progress()
                    bar.set_postfix(
                        success=f"{self.records[-1]['episode_success']:.2f}", updates=self.updates
                    )
                if self.env_steps >= next_eval:
                    next_eval += settings.eval_every_steps
                    self.evaluate()
                if self.env_steps >= next_save:
                    next_save += settings.save_every_steps
                    self.save()
            if not self.records or self.records[-1]["env_steps"] != self.env_steps:  # stopped by the time cap
                self.progress()
            self.save()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            bar.close()
            stepper.close()
        if stop.is_set():
            raise KeyboardInterrupt(
                f"SAC run stopped at {self.env_steps} env steps; continue it with --resume"
            )
        final = self.out / "pretrained_model"
        for part in (self.policy, self.pre, self.post):
            part.save_pretrained(final)
        return self.records


def stop_on_signals() -> tuple[threading.Event, dict]:
    """LeRobot's graceful-shutdown handler (SIGINT, SIGTERM, ...: sets the event; a second signal exits) and
    the handlers it replaced, to put back."""
    from lerobot.utils.process import ProcessSignalHandler

    previous = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    }
    return ProcessSignalHandler(use_threads=True).shutdown_event, previous


def run_sac(
    env_cfg,
    demos_root: Path,
    out: Path,
    settings: SACSettings,
    eval_episodes: int,
    timeout_s: float | None = None,
    resume: bool = False,
) -> list[dict]:
    """Train SAC from scratch with the demos in its offline buffer (or, ``resume``, continue the run
    under ``out`` from its last checkpoint), until ``settings.env_steps`` (or ``timeout_s`` seconds of
    training in all); writes ``metrics.jsonl`` (the πRL learner's record kinds: ``update`` with
    training-episode success, ``eval`` with held-out success), checkpoints and the final policy (LeRobot
    layout) under ``out``. Returns the records."""
    return SACRun(env_cfg, demos_root, out, settings, eval_episodes, resume).run(timeout_s)


def evaluate_sac(checkpoint: Path, env_cfg, episodes: int) -> dict:
    """Held-out evaluation of a saved SAC policy (deterministic: the tanh of the Gaussian mean)."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.gaussian_actor.modeling_gaussian_actor import GaussianActorPolicy

    from lerobot_pirl.evaluate import evaluate_policy

    policy = GaussianActorPolicy.from_pretrained(str(checkpoint))
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    return evaluate_policy(DeterministicSAC(policy), pre, post, env_cfg, episodes)
