"""The πRL learner: ``python -m lerobot_pirl.learner --config_path recipes/<recipe>.json``.

Same CLI as ``python -m lerobot.rl.learner`` (draccus ``TrainRLServerPipelineConfig``, dotted
overrides, ``--resume=true``, ``--wandb.enable=true``). For ``pi_rl`` runs it serves LeRobot's gRPC
learner service (with parameter broadcast), assembles on-policy rollouts from the actors'
transitions, runs the PPO/GRPO update when ``algorithm.rollout_size`` usable transitions are in,
pushes the new weights with an incremented policy version right after each update, logs the
diagnostics (console, ``metrics.jsonl``, wandb) and writes LeRobot checkpoints. Other runs (SAC) are
handed to LeRobot's own learner.

Launched with ``accelerate launch -m lerobot_pirl.learner`` (or ``torchrun``) as N processes, rank 0 is
the learner above and the other ranks are :class:`UpdateFollower` s: they receive every prepared rollout
and compute the gradients of their share of each minibatch, averaged by DDP.
"""

import json
import logging
import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from lerobot.configs import parser
from lerobot.policies.factory import make_pre_post_processors
from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.transport.utils import state_to_bytes
from lerobot.utils.process import ProcessSignalHandler
from lerobot.utils.random_utils import set_seed
from lerobot.utils.utils import init_logging

import lerobot_pirl  # noqa: F401  (registers pi_rl with LeRobot's registries)
from lerobot_pirl.algorithms.pi_rl.offline import OfflineBuffer, feature_mismatch
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import FINAL_WEIGHTS_KEY, PiRLAlgorithm
from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from lerobot_pirl.cli import run_cli
from lerobot_pirl.hub import HubPusher, check_hub_access, model_card
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors
from lerobot_pirl.runtime.checkpoint import (
    OFFLINE_DIR,
    last_checkpoint_dir,
    pretrained_dir,
    restore_training_state,
    save_run_checkpoint,
)
from lerobot_pirl.runtime.config import check_fresh_output_dir, is_pi_rl, resolve_pi_rl_config
from lerobot_pirl.runtime.distributed import launched_distributed, make_accelerator
from lerobot_pirl.runtime.interactions import EpisodeLog, decode_interaction, env_count_record
from lerobot_pirl.runtime.metrics_log import evaluated_versions, trim_for_resume, wall_at_update
from lerobot_pirl.runtime.security import (
    RateLimit,
    TokenCheck,
    check_learner_exposure,
    read_token,
    server_credentials,
)
from lerobot_pirl.runtime.service import BroadcastLearnerService, WeightsBoard, start_server, stop_server
from lerobot_pirl.runtime.timing import LEARNER_PHASES, PhaseClock, time_record
from lerobot_pirl.runtime.transitions import decode_transitions
from lerobot_pirl.transition_keys import ACTOR_ID, INTERVENTION, STEPS

logger = logging.getLogger(__name__)

# How long a finished learner waits for its final weights (the end-of-training signal) to reach every
# connected actor before it stops serving.
FINAL_DELIVERY_S = 10.0
# How long a finished learner waits for its last Hub push before it exits.
FINAL_PUSH_WAIT_S = 3600.0
# Numeric fields of a record that are ids, not metrics (kept in metrics.jsonl, not sent to wandb).
NOT_METRICS = frozenset({"actor_id"})
# Seconds an actor's last report counts in the actors' sums (env steps/s, envs per task): a stopped actor's drops out.
ACTOR_REPORT_WINDOW_S = 60.0
# The collective steps rank 0 tells the other learner processes to run (see ``UpdateFollower``).
FOLLOW_ROLLOUT, FOLLOW_INPUTS = "update on a prepared rollout", "update on rollout inputs"
FOLLOW_WEIGHTS, FOLLOW_CHECKPOINT = "gather the actor weights", "gather the checkpoint state"


def build_update_side(cfg: TrainRLServerPipelineConfig, accelerator=None):
    """What every learner process trains: the policy and its algorithm (optimisers, counters), restored
    from the last checkpoint when resuming, then spread over ``accelerator``'s processes. Returns the
    policy, the algorithm, the checkpoint resumed from (or None), the update count and the env steps."""
    ckpt = last_checkpoint_dir(cfg.output_dir).resolve() if cfg.resume else None
    if ckpt is not None:
        logger.info("[LEARNER] resuming from %s", ckpt)
        policy = PiRLPolicy.from_pretrained(pretrained_dir(ckpt), config=cfg.policy)
    else:
        policy = PiRLPolicy(cfg.policy)
    policy.train()
    algorithm = PiRLAlgorithm(policy, cfg.algorithm)
    algorithm.make_optimizers_and_scheduler()  # Adam per parameter group, before any resume
    update_count, env_steps = 0, 0
    if ckpt is not None:
        update_count, env_steps = restore_training_state(ckpt, algorithm)
        logger.info(
            "[LEARNER] resumed: update %d, policy version %d, %d env steps",
            update_count,
            algorithm.policy_version,
            env_steps,
        )
    if accelerator is not None:
        algorithm.distribute(accelerator)
    return policy, algorithm, ckpt, update_count, env_steps


def _sender(transitions: list) -> int | None:
    """The actor id a message's transitions carry (None when unreadable: such peers share one bucket)."""
    try:
        return int(transitions[0]["complementary_info"][ACTOR_ID])
    except Exception:
        return None


class PiRLLearner:
    """State and loop of a πRL learner (one object so tests can drive it in-process); with several
    learner processes, this is rank 0."""

    def __init__(self, cfg: TrainRLServerPipelineConfig, shutdown_event, accelerator=None):
        self.cfg = cfg
        self.shutdown_event = shutdown_event
        # Who may connect, checked before anything is built: TLS credentials and the actor token.
        transport = cfg.policy.transport
        self.server_credentials = server_credentials(transport)
        token = read_token(transport)
        self.token_check = TokenCheck(token) if token else None
        host = cfg.policy.actor_learner_config.learner_host
        check_learner_exposure(host, self.server_credentials is not None, token, transport)
        check_hub_access(cfg.policy.push_to_hub, cfg.policy.repo_id)
        rate = transport.max_transitions_per_s
        self.transition_rate = RateLimit(rate) if rate is not None else None
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)  # metrics.jsonl and checkpoints go here
        self.policy, self.algorithm, ckpt, self.update_count, self.env_steps = build_update_side(
            cfg, accelerator
        )
        if ckpt is not None:
            self.pre, self.post = make_pre_post_processors(
                self.policy.config,
                pretrained_path=str(pretrained_dir(ckpt)),
                preprocessor_overrides={"device_processor": {"device": str(cfg.policy.device)}},
            )
        else:
            self.pre, self.post = make_pi_rl_pre_post_processors(self.policy.config)
        self.offline = self.make_offline_buffer()
        self.offline_generator = torch.Generator().manual_seed(cfg.algorithm.seed + 1)
        if self.offline is not None:
            self.algorithm.offline_source = self.offline_batch
            if cfg.resume and (ckpt / OFFLINE_DIR).is_dir():
                self.offline.load(ckpt / OFFLINE_DIR)
            elif cfg.resume:
                logger.warning(
                    "[LEARNER] %s has no offline corrections (hybrid was off): none restored", ckpt
                )
        self.buffer = RolloutBuffer(self.algorithm.transition_spec())
        self.board = WeightsBoard()
        self.transition_queue: queue.Queue = queue.Queue()
        self.interaction_queue: queue.Queue = queue.Queue()
        self.episodes = EpisodeLog()
        self.actor_rates: dict[int, tuple[float, float]] = {}  # actor id -> (env steps / s, time reported)
        self.actor_times: dict[str, float] = defaultdict(float)  # actor phase -> seconds (all actors)
        self.env_counts: dict[int, tuple[dict, float]] = {}  # actor id -> (envs per task, time reported)
        self.clock = PhaseClock(LEARNER_PHASES)
        self.metrics_path = self.out / "metrics.jsonl"
        # Time of the last transition message or update; None until the first transition arrives.
        self.last_arrival: float | None = None
        self.t0 = time.time()
        # Resumed: the log continues from the checkpoint (records past it dropped, its clock carried on),
        # and the versions evaluated before are not logged twice.
        self.evaluated_before: set[int] = set()
        if ckpt is not None:
            kept = trim_for_resume(self.metrics_path, self.update_count, self.algorithm.policy_version)
            self.t0 -= wall_at_update(kept, self.update_count)
            self.evaluated_before = evaluated_versions(kept)
        self.service: BroadcastLearnerService | None = None  # serving once run() starts
        self.pusher = (
            HubPusher(
                cfg.policy.repo_id, cfg.policy.private, self.model_card, self.out / "training_curves.png"
            )
            if cfg.policy.push_to_hub and cfg.policy.repo_id
            else None
        )
        self.checkpoints_saved, self.last_pushed = 0, None
        self.wandb = None
        if cfg.wandb.enable and cfg.wandb.project:
            from lerobot.common.wandb_utils import WandBLogger

            self.wandb = WandBLogger(cfg)
            import wandb

            for mode in ("train", "eval"):  # env steps, not wandb's call counter, are every curve's x-axis
                wandb.define_metric(f"{mode}/*", step_metric=f"{mode}/env_steps")

    def make_offline_buffer(self) -> OfflineBuffer | None:
        """The hybrid mode's offline buffer (``algorithm.offline_loss_coef`` > 0): the demo chunks of
        ``cfg.dataset`` when given (read with the base policy's action-chunk delta timestamps), plus the
        human-corrected chunks that arrive; None in online-only mode."""
        cfg = self.cfg
        if cfg.algorithm.offline_loss_coef <= 0:
            if cfg.dataset is not None:
                logger.warning(
                    "[LEARNER] --dataset is unused: algorithm.offline_loss_coef is 0 (online only)"
                )
            return None
        demos = None
        if cfg.dataset is not None:
            from lerobot.datasets import make_dataset

            demos = make_dataset(cfg)  # delta timestamps from the pi_rl config, i.e. the base's action chunk
            wanted = {**self.policy.config.input_features, **self.policy.config.output_features}
            problem = feature_mismatch(demos.meta.features, wanted)
            if problem is not None:
                raise ValueError(f"dataset {cfg.dataset.repo_id}: {problem}")
        buffer = OfflineBuffer(self.policy.adapter.chunk_size, cfg.algorithm.correction_capacity, demos)
        logger.info(
            "[LEARNER] hybrid: offline buffer of %d demo chunks%s, corrections up to %d",
            buffer.num_demos,
            f" from {cfg.dataset.repo_id}" if demos is not None else "",
            cfg.algorithm.correction_capacity,
        )
        return buffer

    def offline_batch(self, n: int) -> dict | None:
        """``n`` offline chunks, preprocessed like every learner input (None while the buffer is empty)."""
        raw = self.offline.sample(n, self.offline_generator)
        return None if raw is None else self.pre(raw)

    def keep_correction(self, transition) -> None:
        """A valid transition a human corrected joins the offline buffer with the actions that ran."""
        info = transition["complementary_info"]
        if self.offline is None or not bool(info.get(INTERVENTION, False)):
            return
        steps = info.get(STEPS)
        try:
            self.offline.add_correction(
                transition["state"], transition["action"], None if steps is None else int(steps)
            )
        except Exception as e:  # a correction must never crash the learner; PPO still uses the transition
            self.buffer.rejected[f"unusable correction ({type(e).__name__})"] += 1
            logger.warning("[LEARNER] a corrected chunk could not join the offline buffer: %s", e)

    # ------------------------------------------------------------------ plumbing
    def push_weights(self, final: bool = False) -> None:
        """Publish the actor weights to every actor; ``final`` tells them training is over."""
        if self.algorithm.sharded:  # gathered by every process
            self.tell_followers(FOLLOW_WEIGHTS)
        weights = self.algorithm.get_weights()
        if final:
            weights[FINAL_WEIGHTS_KEY] = torch.tensor(True)
        self.board.publish(self.algorithm.policy_version, state_to_bytes(weights))
        logger.info(
            "[LEARNER] published policy version %d%s", self.algorithm.policy_version, " (final)" * final
        )

    def env_steps_per_s(self) -> float:
        """The actors' env steps per second, summed over the actors that reported in the last minute."""
        recent = time.time() - ACTOR_REPORT_WINDOW_S
        return sum(rate for rate, at in self.actor_rates.values() if at >= recent)

    @property
    def done(self) -> bool:
        return self.update_count >= self.cfg.policy.online_steps

    def log(self, record: dict) -> None:
        record = {"wall_s": round(time.time() - self.t0, 3), "env_steps": self.env_steps, **record}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log_dict(
                {k: v for k, v in record.items() if isinstance(v, int | float) and k not in NOT_METRICS},
                mode="eval" if record.get("kind") == "eval" else "train",
                custom_step_key="env_steps",
            )

    def drain(self) -> None:
        while True:
            try:
                payload = self.transition_queue.get_nowait()
            except queue.Empty:
                break
            self.last_arrival = time.time()
            try:
                transitions = decode_transitions(payload)
            except Exception as e:  # a corrupt message must not kill the learner
                self.buffer.rejected[f"undecodable transition message ({type(e).__name__})"] += 1
                logger.warning("[LEARNER] dropped an undecodable transition message: %s", e)
                continue
            if self.transition_rate is not None and not self.transition_rate.allow(
                _sender(transitions), len(transitions)
            ):
                self.buffer.rejected["over policy.transport.max_transitions_per_s"] += len(transitions)
                logger.warning("[LEARNER] dropped %d transitions over an actor's rate cap", len(transitions))
                continue
            self.buffer.add(transitions, self.keep_correction)
        while True:
            try:
                payload = self.interaction_queue.get_nowait()
            except queue.Empty:
                break
            message = decode_interaction(payload)
            if message is None:
                self.buffer.rejected["invalid interaction message"] += 1
                continue
            self.env_steps += int(message.get("env_steps", 0))
            self.episodes.add(message.get("episodes", []))
            rate = message.get("env_steps_per_s")
            if isinstance(rate, int | float) and isinstance(message.get("actor_id"), int):
                self.actor_rates[message["actor_id"]] = (float(rate), time.time())
            for phase, seconds in message.get("time_s", {}).items():
                self.actor_times[phase] += seconds
            if "env_counts" in message and isinstance(message.get("actor_id"), int):
                self.env_counts[message["actor_id"]] = (message["env_counts"], time.time())
            if "eval_success_rate" in message and self.new_evaluation(message.get("policy_version")):
                self.log({"kind": "eval", **{k: v for k, v in message.items() if k != "episodes"}})
                logger.info(
                    "[LEARNER] eval (policy v%s): success %.3f over %s episodes",
                    message.get("policy_version"),
                    message["eval_success_rate"],
                    message.get("eval_episodes"),
                )
                self.log_videos(message.get("eval_videos", []))

    def new_evaluation(self, version) -> bool:
        """Whether an actor's evaluation of ``version`` belongs in the log: not of a version this run has not
        reached (an actor still holding weights from before a resume), nor of one evaluated before it."""
        if isinstance(version, int) and (
            version > self.algorithm.policy_version or version in self.evaluated_before
        ):
            logger.info("[LEARNER] evaluation of policy v%d not logged (from before the resume)", version)
            return False
        return True

    def log_videos(self, paths: list[str]) -> None:
        """An evaluation's MP4s to wandb (those on this machine: a remote actor's stay on its disk)."""
        if self.wandb is None:
            return
        import wandb

        for path in paths:
            if Path(path).is_file():
                wandb.log({"eval/video": wandb.Video(path, format="mp4"), "eval/env_steps": self.env_steps})

    # ------------------------------------------------------------------ one update
    def maybe_update(self) -> bool:
        alg_cfg = self.cfg.algorithm
        version = self.algorithm.policy_version
        if self.buffer.num_usable(version, alg_cfg.max_policy_lag) < alg_cfg.rollout_size:
            return False
        t_start = time.time()
        clock = self.clock
        with clock.phase("prepare"):
            batch, dropped = self.buffer.take(version, alg_cfg.max_policy_lag, limit=2 * alg_cfg.rollout_size)
            rollout = self.prepare_on_every_rank(batch)
        with clock.phase("optimise"):
            stats = self.algorithm.update_on(rollout).to_log_dict()
        self.update_count += 1
        with clock.phase("publish"):
            self.push_weights(final=self.done)
        update_s = time.time() - t_start
        if self.cfg.save_checkpoint and (self.update_count % max(self.cfg.save_freq, 1) == 0 or self.done):
            with clock.phase("checkpoint"):
                self.save()
        actor_times, self.actor_times = self.actor_times, defaultdict(float)
        record = {
            "kind": "update",
            "update": self.update_count,
            **self.algorithm.rollout_stats(rollout, batch, dropped),
            **stats,
            **self.episodes.summary(),
            **env_count_record(self.env_counts, since=time.time() - ACTOR_REPORT_WINDOW_S),
            **(self.offline.counts() if self.offline is not None else {}),
            "env_steps_per_s": self.env_steps_per_s(),
            "transitions_rejected": float(sum(self.buffer.rejected.values())),
            "calls_rejected": float(self.token_check.rejected if self.token_check else 0),
            "messages_refused": float(sum(self.service.refused.values()))
            if self.service is not None
            else 0.0,
            "update_s": round(update_s, 3),
            **time_record(actor_times, clock.take()),
        }
        record["policy_version"] = self.algorithm.policy_version
        self.log(record)
        logger.info(
            "[LEARNER] update %d -> v%d | %d transitions (%d stale) | env steps %d | success %.3f | "
            "actor %.4f value %.4f ent %.3f kl %.2e clip %.3f ratio[%.3f, %.3f] guard %.1e ev %.3f | %.2fs",
            self.update_count,
            self.algorithm.policy_version,
            len(rollout),
            dropped,
            self.env_steps,
            record.get("episode_success", float("nan")),
            stats["actor_loss"],
            stats["value_loss"],
            stats["entropy"],
            stats["approx_kl"],
            stats["clip_fraction"],
            stats["ratio_min"],
            stats["ratio_max"],
            stats["ratio_guard_max_dev"],
            record["explained_variance"],
            record["update_s"],
        )
        return True

    def tell_followers(self, kind: str, payload=None) -> None:
        """Tell the other learner processes which collective step comes next (see ``UpdateFollower``)."""
        if self.algorithm.ranks.distributed:
            self.algorithm.ranks.broadcast((kind, payload))

    def prepare_on_every_rank(self, batch):
        """The prepared rollout, on every learner process: prepared here and sent (DDP), or, sharded, its
        policy inputs sent and its values computed by all processes together."""
        alg = self.algorithm
        if alg.sharded:
            inputs = alg.rollout_inputs(batch, self.pre)
            self.tell_followers(FOLLOW_INPUTS, inputs.to("cpu"))
            return alg.score_rollout(inputs)
        rollout = alg.prepare_rollout(batch, self.pre)
        self.tell_followers(FOLLOW_ROLLOUT, rollout.to("cpu"))
        return rollout

    def resend_if_starved(self) -> bool:
        """Send the current weights again after ``policy.learner_resend_s`` seconds without a transition:
        every actor takes them as a new chunk budget. Actors with exact budgets otherwise wait forever for
        a rollout that a lost message (a stream broken mid-message) left short. Not before the first
        transition: until then no actor has spent a budget (they are still starting)."""
        wait = self.cfg.policy.learner_resend_s
        if wait is None or self.last_arrival is None or time.time() - self.last_arrival < wait:
            return False
        self.last_arrival = time.time()
        if not self.board.republish():
            return False
        logger.warning(
            "[LEARNER] no transitions for %.0fs with %d/%d usable: re-sent policy version %d",
            wait,
            self.buffer.num_usable(self.algorithm.policy_version, self.cfg.algorithm.max_policy_lag),
            self.cfg.algorithm.rollout_size,
            self.algorithm.policy_version,
        )
        return True

    def model_card(self, checkpoint: Path) -> str:
        """The model card of a push: the run's last held-out evaluation and env steps."""
        from lerobot_pirl.plot import read_metrics

        evals = [r for r in read_metrics(self.metrics_path) if r.get("kind") == "eval"]
        has_plot = (self.out / "training_curves.png").is_file()
        return model_card(self.cfg, evals[-1] if evals else None, self.env_steps, has_plot)

    def push(self, checkpoint: Path) -> None:
        """Hand a checkpoint to the background pusher (once)."""
        if self.pusher is not None and checkpoint != self.last_pushed:
            self.pusher.submit(checkpoint)
            self.last_pushed = checkpoint

    def save(self) -> None:
        extra = None if self.offline is None else {OFFLINE_DIR: self.offline.save}
        full_state = None
        if self.algorithm.sharded:  # the whole state, gathered by every process
            self.tell_followers(FOLLOW_CHECKPOINT)
            full_state = self.algorithm.full_training_state()
        checkpoint = save_run_checkpoint(
            self.cfg,
            self.update_count,
            self.env_steps,
            self.policy,
            self.algorithm,
            self.pre,
            self.post,
            extra,
            full_state,
        )
        self.checkpoints_saved += 1
        every = self.cfg.policy.push_every
        if every is not None and self.checkpoints_saved % every == 0:
            self.push(checkpoint)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        acfg = self.cfg.policy.actor_learner_config
        transport = self.cfg.policy.transport
        rate = transport.max_stream_mib_per_s
        self.service = service = BroadcastLearnerService(
            self.board,
            max_message_bytes=int(transport.max_message_mib * 2**20),
            max_stream_bytes_per_s=None if rate is None else rate * 2**20,
            shutdown_event=self.shutdown_event,
            transition_queue=self.transition_queue,
            interaction_message_queue=self.interaction_queue,
            queue_get_timeout=acfg.queue_get_timeout,
        )
        server = start_server(
            service,
            acfg.learner_host,
            acfg.learner_port,
            credentials=self.server_credentials,
            interceptors=(self.token_check,) if self.token_check else (),
        )
        self.push_weights()
        try:
            while not self.shutdown_event.is_set() and not self.done:
                with self.clock.phase("receive"):
                    self.drain()
                if self.maybe_update():
                    self.last_arrival = time.time()  # the actors' wait for these weights starts now
                else:
                    with self.clock.phase("rollout_wait"):
                        self.resend_if_starved()
                        time.sleep(0.01)
            if self.done:
                logger.info("[LEARNER] reached %d updates: done", self.update_count)
            self.save_if_stale()  # while the other processes can still gather a sharded state
            if self.algorithm.ranks.distributed:
                # The other processes stop after their last update. (After an error they are not told:
                # the launcher ends them when this process exits.)
                self.algorithm.ranks.broadcast(None)
                self.algorithm.leave_ranks()
        finally:
            if not self.algorithm.sharded:
                self.save_if_stale()
            elif self.checkpoint_is_stale():
                logger.warning(
                    "[LEARNER] stopped by an error: a sharded state cannot be gathered now, the last "
                    "checkpoint is the latest saved one"
                )
            if self.done and not self.board.wait_delivered(timeout=FINAL_DELIVERY_S):
                logger.warning("[LEARNER] not every actor received the final weights")
            self.shutdown_event.set()
            stop_server(server)
            self.finish_logging()
            if self.pusher is not None:  # the final push, with the curves just drawn; then wait for it
                if self.update_count > 0 and last_checkpoint_dir(self.out).exists():
                    self.push(last_checkpoint_dir(self.out).resolve())
                logger.info("[LEARNER] waiting for the Hub pushes to finish")
                self.pusher.close(timeout=FINAL_PUSH_WAIT_S)

    def finish_logging(self) -> None:
        """Draw the run's training curves (``training_curves.png``, also sent to wandb) and close wandb."""
        from lerobot_pirl.plot import plot_run

        try:
            png = plot_run(self.out) if self.metrics_path.is_file() else None
        except Exception as e:  # a plot must never turn a finished run into a failed one
            logger.warning("[LEARNER] could not draw the training curves: %s", e)
            png = None
        if self.wandb is not None:
            import wandb

            if png is not None:
                wandb.log({"train/training_curves": wandb.Image(str(png))})
            wandb.finish()

    def checkpoint_is_stale(self) -> bool:
        """Checkpoints are on and the last update has none yet."""
        return self.cfg.save_checkpoint and self.update_count > 0 and not self.checkpoint_is_current()

    def save_if_stale(self) -> None:
        if self.checkpoint_is_stale():
            self.save()

    def checkpoint_is_current(self) -> bool:
        last = last_checkpoint_dir(self.out)
        return last.exists() and last.resolve().name.lstrip("0") == str(self.update_count)


class UpdateFollower:
    """A learner process other than rank 0: it opens no port and writes no file. Rank 0 tells it each
    collective step: an update on a prepared rollout (its share of every minibatch), or, sharded (FSDP), an
    update on a rollout whose values all processes compute, the gathering of the actors' weights or of a
    checkpoint's state. It stops when rank 0 says the run is over."""

    def __init__(self, cfg: TrainRLServerPipelineConfig, accelerator):
        self.device = cfg.policy.device
        self.policy, self.algorithm, *_ = build_update_side(cfg, accelerator)

    def run(self) -> None:
        alg = self.algorithm
        ranks = alg.ranks
        while (message := ranks.broadcast(None)) is not None:
            kind, payload = message
            if kind == FOLLOW_ROLLOUT:
                alg.update_on(payload.to(self.device))
            elif kind == FOLLOW_INPUTS:
                alg.update_on(alg.score_rollout(payload.to(self.device)))
            elif kind == FOLLOW_WEIGHTS:
                alg.get_weights()
            elif kind == FOLLOW_CHECKPOINT:
                alg.full_training_state()
            else:
                raise ValueError(f"rank {ranks.rank}: unknown step {kind!r} from rank 0")
        alg.leave_ranks()
        logger.info("[LEARNER rank %d] rank 0 finished: done", ranks.rank)


def prepare_learner(cfg: TrainRLServerPipelineConfig) -> Callable[[], None]:
    """Start-up: check the config and the output folder, set up logging and seeds, build the learner
    (loading a checkpoint to resume). Returns the run."""
    if not is_pi_rl(cfg):
        from lerobot.rl.learner import train

        return lambda: train(cfg)
    cfg = resolve_pi_rl_config(cfg)
    torch.backends.cuda.matmul.allow_tf32 = True
    accelerator = make_accelerator(cfg.policy.device) if launched_distributed() else None
    if accelerator is not None:
        # This process's GPU (cuda:<local rank>), or the CPU (accelerate names it cpu:0 under torchrun).
        cfg.policy.device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
        if not accelerator.is_main_process:
            init_logging(accelerator=accelerator)
            set_seed(cfg.seed)
            return UpdateFollower(cfg, accelerator).run
    if cfg.resume:
        # Unlike LeRobot's handle_resume_logic, keep the command line's overrides (e.g. a larger
        # --policy.online_steps); weights, optimiser and counters come from the checkpoint.
        if not last_checkpoint_dir(cfg.output_dir).exists():
            raise FileNotFoundError(
                f"output_dir: no checkpoint to resume in {cfg.output_dir}/checkpoints/last"
            )
    else:
        check_fresh_output_dir(cfg)
    out = Path(cfg.output_dir)
    os.makedirs(out / "logs", exist_ok=True)
    init_logging(log_file=str(out / "logs" / f"learner_{cfg.job_name}.log"), accelerator=accelerator)
    set_seed(cfg.seed)
    shutdown = ProcessSignalHandler(use_threads=True).shutdown_event
    return PiRLLearner(cfg, shutdown, accelerator).run


@parser.wrap()
def train_cli(cfg: TrainRLServerPipelineConfig) -> Callable[[], None]:
    return prepare_learner(cfg)


def main() -> None:
    run_cli(train_cli)


if __name__ == "__main__":
    main()
