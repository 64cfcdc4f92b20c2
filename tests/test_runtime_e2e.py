"""End to end on loopback: learner and actors as separate processes (`slow`).

One scenario, in phases, on pirl_metaworld with a tiny flow_mlp base:
1. a malformed transition is sent to the learner's gRPC service, then two actors and the learner run 4 updates;
2. one actor is SIGKILLed, the learner finishes and checkpoints; the other actor, told to stay after the
   end of training, keeps retrying;
3. the learner is restarted with --resume=true: the surviving actor reconnects, training continues
   from the checkpoint (policy version and update count), and the resumed learner's first pushed
   weights are the checkpointed ones; when it finishes, the actor that joined it exits by itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from safetensors.torch import load_file

from tests.helpers import write_metaworld_base

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path, base: Path, port: int) -> Path:
    cfg = {
        "job_name": "e2e",
        "output_dir": str(tmp / "run"),
        "seed": 3,
        "save_freq": 2,
        "policy": {
            "type": "pi_rl",
            "base_policy_path": str(base),
            "device": "cpu",
            "push_to_hub": False,
            "train_expert_only": False,
            "online_steps": 4,
            "sampler": {"noise_method": "flow_sde", "num_denoise_steps": 3},
            "value_head": {"hidden_dims": [32]},
            # Each of the two actors (3 envs) sends half of a 48-transition rollout per policy version, so
            # every update needs both (otherwise the first actor up can fill all four tiny rollouts).
            "actor": {"chunks_per_version": 8},
            # A message lost when the learner restarts leaves a rollout short: re-send after 10 s.
            "learner_resend_s": 10.0,
            "actor_learner_config": {
                "learner_host": "127.0.0.1",
                "learner_port": port,
                "queue_get_timeout": 0.2,
            },
        },
        "algorithm": {
            "type": "pi_rl",
            "rollout_size": 48,
            "minibatch_size": 24,
            "update_epochs": 2,
            "actor_lr": 1e-5,
            "critic_lr": 1e-3,
            "max_policy_lag": 1,
        },
        "env": {"type": "pirl_metaworld", "task": "button-press-v3", "num_envs": 3, "episode_length": 20},
        "wandb": {"enable": False},
    }
    path = tmp / "recipe.json"
    path.write_text(json.dumps(cfg))
    return path


def _spawn(module: str, recipe: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, f"--config_path={recipe}", *extra],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def _updates(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "update"]


def _inject_malformed_transition(port: int) -> None:
    """Send one transition lacking the πRL fields straight to the learner's gRPC service."""
    import grpc
    from lerobot.transport import services_pb2, services_pb2_grpc
    from lerobot.transport.utils import send_bytes_in_chunks, transitions_to_bytes

    bad = [
        {
            "state": {"observation.state": torch.zeros(1, 39)},
            "action": torch.zeros(3, 4),
            "reward": float("nan"),
            "next_state": {"observation.state": torch.zeros(1, 39)},
            "done": False,
            "truncated": False,
            "complementary_info": {},
        }
    ]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = services_pb2_grpc.LearnerServiceStub(channel)
        stub.SendTransitions(
            send_bytes_in_chunks(transitions_to_bytes(bad), services_pb2.Transition), timeout=10
        )


def _wait(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{proc.args[2]} did not finish in {timeout}s:\n{log.read_text()[-3000:]}")


def test_learner_and_actors_train_checkpoint_survive_faults_and_resume(tmp_path):
    base = tmp_path / "base"
    write_metaworld_base(base)
    port = _free_port()
    recipe = _config(tmp_path, base, port)
    run = tmp_path / "run"
    logs = {
        name: tmp_path / f"{name}.log" for name in ("learner1", "actor_a", "actor_b", "actor_c", "learner2")
    }

    learner = _spawn("lerobot_pirl.learner", recipe, logs["learner1"])
    actor_a = actor_b = actor_c = None
    try:
        # The malformed transition goes in first (as soon as the learner listens): with this tiny
        # rollout all four updates can finish within a second of the actors' first transitions.
        deadline = time.time() + 120
        while True:
            assert learner.poll() is None, logs["learner1"].read_text()[-3000:]
            try:
                _inject_malformed_transition(port)
                break
            except Exception:
                assert time.time() < deadline, "the learner never started listening"
                time.sleep(0.5)
        actor_a = _spawn(
            "lerobot_pirl.actor",
            recipe,
            logs["actor_a"],
            "--env.seed=0",
            "--policy.actor.exit_when_learner_done=false",
        )
        actor_b = _spawn("lerobot_pirl.actor", recipe, logs["actor_b"], "--env.seed=100000")
        assert _wait(learner, 180, logs["learner1"]) == 0, logs["learner1"].read_text()[-3000:]
        actor_b.send_signal(signal.SIGKILL)  # an actor dying mid-rollout costs the learner nothing
        actor_b.wait(timeout=10)

        first = _updates(run)
        assert [r["update"] for r in first] == [1, 2, 3, 4]
        assert [r["policy_version"] for r in first] == [1, 2, 3, 4]
        # New weights reached the actors: later rollouts were sampled by later policy versions.
        assert first[-1]["rollout_version_max"] >= 2
        assert max(r["actors"] for r in first) == 2  # transitions of both actors were used
        assert all(r["ratio_guard_max_dev"] < 1e-3 for r in first if r["on_policy_fraction"] > 0)
        assert "ratio guard" not in logs["learner1"].read_text()
        assert first[-1]["transitions_rejected"] >= 1  # the malformed transition, counted not used
        ckpts = run / "checkpoints"
        assert (ckpts / "last").resolve().name == "000004"
        assert (ckpts / "000002" / "pretrained_model" / SAFETENSORS_SINGLE_FILE).is_file()

        # Restart the learner from its checkpoint; the surviving actor reconnects by itself and a new
        # actor joins, each again with half a rollout per version. A message in flight when the stream
        # broke is lost; the learner then re-sends its weights (a new budget) instead of waiting forever.
        assert actor_a.poll() is None, "actor_a gave up before the learner came back"
        learner2 = _spawn(
            "lerobot_pirl.learner", recipe, logs["learner2"], "--resume=true", "--policy.online_steps=6"
        )
        actor_c = _spawn("lerobot_pirl.actor", recipe, logs["actor_c"], "--env.seed=200000")
        assert _wait(learner2, 180, logs["learner2"]) == 0
        # The learner told its actors that training is over: actor_c leaves with one line.
        assert _wait(actor_c, 60, logs["actor_c"]) == 0
        assert "the learner finished training" in logs["actor_c"].read_text()
        # SIGTERM: the actors stop cleanly.
        for actor in (actor_a, actor_c):
            actor.send_signal(signal.SIGTERM)
            assert actor.wait(timeout=30) == 0
    finally:
        for p in (learner, actor_a, actor_b, actor_c):
            if p is not None and p.poll() is None:
                p.kill()

    log2 = logs["learner2"].read_text()
    assert "resumed: update 4, policy version 4" in log2
    second = _updates(run)[len(first) :]
    assert second and second[0]["update"] == 5 and second[0]["policy_version"] == 5
    assert second[0]["rollout_version_max"] >= 4


def test_resumed_learner_pushes_the_checkpointed_weights_not_a_fresh_init(tmp_path):
    """In-process: build a learner, train-free checkpoint at update 2, resume, compare first push."""
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig
    from lerobot.transport.utils import bytes_to_state_dict

    from lerobot_pirl.learner import PiRLLearner
    from lerobot_pirl.runtime.config import resolve_pi_rl_config

    base = tmp_path / "base"
    write_metaworld_base(base)
    recipe = _config(tmp_path, base, _free_port())
    import threading

    import draccus

    with draccus.config_type("json"):
        cfg = draccus.parse(TrainRLServerPipelineConfig, str(recipe), args=[])
    cfg = resolve_pi_rl_config(cfg)
    learner = PiRLLearner(cfg, threading.Event())
    with torch.no_grad():  # make the trained weights differ from any fresh init
        for p in learner.policy.parameters():
            p.add_(0.01)
    learner.update_count, learner.algorithm.policy_version, learner.env_steps = 2, 2, 1234
    learner.save()

    saved_cfg = Path(cfg.output_dir) / "checkpoints/last/pretrained_model/train_config.json"
    cfg2 = TrainRLServerPipelineConfig.from_pretrained(str(saved_cfg))
    cfg2.resume = True
    cfg2 = resolve_pi_rl_config(cfg2)
    resumed = PiRLLearner(cfg2, threading.Event())
    assert (resumed.update_count, resumed.algorithm.policy_version, resumed.env_steps) == (2, 2, 1234)
    resumed.push_weights()
    _, version, payload = resumed.board.wait_newer(0, timeout=1.0)
    pushed = bytes_to_state_dict(payload)
    saved = load_file(
        str(Path(cfg.output_dir) / "checkpoints/last/pretrained_model" / SAFETENSORS_SINGLE_FILE)
    )
    assert version == 2 and int(pushed.pop("__pirl_policy_version__")) == 2
    for key, value in pushed.items():
        assert torch.equal(value, saved[key]), key
    # ... which are the trained ones, not the SFT base the config points to.
    base_weights = load_file(str(base / SAFETENSORS_SINGLE_FILE))
    assert not torch.equal(pushed["base.model.token_out.bias"], base_weights["model.token_out.bias"])
