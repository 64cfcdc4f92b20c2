"""Learner pieces that need no actor: the demo regulariser's data path, re-sending weights when starved."""

from __future__ import annotations

import json
import threading
import time

import draccus
import numpy as np
import torch
from lerobot.rl.train_rl import TrainRLServerPipelineConfig

from lerobot_pirl.datasets import state_action_features, write_dataset
from lerobot_pirl.learner import PiRLLearner
from lerobot_pirl.runtime.config import resolve_pi_rl_config
from tests.helpers import metaworld_run_config, write_metaworld_base


def test_demo_batches_come_from_the_dataset_as_base_policy_chunks(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [
        [{"observation.state": rng.normal(size=39), "action": rng.uniform(-1, 1, size=4)} for _ in range(20)]
        for _ in range(2)
    ]
    write_dataset(tmp_path / "demos", "local/demos", 80, state_action_features(39, 4), episodes, "press")
    write_metaworld_base(tmp_path / "base")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "dataset": {"repo_id": "local/demos", "root": str(tmp_path / "demos")},
        "policy": {
            "type": "pi_rl",
            "base_policy_path": str(tmp_path / "base"),
            "device": "cpu",
            "push_to_hub": False,
        },
        "algorithm": {
            "type": "pi_rl",
            "demo_loss_coef": 0.1,
            "demo_batch_size": 4,
            "rollout_size": 64,
            "minibatch_size": 32,
        },
        "env": {"type": "pirl_metaworld", "num_envs": 2},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with draccus.config_type("json"):
        parsed = draccus.parse(TrainRLServerPipelineConfig, str(tmp_path / "cfg.json"), args=[])
    learner = PiRLLearner(resolve_pi_rl_config(parsed), threading.Event())
    batch = next(learner.algorithm.demo_iterator)
    assert batch["action"].shape == (4, 6, 4)  # the base's chunk of 6 actions
    assert batch["observation.state"].shape == (4, 39)
    loss, _ = learner.policy.forward(batch)
    assert torch.isfinite(loss)


def test_a_starved_learner_sends_its_weights_again(tmp_path):
    """No transition for ``learner_resend_s`` with the rollout short: the same version is published again
    (each actor's new chunk budget); transitions arriving, or the option off, keep it quiet."""
    learner = PiRLLearner(metaworld_run_config(tmp_path, ["--policy.learner_resend_s=5"]), threading.Event())
    learner.push_weights()
    seen, version, _ = learner.board.wait_newer(0, timeout=1.0)
    assert not learner.resend_if_starved()  # no transition yet: the actors are still starting
    learner.transition_queue.put(b"not a transition")  # any arrival counts, even a rejected one
    learner.last_arrival = time.time() - 60
    learner.drain()
    assert not learner.resend_if_starved()
    learner.last_arrival = time.time() - 6
    assert learner.resend_if_starved()
    again, same_version, payload = learner.board.wait_newer(seen, timeout=1.0)
    assert (again, same_version) == (seen + 1, version) and payload is not None
    assert not learner.resend_if_starved()  # the clock restarts with each re-send
    learner.cfg.policy.learner_resend_s = None
    learner.last_arrival = time.time() - 1e6
    assert not learner.resend_if_starved()
