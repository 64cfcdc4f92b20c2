"""Re-splitting a multi-task actor's envs over its tasks by their training failure rate."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from lerobot_pirl.envs.metaworld import MetaWorldMultiTaskEnvConfig, mix_descriptions
from lerobot_pirl.runtime.interactions import decode_interaction, encode_interaction, env_count_record
from lerobot_pirl.runtime.rebalance import EnvRebalancer, failure_rates, reassign
from lerobot_pirl.runtime.vector import ChunkResult
from tests.helpers import metaworld_run_config

TWO = ["reach-v3", "push-v3"]


def _episodes(task: str, successes: int, failures: int) -> list[dict]:
    return [{"task": task, "success": 1.0}] * successes + [{"task": task, "success": 0.0}] * failures


def test_failure_rates_are_smoothed_so_an_unseen_task_counts_as_half_failing():
    episodes = _episodes("a", 8, 0) + _episodes("b", 1, 9) + [{"task": "other", "success": 0.0}]
    assert failure_rates(episodes, ["a", "b", "c"]) == [1 / 10, 10 / 12, 1 / 2]


def test_reassign_moves_as_few_envs_as_possible():
    current = ["a", "a", "a", "b", "c", "c"]
    plan = reassign(current, ["a", "b", "c"], [1, 3, 2])
    assert plan == [None, "b", "b", None, None, None]  # the two a-envs past a's one move to b
    assert reassign(current, ["a", "b", "c"], [3, 1, 2]) == [None] * 6  # already split so
    with pytest.raises(ValueError, match="do not split 6 envs"):
        reassign(current, ["a", "b", "c"], [1, 1, 1])


def test_a_split_moves_envs_from_the_solved_task_to_the_failing_one_after_every_versions():
    rebalancer = EnvRebalancer(["a", "a", "b", "b", "c", "c"], every=10)
    assert not rebalancer.due(100)  # the first version seen starts the count (a resumed run)
    assert not rebalancer.due(109) and rebalancer.due(110)
    rebalancer.record(_episodes("a", 20, 0) + _episodes("b", 0, 20) + _episodes("c", 10, 10))
    rebalancer.record([{"task": "not-mine", "success": 0.0}])  # ignored
    plan = rebalancer.split(110)
    # Failure rates 1/22, 21/22, 11/22: one env each, the other three by the rates -> a 1, b 3, c 2.
    assert plan == [None, "b", None, None, None, None]
    assert rebalancer.counts() == {"a": 1, "b": 3, "c": 2}
    assert rebalancer.targets == ["a", "b", "b", "b", "c", "c"]
    assert not rebalancer.due(119) and rebalancer.due(120)
    assert not rebalancer.due(50) and rebalancer.due(60)  # a learner resumed from an earlier checkpoint
    # Episodes are counted from the last split on: with none recorded, every task counts as half failing.
    rebalancer.split(120)
    assert rebalancer.counts() == {"a": 2, "b": 2, "c": 2}


def test_one_task_envs_cannot_be_re_split():
    with pytest.raises(ValueError, match="one task"):
        EnvRebalancer(["a", "a"], every=5)
    with pytest.raises(ValueError, match=">= 1"):
        EnvRebalancer(["a", "b"], every=0)


def test_a_mixed_env_takes_its_next_task_at_its_next_reset():
    cfg = MetaWorldMultiTaskEnvConfig(tasks=",".join(TWO), num_envs=2, episode_length=5)
    env = cfg.make_env(seed_start=10, env_index=0, num_envs=2)
    obs, info = env.reset()
    assert env.task == "reach-v3" and obs["agent_pos"][-2:].tolist() == [1.0, 0.0]
    env.next_task = "push-v3"
    env.step(np.zeros(4))  # the episode goes on with its task
    assert env.task == "reach-v3"
    obs, info = env.reset()
    assert env.task == "push-v3" and env.next_task is None
    assert env.task_description == mix_descriptions(TWO)["push-v3"]
    assert obs["agent_pos"][-2:].tolist() == [0.0, 1.0]
    assert info["episode_seed"] == 11  # the env's seeds go on
    _, _, _, _, step_info = env.step(np.zeros(4))
    assert np.isfinite(step_info["goal_distance"])
    with pytest.raises(ValueError, match="not a task of this env's mix"):
        env.next_task = "door-open-v3"
    env.close()
    single = MetaWorldMultiTaskEnvConfig(tasks=",".join(TWO), num_envs=2, task="reach-v3").make_env(
        seed_start=0
    )
    assert single.mix == tuple(TWO)
    single.close()


def _mixed_cfg(tmp_path, workers: int, *args: str):
    from tests.helpers import write_metaworld_base

    write_metaworld_base(tmp_path / "mixed_base", state_dim=39 + len(TWO))
    return metaworld_run_config(
        tmp_path,
        [f"--policy.base_policy_path={tmp_path / 'mixed_base'}", *args],
        policy={"actor": {"chunks_per_version": 2, "rebalance_envs_every": 1}},
        algorithm={"type": "pi_rl", "rollout_size": 8, "minibatch_size": 8},
        env={
            "type": "pirl_metaworld_mt",
            "tasks": ",".join(TWO),
            "num_envs": 4,
            "episode_length": 8,
            "env_workers": workers,
        },
    )


def _ended(mask: list[bool]) -> ChunkResult:
    n = len(mask)
    flags = np.zeros(n, dtype=bool)
    return ChunkResult({}, {}, np.zeros(n), np.zeros(n, dtype=int), np.array(mask), flags, flags, flags)


@contextlib.contextmanager
def _rebalancing_actor(tmp_path, workers: int):
    """A πRL actor on a reach / push mix of 4 envs (in ``workers`` processes), its envs reset, and its
    rebalancer."""
    from lerobot_pirl.actor import PiRLActor, make_actor_env

    cfg = _mixed_cfg(tmp_path, workers)
    actor = PiRLActor(cfg, threading.Event())
    env = make_actor_env(cfg)
    try:
        env.stepper.reset()
        yield actor, env, actor.make_rebalancer(env)
    finally:
        env.stepper.close()


def test_the_actor_moves_envs_when_their_episodes_end_and_reads_their_new_tasks_back(tmp_path):
    with _rebalancing_actor(tmp_path, 1) as (actor, env, rebalancer):
        assert env.task_names == ["reach-v3", "reach-v3", "push-v3", "push-v3"]
        actor.algorithm.policy_version = 4
        actor.reset_done(env, _ended([False] * 4), rebalancer)  # the first version seen: no split yet
        rebalancer.record(_episodes("reach-v3", 10, 0) + _episodes("push-v3", 0, 10))
        actor.algorithm.policy_version = 5
        # Env 1 moves to push, but its episode goes on: it still plays reach.
        obs = actor.reset_done(env, _ended([True, False, True, False]), rebalancer)
        assert rebalancer.targets == ["reach-v3", "push-v3", "push-v3", "push-v3"]
        assert env.task_names == ["reach-v3", "reach-v3", "push-v3", "push-v3"]
        assert obs["agent_pos"][1, -2:].tolist() == [1.0, 0.0]
        # Its episode ends: from its reset on it plays push, with push's one-hot and instruction.
        obs = actor.reset_done(env, _ended([False, True, False, False]), rebalancer)
        assert env.task_names == ["reach-v3", "push-v3", "push-v3", "push-v3"]
        assert env.tasks[1] == mix_descriptions(TWO)["push-v3"]
        assert obs["agent_pos"][1, -2:].tolist() == [0.0, 1.0]
        assert rebalancer.counts() == {"reach-v3": 1, "push-v3": 3}


def test_envs_in_worker_processes_move_too(tmp_path):
    with _rebalancing_actor(tmp_path, 2) as (actor, env, rebalancer):
        actor.algorithm.policy_version = 0
        rebalancer.due(0)
        rebalancer.record(_episodes("reach-v3", 10, 0) + _episodes("push-v3", 0, 10))
        actor.algorithm.policy_version = 1
        result = env.stepper.step_chunk(np.zeros((4, 8, 4)))  # every episode ends at its 8 steps
        assert result.truncated.all()
        obs = actor.reset_done(env, result, rebalancer)
        assert env.task_names == ["reach-v3", "push-v3", "push-v3", "push-v3"]
        assert obs["agent_pos"][:, -1].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_a_run_that_cannot_re_split_its_envs_fails_at_start_up(tmp_path):
    """GRPO groups, a single task, and one task of a mix are refused when the config is resolved (by the
    learner and the actor alike), before any env is built."""
    with pytest.raises(ValueError, match="GRPO group"):
        _mixed_cfg(tmp_path, 1, "--env.group_size=2")
    for env in (
        {"type": "pirl_metaworld", "num_envs": 2},
        {"type": "pirl_metaworld_mt", "tasks": ",".join(TWO), "num_envs": 2, "task": "push-v3"},
    ):
        with pytest.raises(ValueError, match=r"rebalance_envs_every: env type .* plays one task"):
            metaworld_run_config(
                tmp_path / env["type"], policy={"actor": {"rebalance_envs_every": 1}}, env=env
            )
    from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLActorConfig

    with pytest.raises(ValueError, match="rebalance_envs_every must be >= 0"):
        PiRLActorConfig(rebalance_envs_every=-1)


def test_the_learner_logs_the_envs_per_task_summed_over_actors():
    message = {"actor_id": 1, "env_counts": {"reach-v3": 1, "push-v3": 3}}
    assert decode_interaction(encode_interaction(message))["env_counts"] == {"reach-v3": 1, "push-v3": 3}
    for bad in ({"a": -1}, {"a": 1.5}, {"": 1}, [1], {f"t{i}": 1 for i in range(101)}):
        assert decode_interaction(encode_interaction({"env_counts": bad})) is None
    per_actor = {1: ({"reach-v3": 1, "push-v3": 3}, 100.0), 2: ({"reach-v3": 2, "push-v3": 2}, 90.0)}
    assert env_count_record(per_actor, since=80.0) == {"envs/push-v3": 5.0, "envs/reach-v3": 3.0}
    assert env_count_record(per_actor, since=95.0) == {"envs/push-v3": 3.0, "envs/reach-v3": 1.0}
    many = {1: ({f"t{i:03d}": 1 for i in range(150)}, 100.0)}
    assert len(env_count_record(many, since=0.0)) == 100  # a peer cannot grow the record without bound


def test_in_the_actor_loop_every_transition_carries_the_task_its_state_shows(tmp_path, monkeypatch):
    from lerobot.utils.constants import OBS_STATE

    from lerobot_pirl.actor import PiRLActor, make_actor_env
    from lerobot_pirl.runtime import rebalance
    from lerobot_pirl.runtime.transitions import decode_transitions
    from lerobot_pirl.transition_keys import TASK
    from tests.test_actor import _weights

    monkeypatch.setattr(rebalance, "failure_rates", lambda episodes, tasks: [0.0, 1.0])  # push fails
    cfg = _mixed_cfg(tmp_path, 1, "--policy.actor.chunks_per_version=4")
    actor = PiRLActor(cfg, threading.Event())
    env = make_actor_env(cfg)
    thread = threading.Thread(target=actor.run, args=(env,), daemon=True)
    actor.parameters_queue.put(_weights(actor, 0))
    thread.start()
    chunks = []
    for version in range(1, 5):  # 4 chunks of 3 steps per version: the 8-step episodes end in each
        chunks += [decode_transitions(actor.transitions_queue.get(timeout=60)) for _ in range(4)]
        actor.parameters_queue.put(_weights(actor, version, final=version == 4))
    thread.join(timeout=60)
    assert not thread.is_alive()
    descriptions = mix_descriptions(TWO)
    played = []
    for chunk in chunks:
        for t in chunk:
            one_hot = t["state"][OBS_STATE][0, -2:].tolist()  # each transition is a batch of one
            task = TWO[int(np.argmax(one_hot))]
            assert t["state"][TASK] == [descriptions[task]]
            played.append(task)
    assert played[:4] == ["reach-v3", "reach-v3", "push-v3", "push-v3"]
    assert played[-4:] == ["reach-v3", "push-v3", "push-v3", "push-v3"]  # env 1 moved to push
    messages = []
    while not actor.interactions_queue.empty():
        messages.append(decode_interaction(actor.interactions_queue.get()))
    assert messages[-1]["env_counts"] == {"reach-v3": 1, "push-v3": 3}


def test_a_re_split_run_gets_a_plot_of_its_envs_per_task(tmp_path):
    from lerobot_pirl.bench.report import plot_env_split

    records = [
        {"kind": "update", "env_steps": 5000 * i, "envs/reach-v3": 2 + i, "envs/push-v3": 18 - i}
        for i in range(5)
    ]
    records.append({"kind": "eval", "env_steps": 20000, "eval_success_rate": 0.5})
    assert plot_env_split(records, "MT10: envs per task", tmp_path / "split.png")
    assert (tmp_path / "split.png").stat().st_size > 10_000
    # A run that kept its split logs no envs/<task>: no plot.
    assert not plot_env_split([{"kind": "update", "env_steps": 1}], "x", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
