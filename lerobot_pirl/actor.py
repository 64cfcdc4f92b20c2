"""The πRL actor: ``python -m lerobot_pirl.actor --config_path recipes/<recipe>.json``.

Steps ``env.num_envs`` environments as a batch: one batched stochastic chain sample per chunk, then
``action_chunk`` env steps, one LeRobot ``Transition`` per env per chunk (reward summed over the
executed steps; an episode that ends inside the chunk ends the transition, so none mixes two
episodes). What PPO needs rides in ``complementary_info``. New weights are picked up between chunks;
episode statistics go to the learner as (JSON) interaction messages; deterministic ODE evaluation on
held-out seeds runs every ``--eval_every`` policy versions. The actor reconnects with back-off when the
learner restarts and exits cleanly on SIGINT / SIGTERM. Non-pi_rl configs go to LeRobot's actor.
"""

import logging
import os
import random
import secrets
import threading
import time
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import torch
from lerobot.configs import parser
from lerobot.rl.actor import learner_service_client, receive_policy, send_interactions, send_transitions
from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.transport.utils import bytes_to_state_dict, transitions_to_bytes
from lerobot.utils.process import ProcessSignalHandler
from lerobot.utils.random_utils import set_seed
from lerobot.utils.utils import init_logging

import lerobot_pirl  # noqa: F401  (registers pi_rl with LeRobot's registries)
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm
from lerobot_pirl.cli import run_cli
from lerobot_pirl.evaluate import evaluate_policy
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors
from lerobot_pirl.runtime.config import is_pi_rl, resolve_pi_rl_config
from lerobot_pirl.runtime.interactions import encode_interaction
from lerobot_pirl.runtime.manipulator import ManipulatorChunkStepper
from lerobot_pirl.runtime.observations import FeatureObservations, ObservationPipeline, env_tasks
from lerobot_pirl.runtime.transitions import chunk_transitions
from lerobot_pirl.runtime.vector import ChunkStepper

logger = logging.getLogger(__name__)


def with_reconnect(name: str, fn, cfg, q: Queue, shutdown_event, max_attempts: int) -> None:
    """Run one of LeRobot's streaming loops; when the stream drops, retry with back-off (bounded)."""
    attempt = 0
    while not shutdown_event.is_set():
        started = time.time()
        fn(cfg, q, shutdown_event)
        if shutdown_event.is_set():
            return
        attempt = 0 if time.time() - started > 30 else attempt + 1
        if attempt > max_attempts:
            logger.error("[ACTOR] %s: learner unreachable after %d attempts, stopping", name, max_attempts)
            shutdown_event.set()
            return
        delay = min(0.5 * 2**attempt, 10.0) * (0.8 + 0.4 * random.random())
        logger.warning(
            "[ACTOR] %s stream closed; reconnecting in %.1fs (attempt %d/%d)",
            name,
            delay,
            attempt,
            max_attempts,
        )
        shutdown_event.wait(delay)


class PiRLActor:
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

    # ------------------------------------------------------------------ weights
    def poll_weights(self, block: bool = False, timeout: float = 0.0) -> bool:
        latest = None
        try:
            latest = self.parameters_queue.get(block=block, timeout=timeout if block else None)
            while True:
                latest = self.parameters_queue.get_nowait()
        except Empty:
            pass
        if latest is None:
            return False
        self.algorithm.load_weights(bytes_to_state_dict(latest), device=self.device)
        logger.info("[ACTOR] loaded policy version %d", self.algorithm.policy_version)
        return True

    # ------------------------------------------------------------------ rollouts
    def observe(self, obs: dict) -> tuple[dict, dict]:
        """The observation transitions carry (policy input features + task) and the batch the policy reads."""
        raw = self.observations(obs, self.tasks)
        return raw, self.pre(dict(raw))

    def make_env(self):
        """The chunk stepper: LeRobot's ``gym_manipulator`` stack (one env, human interventions), or a
        vector env from the env config's ``create_envs``."""
        cfg = self.cfg
        features = self.policy.config.input_features
        if cfg.env.type == "gym_manipulator":
            self.observations = FeatureObservations(features)
            self.tasks = [self.options.task]
            return ManipulatorChunkStepper(cfg.env, cfg.policy.device)
        envs = cfg.env.create_envs(cfg.env.num_envs if hasattr(cfg.env, "num_envs") else 1)
        vec = next(iter(next(iter(envs.values())).values()))
        self.observations = ObservationPipeline(cfg.env, cfg.policy, features)
        self.tasks = env_tasks(vec)
        return ChunkStepper(vec)

    def run(self, stepper=None) -> None:
        cfg = self.cfg
        stepper = stepper if stepper is not None else self.make_env()
        n = stepper.num_envs
        can_evaluate = hasattr(cfg.env, "make_eval_env")
        if self.options.eval_every and not can_evaluate:
            logger.warning(
                "[ACTOR] env type %r has no held-out evaluation envs: actor.eval_every is ignored "
                "(training-episode success is still reported)",
                cfg.env.type,
            )
        logger.info("[ACTOR %x] %d envs, waiting for the learner's weights", self.actor_id, n)
        while not self.shutdown_event.is_set() and not self.poll_weights(block=True, timeout=1.0):
            pass
        obs = stepper.reset(seed=None if getattr(cfg.env, "seeds_episodes", False) else cfg.seed)
        episode_ids = torch.zeros(n, dtype=torch.long)
        chunk_idx = torch.zeros(n, dtype=torch.long)
        ep_return, ep_len, ep_intervened = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n, dtype=int)
        pending_episodes, steps_since_msg, last_msg = [], 0, time.time()
        last_eval_version = -1
        t_start, total_steps = time.time(), 0
        budget = self.chunks_per_version(n)
        chunks_this_version = 0
        # A robot (one env, gym_manipulator) swaps weights and waits for the learner only between
        # episodes, like LeRobot's actor: never a pause, nor two policies, in the middle of an episode.
        swap_anytime = not isinstance(stepper, ManipulatorChunkStepper)
        at_episode_start = True
        while not self.shutdown_event.is_set():
            may_swap = swap_anytime or at_episode_start
            if may_swap and self.poll_weights():
                # New weights, or the same version pushed again by a restarted learner: a new budget.
                chunks_this_version = 0
            if budget and chunks_this_version >= budget and may_swap:
                # One rollout per version is in: wait for the learner's next weights (stay on-policy).
                if self.poll_weights(block=True, timeout=0.5):
                    chunks_this_version = 0
                continue
            version = self.algorithm.policy_version
            chunks_this_version += 1
            if (
                self.options.eval_every
                and can_evaluate
                and version >= 0
                and version % self.options.eval_every == 0
                and version != last_eval_version
            ):
                last_eval_version = version
                self.evaluate(version)
            raw, batch = self.observe(obs)
            with torch.no_grad():
                sample = self.policy.sample_chain(batch, with_value=False)  # values come from the learner
            env_actions = self.post(sample.executed).cpu()
            result = stepper.step_chunk(env_actions.numpy())
            raw_next, _ = self.observe(result.next_obs)
            intervened = result.intervention_steps if result.intervention_steps is not None else np.zeros(n)
            transitions = chunk_transitions(
                raw,
                raw_next,
                env_actions if result.executed_actions is None else torch.as_tensor(result.executed_actions),
                torch.as_tensor(result.rewards, dtype=torch.float32),
                torch.as_tensor(result.terminated),
                torch.as_tensor(result.truncated),
                sample,
                policy_version=version,
                actor_id=self.actor_id,
                env_ids=torch.arange(n),
                episode_ids=episode_ids.clone(),
                chunk_indices=chunk_idx.clone(),
                success=torch.as_tensor(result.success, dtype=torch.float32),
                intervention=torch.as_tensor(intervened > 0),
            )
            self.transitions_queue.put(transitions_to_bytes(transitions))
            chunk_idx += 1
            ep_return += result.rewards
            ep_len += result.steps
            ep_intervened += intervened.astype(int)
            steps_since_msg += int(result.steps.sum())
            total_steps += int(result.steps.sum())
            for i in np.flatnonzero(result.terminated | result.truncated):
                pending_episodes.append(
                    {
                        "return": float(ep_return[i]),
                        "success": float(result.episode_success[i]),
                        "length": int(ep_len[i]),
                        "intervention_rate": float(ep_intervened[i]) / max(int(ep_len[i]), 1),
                    }
                )
                ep_return[i], ep_len[i], ep_intervened[i] = 0.0, 0, 0
                episode_ids[i] += 1
            at_episode_start = bool((result.terminated | result.truncated).any())
            obs = stepper.reset_done(result)
            if time.time() - last_msg >= self.options.stats_period_s:
                self.send_stats(pending_episodes, steps_since_msg, total_steps / (time.time() - t_start))
                pending_episodes, steps_since_msg, last_msg = [], 0, time.time()
        self.send_stats(pending_episodes, steps_since_msg, total_steps / max(time.time() - t_start, 1e-9))
        stepper.close()

    def chunks_per_version(self, num_envs: int) -> int:
        if self.options.chunks_per_version is not None:
            return self.options.chunks_per_version
        return -(-self.cfg.algorithm.rollout_size // num_envs)

    def send_stats(self, episodes: list[dict], env_steps: int, sps: float) -> None:
        self.interactions_queue.put(
            encode_interaction(
                {
                    "actor_id": self.actor_id,
                    "env_steps": env_steps,
                    "env_steps_per_s": sps,
                    "policy_version": self.algorithm.policy_version,
                    "episodes": episodes,
                }
            )
        )

    def evaluate(self, version: int) -> None:
        report = evaluate_policy(self.policy, self.pre, self.post, self.cfg.env, self.options.eval_episodes)
        logger.info("[ACTOR] eval of policy v%d: success %.3f", version, report["success_rate"])
        self.interactions_queue.put(
            encode_interaction(
                {
                    "actor_id": self.actor_id,
                    "policy_version": version,
                    "eval_success_rate": report["success_rate"],
                    "eval_ci95_low": report["ci95"][0],
                    "eval_ci95_high": report["ci95"][1],
                    "eval_episodes": report["episodes"],
                    "eval_mean_return": report["mean_return"],
                }
            )
        )


def run_actor(cfg: TrainRLServerPipelineConfig) -> None:
    if not is_pi_rl(cfg):
        from lerobot.rl.actor import actor_cli

        actor_cli(cfg)
        return
    # The actor shares the learner's output_dir, which exists already: no full validate() here.
    cfg = resolve_pi_rl_config(cfg)
    out = Path(cfg.output_dir)
    os.makedirs(out / "logs", exist_ok=True)
    init_logging(log_file=str(out / "logs" / f"actor_{cfg.job_name}_{os.getpid()}.log"))
    set_seed(cfg.seed if cfg.seed is not None else 0)
    torch.set_num_threads(cfg.policy.actor.torch_threads)
    shutdown = ProcessSignalHandler(use_threads=True).shutdown_event
    actor = PiRLActor(cfg, shutdown)
    acfg = cfg.policy.actor_learner_config
    client, channel = learner_service_client(host=acfg.learner_host, port=acfg.learner_port)
    max_attempts = actor.options.max_reconnects
    threads = [
        threading.Thread(
            target=with_reconnect,
            args=(name, lambda c, q, s, f=fn: f(c, q, s, client, channel), cfg, q, shutdown, max_attempts),
            daemon=True,
        )
        for name, fn, q in (
            ("parameters", receive_policy, actor.parameters_queue),
            ("transitions", send_transitions, actor.transitions_queue),
            ("interactions", send_interactions, actor.interactions_queue),
        )
    ]
    for t in threads:
        t.start()
    try:
        actor.run()
    finally:
        shutdown.set()
        time.sleep(0.2)
        channel.close()
        logger.info("[ACTOR] stopped")


@parser.wrap()
def actor_cli(cfg: TrainRLServerPipelineConfig) -> None:
    run_actor(cfg)


def main() -> None:
    run_cli(actor_cli)


if __name__ == "__main__":
    main()
