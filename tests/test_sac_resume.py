"""A SAC baseline run continues from its checkpoint: weights, optimisers, temperature, buffer, counters, log."""

from __future__ import annotations

import json
import time

import pytest
import torch

pytest.importorskip("metaworld")

TASK = "button-press-v3"


def test_buffer_round_trip_keeps_a_wrapped_ring_in_order():
    from lerobot.rl.buffer import ReplayBuffer

    from lerobot_pirl.bench.sac_checkpoint import OBS_STATE, buffer_transitions, refill_buffer

    def make():
        return ReplayBuffer(capacity=5, device="cpu", state_keys=[OBS_STATE], optimize_memory=False)

    ring = make()
    for i in range(8):  # wraps: holds transitions 3..7, the oldest at position 3
        ring.add(
            state={OBS_STATE: torch.full((1, 2), float(i))},
            action=torch.full((1, 1), -float(i)),
            reward=float(i),
            next_state={OBS_STATE: torch.full((1, 2), i + 0.5)},
            done=i == 6,
            truncated=i == 7,
        )
    saved = buffer_transitions(ring)
    assert saved["reward"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert saved["done"].tolist() == [False, False, False, True, False]
    copy = make()
    refill_buffer(copy, saved)
    again = buffer_transitions(copy)
    assert len(copy) == 5 and all(torch.equal(saved[k], again[k]) for k in saved)
    with pytest.raises(ValueError, match="empty"):
        refill_buffer(copy, saved)
    assert buffer_transitions(make()) == {}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from lerobot_pirl.collect import collect_dataset

    root = tmp_path_factory.mktemp("sac") / "demos"
    collect_dataset(TASK, 1, root, repo_id="local/demos", episode_length=100, progress=False)
    return root


def tiny_run(demos, out, env_steps: int, resume: bool = False, **overrides):
    from lerobot_pirl.bench.sac import SACRun, SACSettings
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    tiny = dict(
        num_envs=4,
        env_workers=1,
        batch_size=8,
        updates_per_env_step=0.1,
        online_step_before_learning=8,
        eval_every_steps=0,
        save_every_steps=80,
    )
    settings = SACSettings(env_steps=env_steps, **{**tiny, **overrides})
    env_cfg = MetaWorldStateEnvConfig(task=TASK, num_envs=4, episode_length=30)
    return SACRun(env_cfg, demos, out, settings, eval_episodes=2, resume=resume)


def test_a_resumed_sac_run_continues_where_its_checkpoint_left_it(demos, tmp_path):
    from lerobot_pirl.bench.sac_checkpoint import buffer_transitions, sac_resume_point

    out = tmp_path / "sac"
    first = tiny_run(demos, out, env_steps=160)
    first.run()
    assert (out / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.is_symlink()] == ["000160"]
    updates, wall = sac_resume_point(out)
    assert updates == first.updates > 0 and wall > 0

    with pytest.raises(ValueError, match=r"lr: checkpoint 0.0003, now 0.001.*without --resume"):
        tiny_run(demos, out, env_steps=320, resume=True, lr=1e-3)  # other learning settings: refused
    second = tiny_run(demos, out, env_steps=320, resume=True, save_every_steps=160)  # a cadence may change
    assert (second.env_steps, second.updates) == (160, first.updates)
    for name, value in first.policy.state_dict().items():
        assert torch.equal(value, second.policy.state_dict()[name]), name
    assert second.algorithm.temperature == first.algorithm.temperature
    for name, opt in first.algorithm.get_optimizers().items():
        restored = second.algorithm.get_optimizers()[name].state_dict()["state"]
        for key, state in opt.state_dict()["state"].items():
            assert torch.equal(state["exp_avg"], restored[key]["exp_avg"]), name
    saved, restored = buffer_transitions(first.online), buffer_transitions(second.online)
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    assert second.seed_offset == 4 * int(first.episodes.max()) > 0  # fresh training seeds
    assert time.time() - second.t0 >= wall and second.records == first.records  # the clock goes on

    second.run()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] >= 320  # one log, nothing twice
    assert second.updates > first.updates and second.algorithm.optimization_step == second.updates
    assert [r["wall_s"] for r in records] == sorted(r["wall_s"] for r in records)  # one clock

    last = (out / "checkpoints" / "last").resolve()
    written = last.stat().st_mtime_ns
    again = tiny_run(demos, out, env_steps=320, resume=True)  # nothing left to do: no second save
    again.run()
    assert again.env_steps == second.env_steps and again.updates == second.updates
    assert (out / "checkpoints" / "last").resolve() == last and last.stat().st_mtime_ns == written

    tiny_run(demos, out, env_steps=80)  # without resume: a fresh run, a fresh log, nothing to resume
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


def test_a_stop_signal_ends_the_run_with_a_checkpoint_of_where_it_stopped(demos, tmp_path, monkeypatch):
    import os
    import signal

    from lerobot_pirl.bench.sac import SACRun
    from lerobot_pirl.bench.sac_checkpoint import sac_resume_point

    step, calls = SACRun.step, []

    def step_then_signal(self, stepper, obs):
        calls.append(1)
        if len(calls) == 5:  # as `kill` would, in the middle of the run
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, stepper, obs)

    monkeypatch.setattr(SACRun, "step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    run = tiny_run(demos, tmp_path / "sac", env_steps=10_000)
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        run.run()
    assert len(calls) == 5 and run.env_steps == 5 * 4  # it finished the step it was in, and no other
    assert sac_resume_point(tmp_path / "sac")[0] == run.updates
    assert (tmp_path / "sac" / "checkpoints" / "000020").is_dir()
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
