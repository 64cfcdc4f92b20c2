"""The πRL actor: ``python -m lerobot_pirl.actor --config_path recipes/<recipe>.json``.

Steps ``env.num_envs`` environments as a batch: one batched stochastic chain sample per chunk, then
``action_chunk`` env steps, one LeRobot ``Transition`` per env per chunk (reward summed over the
executed steps; an episode that ends inside the chunk ends the transition, so none mixes two
episodes). What PPO needs rides in ``complementary_info``. New weights are picked up between chunks;
episode statistics go to the learner as (JSON) interaction messages; deterministic ODE evaluation on
held-out seeds runs every ``--eval_every`` policy versions. The actor reconnects with back-off when the
learner restarts, exits when the learner says training is over, and exits cleanly on SIGINT / SIGTERM.
Non-pi_rl configs go to LeRobot's actor.
"""

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import torch
from lerobot.configs import parser
from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.transport import services_pb2_grpc
from lerobot.transport.utils import bytes_to_state_dict, grpc_channel_options, transitions_to_bytes
from lerobot.utils.process import ProcessSignalHandler
from lerobot.utils.random_utils import set_seed
from lerobot.utils.utils import init_logging

import lerobot_pirl  # noqa: F401  (registers pi_rl with LeRobot's registries)
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import FINAL_WEIGHTS_KEY, PiRLAlgorithm
from lerobot_pirl.cli import run_cli
from lerobot_pirl.evaluate import evaluate_tasks
from lerobot_pirl.flow.sampler import ChainSample
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors
from lerobot_pirl.runtime.config import check_rebalancing, is_pi_rl, resolve_pi_rl_config
from lerobot_pirl.runtime.episodes import EpisodeTracker
from lerobot_pirl.runtime.interactions import encode_interaction
from lerobot_pirl.runtime.manipulator import ManipulatorChunkStepper
from lerobot_pirl.runtime.observations import (
    FeatureObservations,
    ObservationPipeline,
    env_task_names,
    env_tasks,
)
from lerobot_pirl.runtime.parallel import chunk_stepper
from lerobot_pirl.runtime.rebalance import EnvRebalancer
from lerobot_pirl.runtime.security import channel_credentials, learner_channel, read_token
from lerobot_pirl.runtime.streams import StreamGuard, receive_parameters, send_interactions, send_transitions
from lerobot_pirl.runtime.timing import ACTOR_PHASES, PhaseClock
from lerobot_pirl.runtime.transitions import chunk_message
from lerobot_pirl.runtime.vector import ChunkResult, ChunkStepper

logger = logging.getLogger(__name__)


@dataclass
class ActorEnv:
    """What an actor steps: a chunk stepper, how its observations become the policy's input, the task
    strings of its envs, and whether it is a robot (weights change only between its episodes)."""

    stepper: ChunkStepper | ManipulatorChunkStepper
    observations: Callable[[dict, list[str]], dict]
    tasks: list[str]
    robot: bool = False
    task_names: list[str] | None = None  # each env's task name when they play several (per-task statistics)


def make_actor_env(cfg: TrainRLServerPipelineConfig) -> ActorEnv:
    """LeRobot's ``gym_manipulator`` stack (one env, human interventions), or a vector env from the env
    config's ``create_envs`` (of ``policy.actor.num_envs`` envs for LeRobot's env configs)."""
    features = cfg.policy.input_features
    if cfg.env.type == "gym_manipulator":
        stepper = ManipulatorChunkStepper(cfg.env, cfg.policy.device)
        return ActorEnv(stepper, FeatureObservations(features), [cfg.policy.actor.task], robot=True)
    if hasattr(cfg.env, "num_envs"):  # an env config of this package: it sizes its own vector env
        envs = cfg.env.create_envs(cfg.env.num_envs)
    else:  # LeRobot's env configs: sized by the actor
        options = cfg.policy.actor
        envs = cfg.env.create_envs(options.num_envs, use_async_envs=options.async_envs)
    vec = next(iter(next(iter(envs.values())).values()))
    stepper = chunk_stepper(vec)
    observations = ObservationPipeline(cfg.env, cfg.policy, features)
    return ActorEnv(stepper, observations, env_tasks(vec), task_names=env_task_names(vec))


class StatsReporter:
    """Episode statistics, env-step rates and where the actor's time went (``clock``), sent to the learner
    every ``period_s`` seconds."""

    def __init__(self, queue: Queue, actor_id: int, period_s: float, clock: PhaseClock):
        self.queue, self.actor_id, self.period_s, self.clock = queue, actor_id, period_s, clock
        self.episodes: list[dict] = []
        self.env_counts: Callable[[], dict[str, int]] | None = None  # envs per task, when they are re-split
        self.steps_since_msg = self.total_steps = 0
        self.t_start = self.last_msg = time.time()

    def add(self, episodes: list[dict], env_steps: int) -> None:
        self.episodes += episodes
        self.steps_since_msg += env_steps
        self.total_steps += env_steps

    def maybe_send(self, policy_version: int, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_msg < self.period_s:
            return
        message = {
            "actor_id": self.actor_id,
            "env_steps": self.steps_since_msg,
            "env_steps_per_s": self.total_steps / max(now - self.t_start, 1e-9),
            "policy_version": policy_version,
            "episodes": self.episodes,
            "time_s": self.clock.take(),
            **({"env_counts": self.env_counts()} if self.env_counts is not None else {}),
        }
        self.queue.put(encode_interaction(message))
        self.episodes, self.steps_since_msg, self.last_msg = [], 0, now


class PiRLActor:
    """A πRL actor's policy, its queues to the learner's streams, and its rollout loop (:meth:`run`)."""

    def __init__(self, cfg: TrainRLServerPipelineConfig, shutdown_event):
        self.cfg = cfg
        self.shutdown_event = shutdown_event
        self.options = cfg.policy.actor
        self.actor_id = secrets.randbits(62)  # not `random`: it is seeded identically in every actor
        self.policy = PiRLPolicy(cfg.policy).eval()
        self.algorithm = PiRLAlgorithm(self.policy, cfg.algorithm)
        self.algorithm.policy_version = -1  # nothing received yet
        self.pre, self.post = make_pi_rl_pre_post_processors(self.policy.config)
        self.parameters_queue: Queue = Queue()
        self.transitions_queue: Queue = Queue()
        self.interactions_queue: Queue = Queue()
        self.device = cfg.policy.device
        self.learner_done = False  # the learner said training is over
        self._chunks_this_version = 0
        self._last_eval_version = -1
        self.clock = PhaseClock(ACTOR_PHASES)

    # ------------------------------------------------------------------ the loop
    def run(self, env: ActorEnv | None = None) -> None:
        """Sample, step and send chunks until shutdown (or the learner's end of training)."""
        env = env if env is not None else make_actor_env(self.cfg)
        n = env.stepper.num_envs
        can_evaluate = self._can_evaluate()
        clock = self.clock
        logger.info("[ACTOR %x] %d envs, waiting for the learner's weights", self.actor_id, n)
        while not self.shutdown_event.is_set() and not self.poll_weights(block=True, timeout=1.0):
            pass
        clock.take()  # the tally starts with the first weights
        obs = env.stepper.reset(
            seed=None if getattr(self.cfg.env, "seeds_episodes", False) else self.cfg.seed
        )
        episodes = EpisodeTracker(n)
        stats = StatsReporter(self.interactions_queue, self.actor_id, self.options.stats_period_s, clock)
        rebalancer = self.make_rebalancer(env)
        if rebalancer is not None:
            stats.env_counts = rebalancer.counts
        budget = self.chunks_per_version(n)
        at_episode_start = True
        while not self.shutdown_event.is_set():
            # A robot swaps weights and waits for the learner only between episodes, like LeRobot's actor.
            with clock.phase("wait"):
                may_go = self.take_chunk_budget(budget, may_swap=not env.robot or at_episode_start)
            if not may_go:
                continue
            version = self.algorithm.policy_version
            if can_evaluate:
                with clock.phase("eval"):
                    self.maybe_evaluate(version)
            raw, sample, result = self.act(env, obs)
            intervened = result.intervention_steps if result.intervention_steps is not None else np.zeros(n)
            with clock.phase("send"):
                self.queue_transitions(
                    raw,
                    env.observations(result.next_obs, env.tasks),
                    sample,
                    result,
                    intervened,
                    version,
                    episodes,
                )
                finished = episodes.record(result, intervened, env.task_names)
                stats.add(finished, int(result.steps.sum()))
                if rebalancer is not None:
                    rebalancer.record(finished)
            at_episode_start = bool((result.terminated | result.truncated).any())
            with clock.phase("env"):
                obs = self.reset_done(env, result, rebalancer)
            with clock.phase("send"):
                stats.maybe_send(self.algorithm.policy_version)
        stats.maybe_send(self.algorithm.policy_version, force=True)
        env.stepper.close()

    # ------------------------------------------------------------------ new episodes, envs per task
    def make_rebalancer(self, env: ActorEnv) -> EnvRebalancer | None:
        """What re-splits the envs over their tasks (``actor.rebalance_envs_every``), or ``None``."""
        every = self.options.rebalance_envs_every
        if not every:
            return None
        check_rebalancing(self.cfg.env)  # checked at start-up too (resolve_pi_rl_config)
        return EnvRebalancer(env.task_names or [], every)

    def reset_done(self, env: ActorEnv, result: ChunkResult, rebalancer: EnvRebalancer | None) -> dict:
        """Start new episodes in the envs the chunk ended. With a rebalancer, the envs are first re-split when
        a split is due (each env takes its new task at its next reset) and the tasks of the envs that switched
        here are read back, so the next transitions carry their new task."""
        if rebalancer is None:
            return env.stepper.reset_done(result)
        version = self.algorithm.policy_version
        if rebalancer.due(version):
            rebalancer.split(version)
            env.stepper.set_attr("next_task", rebalancer.targets)
            logger.info("[ACTOR] envs per task from policy v%d on: %s", version, rebalancer.counts())
        obs = env.stepper.reset_done(result)
        ended = result.terminated | result.truncated
        names = env.task_names or env.tasks
        if any(ended[i] and names[i] != task for i, task in enumerate(rebalancer.targets)):
            env.task_names = [str(t) for t in env.stepper.call("task")]
            env.tasks = [str(t) for t in env.stepper.call("task_description")]
        return obs

    # ------------------------------------------------------------------ pacing by policy version
    def chunks_per_version(self, num_envs: int) -> int:
        return self.options.chunks_per_env(self.cfg.algorithm.rollout_size, num_envs)

    def take_chunk_budget(self, budget: int, may_swap: bool) -> bool:
        """Whether the next chunk may be sampled now. New weights (or the same version sent again by a
        learner) start a new budget of ``budget`` chunks per env (0: unlimited); once it is spent the
        actor waits for the learner's next weights, so its rollouts stay on-policy."""
        if may_swap and self.poll_weights():
            self._chunks_this_version = 0
        if budget and self._chunks_this_version >= budget and may_swap:
            if self.poll_weights(block=True, timeout=0.5):
                self._chunks_this_version = 0
            return False
        self._chunks_this_version += 1
        return True

    def poll_weights(self, block: bool = False, timeout: float = 0.0) -> bool:
        """Load the newest weights the learner sent (if any); the learner's final weights end the run
        unless ``actor.exit_when_learner_done`` is false."""
        latest = None
        try:
            latest = self.parameters_queue.get(block=block, timeout=timeout if block else None)
            while True:
                latest = self.parameters_queue.get_nowait()
        except Empty:
            pass
        if latest is None:
            return False
        weights = bytes_to_state_dict(latest)
        final = bool(weights.pop(FINAL_WEIGHTS_KEY, torch.tensor(False)))
        self.algorithm.load_weights(weights, device=self.device)
        logger.info("[ACTOR] loaded policy version %d", self.algorithm.policy_version)
        if final and self.options.exit_when_learner_done:
            logger.info(
                "[ACTOR] the learner finished training (policy version %d): stopping",
                self.algorithm.policy_version,
            )
            self.learner_done = True
            self.shutdown_event.set()
        return True

    # ------------------------------------------------------------------ one chunk
    def act(self, env: ActorEnv, obs: dict) -> tuple[dict, ChainSample, ChunkResult]:
        """Sample one stochastic chain per env and execute its first ``action_chunk`` actions. Returns the
        observation the transitions carry (policy input features + task), the sample and the result."""
        with self.clock.phase("sample"):
            raw = env.observations(obs, env.tasks)
            with torch.inference_mode():
                sample = self.policy.sample_chain(
                    self.pre(dict(raw)), with_value=False
                )  # the learner computes values
            actions = self.post(sample.executed).cpu()
        with self.clock.phase("env"):
            result = env.stepper.step_chunk(actions.numpy())
        if result.executed_actions is None:  # what ran is what the policy sampled
            result.executed_actions = actions.numpy()
        return raw, sample, result

    def queue_transitions(
        self,
        raw: dict,
        raw_next: dict,
        sample: ChainSample,
        result: ChunkResult,
        intervened: np.ndarray,
        version: int,
        episodes: EpisodeTracker,
    ) -> None:
        """The executed chunk's transitions of every env, queued for the learner as one packed LeRobot
        ``Transition`` (:func:`~lerobot_pirl.runtime.transitions.chunk_message`)."""
        n = len(result.rewards)
        packed = chunk_message(
            raw,
            raw_next,
            torch.as_tensor(result.executed_actions),
            torch.as_tensor(result.rewards, dtype=torch.float32),
            torch.as_tensor(result.terminated),
            torch.as_tensor(result.truncated),
            sample,
            policy_version=version,
            actor_id=self.actor_id,
            env_ids=torch.arange(n),
            success=torch.as_tensor(result.success, dtype=torch.float32),
            intervention=torch.as_tensor(intervened > 0),
            steps=torch.as_tensor(result.steps),
            **episodes.ids(),
        )
        self.transitions_queue.put(transitions_to_bytes([packed]))

    # ------------------------------------------------------------------ evaluation
    def _can_evaluate(self) -> bool:
        if hasattr(self.cfg.env, "make_eval_env"):
            return True
        if self.options.eval_every:
            logger.warning(
                "[ACTOR] env type %r has no held-out evaluation envs: actor.eval_every is ignored "
                "(training-episode success is still reported)",
                self.cfg.env.type,
            )
        return False

    def maybe_evaluate(self, version: int) -> None:
        """Evaluate each policy version that is a multiple of ``actor.eval_every`` once."""
        every = self.options.eval_every
        if every and version >= 0 and version % every == 0 and version != self._last_eval_version:
            self._last_eval_version = version
            self.evaluate(version)

    def evaluate(self, version: int) -> None:
        """Held-out ODE evaluation with the protocol of :data:`lerobot_pirl.seeds.EVAL_PROTOCOL` (the
        env's ``eval_seed``, ``actor.eval_episodes``; per task for a multi-task env), reported to the
        learner."""
        videos_dir = Path(self.cfg.output_dir) / "videos" / f"v{version}"
        report = evaluate_tasks(
            self.policy,
            self.pre,
            self.post,
            self.cfg.env,
            self.options.eval_episodes,
            videos=self.options.eval_videos,
            videos_dir=videos_dir,
        )
        logger.info("[ACTOR] eval of policy v%d: success %.3f", version, report["success_rate"])
        message = {
            "actor_id": self.actor_id,
            "policy_version": version,
            "eval_success_rate": report["success_rate"],
            "eval_ci95_low": report["ci95"][0],
            "eval_ci95_high": report["ci95"][1],
            "eval_episodes": report["episodes"],
            "eval_mean_return": report["mean_return"],
            **{f"eval_success_rate/{t}": r["success_rate"] for t, r in report.get("tasks", {}).items()},
            **({"eval_videos": report["videos"]} if report.get("videos") else {}),
        }
        self.interactions_queue.put(encode_interaction(message))


def prepare_actor(cfg: TrainRLServerPipelineConfig) -> Callable[[], None]:
    """Start-up: check the config, set up logging and seeds, build the actor. Returns the run."""
    if not is_pi_rl(cfg):
        from lerobot.rl.actor import actor_cli

        return lambda: actor_cli(cfg)
    # The actor shares the learner's output_dir, which exists already: no full validate() here.
    cfg = resolve_pi_rl_config(cfg)
    channel_credentials(cfg.policy.transport)  # certificate files and the token, checked at start-up
    read_token(cfg.policy.transport)
    out = Path(cfg.output_dir)
    os.makedirs(out / "logs", exist_ok=True)
    init_logging(log_file=str(out / "logs" / f"actor_{cfg.job_name}_{os.getpid()}.log"))
    set_seed(cfg.seed if cfg.seed is not None else 0)
    torch.set_num_threads(cfg.policy.actor.torch_threads)
    shutdown = ProcessSignalHandler(use_threads=True).shutdown_event
    actor = PiRLActor(cfg, shutdown)
    return lambda: run_actor(actor)


def run_actor(actor: PiRLActor) -> None:
    """The actor's loop with its three streams to the learner; exits 1 when the learner stays unreachable."""
    cfg = actor.cfg
    acfg = cfg.policy.actor_learner_config
    channel = learner_channel(
        acfg.learner_host, acfg.learner_port, cfg.policy.transport, grpc_channel_options()
    )
    client = services_pb2_grpc.LearnerServiceStub(channel)
    guard = StreamGuard(actor.shutdown_event, actor.options.max_reconnects)
    timeout = acfg.queue_get_timeout
    threads = [
        guard.start(name, lambda f=stream, q=q: f(client, q, actor.shutdown_event, timeout))
        for name, stream, q in (
            ("parameters", receive_parameters, actor.parameters_queue),
            ("transitions", send_transitions, actor.transitions_queue),
            ("interactions", send_interactions, actor.interactions_queue),
        )
    ]
    try:
        actor.run()
    finally:
        actor.shutdown_event.set()
        time.sleep(0.2)
        channel.close()  # cancels the streams' open calls ...
        for thread in threads:  # ... so they return: none may still be inside gRPC when the process exits
            thread.join(timeout=5.0)
        logger.info("[ACTOR] stopped")
    if guard.gave_up:
        raise SystemExit(1)


@parser.wrap()
def actor_cli(cfg: TrainRLServerPipelineConfig) -> Callable[[], None]:
    return prepare_actor(cfg)


def main() -> None:
    run_cli(actor_cli)


if __name__ == "__main__":
    main()
