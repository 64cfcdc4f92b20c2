"""VLAs in real LIBERO scenes (`slow`): a tiny pi05 / pi0 / SmolVLA (LeRobot's own policy classes at tiny
sizes, offline tokenizers) acts in ``libero_spatial`` through LeRobot's env processors and the πRL actor,
the learner runs a πRL update on those transitions and the actor takes the new weights; the exported
checkpoint then runs LeRobot's own ``eval_policy`` on the same scene.

Needs the ``libero`` extra set up (``make libero``, which ``make test`` runs); skipped with the reason
otherwise."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

from tests.helpers import parse_run_config
from tests.vla_helpers import (
    build_base,
    save_base_checkpoint,
    tiny_paligemma,
    unit_stats,
    write_word_tokenizer,
)

pytestmark = pytest.mark.slow

IMAGES = (f"{OBS_IMAGES}.image", f"{OBS_IMAGES}.image2")  # LeRobot's LIBERO cameras after its processor
STATE_DIM, ACTION_DIM, SIDE = 8, 7, 64
N_ENVS, CHUNKS = 2, 6  # per policy version: 2 envs x 6 chunks x 2 actions = 24 env steps, 12 transitions


@pytest.fixture(scope="module")
def libero_ready():
    pytest.importorskip("libero", reason="the libero extra is not installed (make libero)")
    from lerobot_pirl.envs.libero_setup import setup_libero

    try:
        setup_libero()
    except (FileNotFoundError, FileExistsError) as e:
        pytest.skip(f"LIBERO is not set up: {e}")


def _features() -> tuple[dict, dict]:
    inputs = {key: PolicyFeature(type=FeatureType.VISUAL, shape=(3, SIDE, SIDE)) for key in IMAGES}
    inputs[OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))
    return inputs, {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


def _base_checkpoint(family: str, tmp_path):
    inputs, outputs = _features()
    base = build_base(
        family, tmp_path, input_features=inputs, output_features=outputs, max_state_dim=8, max_action_dim=8
    )
    tokenizer = None if family == "smolvla" else write_word_tokenizer(tmp_path / "tokenizer")
    return save_base_checkpoint(base, tmp_path / "sft", tokenizer, unit_stats(STATE_DIM, ACTION_DIM))


def _run_config(tmp_path, base_path):
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "save_checkpoint": True,
        "policy": {
            "type": "pi_rl",
            "base_policy_path": str(base_path),
            "device": "cpu",
            "push_to_hub": False,
            "sampler": {"noise_method": "flow_sde", "num_denoise_steps": 2, "action_chunk": 2},
            "actor": {"num_envs": N_ENVS, "chunks_per_version": CHUNKS},
            "online_steps": 1,
        },
        "algorithm": {
            "type": "pi_rl",
            "rollout_size": N_ENVS * CHUNKS,
            "minibatch_size": 6,
            "update_epochs": 1,
        },
        "env": {
            "type": "libero",
            "task": "libero_spatial",
            "task_ids": [0],
            "episode_length": 8,  # episodes end (truncated) inside the rollout
            "observation_height": SIDE,
            "observation_width": SIDE,
        },
    }
    return parse_run_config(tmp_path, cfg)


def _collect(actor, n: int, timeout: float = 150.0) -> list:
    from lerobot_pirl.runtime.transitions import decode_transitions

    out, deadline = [], time.time() + timeout
    while len(out) < n and time.time() < deadline:
        with contextlib.suppress(Exception):
            out += decode_transitions(actor.transitions_queue.get(timeout=1.0))
    assert len(out) >= n, f"the actor sent {len(out)} of {n} transitions in {timeout:.0f}s"
    return out


def _eval_exported(export_dir, env_cfg) -> dict:
    """The exported checkpoint, loaded and evaluated the way ``lerobot-eval`` does."""
    from lerobot.configs import PreTrainedConfig
    from lerobot.envs.factory import make_env_pre_post_processors
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from lerobot.scripts.lerobot_eval import eval_policy

    from lerobot_pirl.export import require_pretrained_dir

    export_dir = require_pretrained_dir(export_dir)
    config = PreTrainedConfig.from_pretrained(export_dir)
    policy = get_policy_class(config.type).from_pretrained(export_dir)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(export_dir))
    env_pre, env_post = make_env_pre_post_processors(env_cfg, policy.config)
    envs = env_cfg.create_envs(1)
    vec = next(iter(next(iter(envs.values())).values()))
    try:
        with torch.no_grad():
            return eval_policy(vec, policy.eval(), env_pre, env_post, pre, post, n_episodes=1, start_seed=0)
    finally:
        vec.close()


@pytest.mark.parametrize("family", ["pi05", "pi0", "smolvla"])
def test_a_tiny_vla_acts_in_libero_learns_and_exports(libero_ready, tmp_path, family):
    from lerobot_pirl.actor import PiRLActor, make_actor_env
    from lerobot_pirl.export import export_checkpoint
    from lerobot_pirl.learner import PiRLLearner

    with tiny_paligemma():
        cfg = _run_config(tmp_path, _base_checkpoint(family, tmp_path))
        learner = PiRLLearner(cfg, threading.Event())
        learner.push_weights()
        seen, _, weights = learner.board.wait_newer(0, timeout=1.0)
        actor = PiRLActor(cfg, threading.Event())
        actor.parameters_queue.put(weights)
        env = make_actor_env(cfg)
        tasks = list(env.tasks)
        thread = threading.Thread(target=actor.run, args=(env,), daemon=True)
        thread.start()
        try:
            transitions = _collect(actor, N_ENVS * CHUNKS)
            groups = learner.policy.param_groups().values()
            trainable_ids = {id(p) for params in groups for p in params}
            trainable = {n for n, p in learner.policy.named_parameters() if id(p) in trainable_ids}
            before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
            assert learner.buffer.add(transitions) == len(transitions)
            assert learner.maybe_update()
            _, version, weights = learner.board.wait_newer(seen, timeout=1.0)
            assert version == 1
            actor.parameters_queue.put(weights)
            deadline = time.time() + 120
            while actor.algorithm.policy_version != 1 and time.time() < deadline:
                time.sleep(0.2)
            assert actor.algorithm.policy_version == 1  # the actor took the new weights
        finally:
            actor.shutdown_event.set()
            thread.join(timeout=120)

        # Transitions carry the cameras, the state and the env's own task string.
        first = transitions[0]["state"]
        assert all(tuple(first[k].shape) == (1, 3, SIDE, SIDE) for k in IMAGES)
        assert tuple(first[OBS_STATE].shape) == (1, STATE_DIM) and first["task"] == [tasks[0]]
        assert any(bool(t["truncated"]) for t in transitions)  # 8-step episodes end inside the rollout

        record = [json.loads(line) for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()][
            -1
        ]
        assert record["kind"] == "update" and record["on_policy_fraction"] == 1.0
        assert record["ratio_guard_max_dev"] < 1e-3

        after = dict(learner.policy.named_parameters())
        moved = {n for n in before if not torch.equal(before[n], after[n].detach())}
        assert moved and moved <= trainable  # the update moved trainable parameters and nothing else
        assert any(n.startswith("value_head") for n in moved) and any(n.startswith("base") for n in moved)

        checkpoint = cfg.output_dir / "checkpoints" / "last" / "pretrained_model"
        exported = export_checkpoint(checkpoint, tmp_path / "export")
        env_cfg = cfg.env
        env_cfg.episode_length = 4
        report = _eval_exported(exported, env_cfg)
    assert report["aggregated"]["pc_success"] >= 0.0 and len(report["per_episode"]) == 1
