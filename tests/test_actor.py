"""The πRL actor in-process: its loop over an env it is handed, and the end of training."""

from __future__ import annotations

import threading

import torch
from lerobot.rl.train_rl import TrainRLServerPipelineConfig
from lerobot.transport.utils import state_to_bytes

from lerobot_pirl import transition_keys as keys
from lerobot_pirl.actor import PiRLActor, make_actor_env
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import FINAL_WEIGHTS_KEY, PiRLAlgorithm
from lerobot_pirl.runtime.transitions import decode_transitions
from tests.helpers import metaworld_run_config


def _cfg(tmp_path, *args: str) -> TrainRLServerPipelineConfig:
    return metaworld_run_config(
        tmp_path,
        list(args),
        policy={"actor": {"chunks_per_version": 2}},
        algorithm={"type": "pi_rl", "rollout_size": 8, "minibatch_size": 8},
        env={"type": "pirl_metaworld", "num_envs": 2, "episode_length": 8},
    )


def _weights(actor: PiRLActor, version: int, final: bool = False) -> bytes:
    learner_side = PiRLAlgorithm(actor.policy, actor.cfg.algorithm)
    learner_side.policy_version = version
    weights = learner_side.get_weights()
    if final:
        weights[FINAL_WEIGHTS_KEY] = torch.tensor(True)
    return state_to_bytes(weights)


def test_actor_runs_the_env_it_is_handed_and_stops_on_the_learners_final_weights(tmp_path):
    cfg = _cfg(tmp_path)
    actor = PiRLActor(cfg, threading.Event())
    env = make_actor_env(cfg)
    actor.parameters_queue.put(_weights(actor, 0))
    thread = threading.Thread(target=actor.run, args=(env,), daemon=True)
    thread.start()
    first = [decode_transitions(actor.transitions_queue.get(timeout=60)) for _ in range(2)]
    # Two chunks per version: the actor now waits for the learner; the final weights end its run.
    actor.parameters_queue.put(_weights(actor, 1, final=True))
    thread.join(timeout=60)
    assert not thread.is_alive() and actor.learner_done and actor.shutdown_event.is_set()
    assert actor.algorithm.policy_version == 1
    infos = [t["complementary_info"] for chunk in first for t in chunk]
    assert [(i[keys.ENV_ID], i[keys.CHUNK_INDEX], i[keys.EPISODE_CHUNK]) for i in infos] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 1, 1),
        (1, 1, 1),
    ]


def test_an_actor_told_to_stay_keeps_running_after_the_final_weights(tmp_path):
    cfg = _cfg(tmp_path, "--policy.actor.exit_when_learner_done=false")
    actor = PiRLActor(cfg, threading.Event())
    actor.parameters_queue.put(_weights(actor, 3, final=True))
    assert actor.poll_weights()
    assert not actor.learner_done and not actor.shutdown_event.is_set()
    assert actor.algorithm.policy_version == 3
