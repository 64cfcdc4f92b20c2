"""Multi-task MetaWorld: the mixed env, multi-task demos, per-task evaluation, per-task advantages and
statistics, and the one setup rule for tasks nobody tuned."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lerobot_pirl.algorithms.pi_rl.advantages import normalize, normalize_per_group
from lerobot_pirl.envs.metaworld import (
    STATE_DIM,
    MetaWorldMultiTaskEnvConfig,
    MetaWorldStateEnvConfig,
    metaworld_env_config,
    suite_tasks,
)
from lerobot_pirl.envs.task_order import check_task_order, trained_task_order
from tests.helpers import write_metaworld_base

TWO = "reach-v3,drawer-close-v3"


def test_suites_are_metaworlds_own_lists():
    assert (
        suite_tasks("MT10")[:3] == ["reach-v3", "push-v3", "pick-place-v3"] and len(suite_tasks("MT10")) == 10
    )
    assert len(suite_tasks("MT50")) == 50 and set(suite_tasks("MT10")) < set(suite_tasks("MT50"))
    with pytest.raises(ValueError, match="suite"):
        suite_tasks("MT11")


def test_mixed_env_splits_envs_over_tasks_in_blocks_with_the_task_one_hot():
    cfg = MetaWorldMultiTaskEnvConfig(tasks="reach-v3,push-v3,drawer-close-v3", num_envs=6, episode_length=20)
    assert cfg.features["agent_pos"].shape == (STATE_DIM + 3,)
    vec = cfg.create_envs()["pirl_metaworld_mt"][0]
    obs, _ = vec.reset()
    assert list(vec.call("task")) == ["reach-v3"] * 2 + ["push-v3"] * 2 + ["drawer-close-v3"] * 2
    assert vec.call("task_description")[2] == "Push the puck to a goal"
    np.testing.assert_array_equal(obs["agent_pos"][:, STATE_DIM:].argmax(1), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(obs["agent_pos"][:, STATE_DIM:].sum(1), np.ones(6))
    obs, *_ = vec.step(np.zeros((6, 4), dtype=np.float32))
    np.testing.assert_array_equal(obs["agent_pos"][:, STATE_DIM:].argmax(1), [0, 0, 1, 1, 2, 2])
    vec.close()
    # One task of the mix, same layout: every env plays it with its own one-hot.
    one = cfg.for_task("push-v3")
    evals = one.make_eval_env(2)
    obs, _ = evals.reset(seed=[3_000_000, 3_000_001])
    assert list(evals.call("task")) == ["push-v3"] * 2
    np.testing.assert_array_equal(obs["agent_pos"][:, STATE_DIM:], [[0, 1, 0], [0, 1, 0]])
    evals.close()
    assert cfg.task is None  # for_task leaves the mix as it was


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tasks": TWO, "num_envs": 3}, "multiple of the number of tasks"),
        ({"tasks": "reach-v3,reach-v3", "num_envs": 2}, "distinct"),
        ({"tasks": TWO, "num_envs": 2, "task": "push-v3"}, "not one of the mixed tasks"),
        ({"tasks": TWO, "num_envs": 4, "group_size": 4}, "envs of every task"),
        ({"tasks": TWO, "num_envs": 4, "envs_per_task": "1,2"}, "sum of envs_per_task"),
        ({"tasks": TWO, "num_envs": 3, "envs_per_task": "1,1,1"}, "envs_per_task: 2 positive integers"),
        ({"tasks": TWO, "num_envs": 3, "envs_per_task": "3,0"}, "envs_per_task"),
        ({"tasks": TWO, "num_envs": 3, "envs_per_task": "one,two"}, "envs_per_task"),
        ({"tasks": TWO, "num_envs": 6, "envs_per_task": "3,3", "group_size": 2}, "envs of every task"),
        ({"suite": "MT5"}, "suite"),
        ({"tasks": ""}, "non-empty list"),
        ({"tasks": "reach-v3,no-such-task", "num_envs": 2}, None),
    ],
)
def test_mixed_env_config_refuses_bad_fields(fields, message):
    if message is None:  # an unknown task fails when its env is made, naming it
        cfg = MetaWorldMultiTaskEnvConfig(**fields)
        with pytest.raises(ValueError, match="no-such-task"):
            cfg.create_envs()
        return
    with pytest.raises(ValueError, match=message):
        MetaWorldMultiTaskEnvConfig(**fields)


def test_a_mix_gives_each_task_the_envs_of_envs_per_task():
    cfg = MetaWorldMultiTaskEnvConfig(
        tasks="reach-v3,push-v3,drawer-close-v3", num_envs=5, envs_per_task="1,3,1"
    )
    assert [cfg.env_task(i, 5) for i in range(5)] == ["reach-v3"] + ["push-v3"] * 3 + ["drawer-close-v3"]
    assert cfg.task_env_counts() == [1, 3, 1]
    with pytest.raises(ValueError, match="n_envs"):
        cfg.create_envs(3)
    with pytest.raises(ValueError, match="a split of 5 envs, not of 4"):
        cfg.env_task(0, 4)


def test_a_mix_refuses_envs_that_cannot_split_evenly_over_its_tasks():
    cfg = MetaWorldMultiTaskEnvConfig(tasks=TWO, num_envs=2)
    with pytest.raises(ValueError, match="multiple of the number of mixed tasks"):
        cfg.create_envs(3)


def test_instructions_are_unique_within_a_mix():
    from lerobot_pirl.envs.metaworld import mix_descriptions, task_description

    mt50 = mix_descriptions(suite_tasks("MT50"))
    assert len(set(mt50.values())) == 50
    assert task_description("push-v3") == task_description("push-back-v3")  # LeRobot's table shares one
    assert mt50["push-back-v3"] == f"{task_description('push-back-v3')} (push-back-v3)"
    assert mt50["reach-v3"] == task_description("reach-v3")  # the others are LeRobot's own
    cfg = MetaWorldMultiTaskEnvConfig(tasks="push-v3,push-back-v3", num_envs=2)
    vec = cfg.create_envs()["pirl_metaworld_mt"][0]
    assert len(set(vec.call("task_description"))) == 2
    vec.close()


def test_env_config_of_a_task_name_or_a_mix():
    assert type(metaworld_env_config("push-v3", num_envs=4)) is MetaWorldStateEnvConfig
    mt = metaworld_env_config("MT10", num_envs=16)
    assert isinstance(mt, MetaWorldMultiTaskEnvConfig) and len(mt.task_list) == 10 and mt.num_envs == 20
    assert metaworld_env_config(TWO, num_envs=3).task_list == TWO.split(",")


def test_multitask_demos_carry_each_tasks_one_hot_and_instruction(tmp_path):
    from lerobot.datasets import LeRobotDataset

    from lerobot_pirl.collect import collect_dataset

    stats = collect_dataset(TWO.split(","), 1, tmp_path / "demos", episode_length=150, progress=False)
    assert stats["episodes"] == 2 and stats["tasks"] == TWO.split(",")
    ds = LeRobotDataset("local/mt", root=tmp_path / "demos")
    first, last = ds[0], ds[len(ds) - 1]
    assert first["observation.state"].shape == (STATE_DIM + 2,)
    assert (
        first["observation.state"][STATE_DIM:].tolist() == [1.0, 0.0]
        and first["task"] == "Reach a goal position"
    )
    assert (
        last["observation.state"][STATE_DIM:].tolist() == [0.0, 1.0]
        and last["task"] == "Push and close a drawer"
    )
    # The one-hot's order travels with the dataset, and an SFT checkpoint trained on it reads it back.
    assert ds.meta.features["observation.state"]["names"][STATE_DIM:] == [
        "task:reach-v3",
        "task:drawer-close-v3",
    ]
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "train_config.json").write_text(json.dumps({"dataset": {"root": str(tmp_path / "demos")}}))
    assert trained_task_order(sft) == TWO.split(",")


def _rl_checkpoint(folder, env: dict):
    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({"env": env, "dataset": None}))
    return folder


def test_a_policy_runs_only_on_the_one_hot_order_it_was_trained_with(tmp_path):
    trained = _rl_checkpoint(tmp_path / "rl", {"type": "pirl_metaworld_mt", "suite": "MT10", "tasks": TWO})
    assert trained_task_order(trained) == TWO.split(",")
    check_task_order(trained, MetaWorldMultiTaskEnvConfig(tasks=TWO, num_envs=2))
    swapped = MetaWorldMultiTaskEnvConfig(tasks="drawer-close-v3,reach-v3", num_envs=2)
    with pytest.raises(ValueError, match=r"env.tasks: .* --env.tasks=reach-v3,drawer-close-v3"):
        check_task_order(trained, swapped)
    with pytest.raises(ValueError, match=r"env\.tasks"):  # another mix entirely
        check_task_order(trained, MetaWorldMultiTaskEnvConfig(suite="MT10", num_envs=10))
    # The suite's own order when the run named only the suite.
    suite = _rl_checkpoint(tmp_path / "mt10", {"type": "pirl_metaworld_mt", "suite": "MT10", "tasks": None})
    check_task_order(suite, MetaWorldMultiTaskEnvConfig(suite="MT10", num_envs=10))
    # Nothing to check: a single-task env, a checkpoint that does not say, a Hub id.
    check_task_order(trained, MetaWorldStateEnvConfig(task="reach-v3"))
    check_task_order(_rl_checkpoint(tmp_path / "single", {"type": "pirl_metaworld"}), swapped)
    check_task_order("lerobot/some-policy", swapped)


def test_eval_refuses_a_mix_in_another_order_before_loading_the_policy(tmp_path, capsys):
    from lerobot_pirl.evaluate import main

    trained = _rl_checkpoint(tmp_path / "rl", {"type": "pirl_metaworld_mt", "tasks": TWO})
    with pytest.raises(SystemExit) as e:
        main(["--policy_path", str(trained), "--task", "drawer-close-v3,reach-v3"])
    assert e.value.code == 2 and "error: env.tasks:" in capsys.readouterr().err


def test_write_dataset_needs_one_task_string_per_episode(tmp_path):
    from lerobot_pirl.datasets import state_action_features, write_dataset

    frame = {"observation.state": np.zeros(2), "action": np.zeros(1)}
    with pytest.raises(ValueError, match="2 task strings for 1 episodes"):
        write_dataset(tmp_path / "d", "local/d", 10, state_action_features(2, 1), [[frame]], ["a", "b"])


def test_per_task_evaluation_is_each_tasks_own_evaluation_and_their_average(tmp_path):
    from lerobot_pirl.evaluate import evaluate_policy, evaluate_tasks, load_policy_for_eval

    write_metaworld_base(tmp_path / "base", state_dim=STATE_DIM + 2)
    policy, pre, post = load_policy_for_eval(str(tmp_path / "base"))
    cfg = MetaWorldMultiTaskEnvConfig(tasks=TWO, num_envs=2, episode_length=10, reward_type="dense")
    report = evaluate_tasks(policy, pre, post, cfg, episodes=2)
    assert list(report["tasks"]) == TWO.split(",") and report["episodes"] == 4
    for task, own in report["tasks"].items():
        assert own == evaluate_policy(policy, pre, post, cfg.for_task(task), episodes=2)
    returns = [r["mean_return"] for r in report["tasks"].values()]
    assert returns[0] != returns[1]  # two tasks, two different evaluations
    assert report["mean_return"] == pytest.approx(sum(returns) / 2)
    rates = [r["success_rate"] for r in report["tasks"].values()]
    assert report["success_rate"] == pytest.approx(sum(rates) / 2)
    # A single task config is evaluated as one.
    single = evaluate_tasks(policy, pre, post, cfg.for_task("reach-v3"), episodes=2)
    assert "tasks" not in single and single == report["tasks"]["reach-v3"]


def test_the_mix_average_is_the_mean_of_the_tasks_own_rates(monkeypatch):
    import lerobot_pirl.evaluate as evaluation

    rates = {"reach-v3": 0.25, "drawer-close-v3": 0.75}

    def one_task(policy, pre, post, env_cfg, episodes, *args, **kwargs):
        k = round(rates[env_cfg.task] * episodes)
        return {
            "success_rate": k / episodes,
            "ci95": evaluation.wilson_interval(k, episodes),
            "episodes": episodes,
            "mean_return": float(k),
            "mean_length": 10.0,
        }

    monkeypatch.setattr(evaluation, "evaluate_policy", one_task)
    cfg = MetaWorldMultiTaskEnvConfig(tasks=TWO, num_envs=2)
    report = evaluation.evaluate_tasks(None, None, None, cfg, episodes=8)
    assert report["success_rate"] == 0.5 and report["episodes"] == 16
    assert report["ci95"] == evaluation.wilson_interval(8, 16)
    assert {t: r["success_rate"] for t, r in report["tasks"].items()} == rates
    assert report["mean_return"] == 4.0


def test_normalize_per_group_is_normalize_within_each_group():
    x = torch.tensor([1.0, 2.0, 3.0, 10.0, 30.0, 5.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    out = normalize_per_group(x, groups)
    torch.testing.assert_close(out[:3], normalize(x[:3]))
    torch.testing.assert_close(out[3:5], torch.tensor([-1.0, 1.0]))
    assert out[5] == 0.0  # a group of one carries no relative signal
    torch.testing.assert_close(normalize_per_group(x, torch.zeros(6, dtype=torch.long)), normalize(x))
    with pytest.raises(ValueError, match="differ"):
        normalize_per_group(x, groups[:5])
    with pytest.raises(ValueError, match="std must be"):
        normalize_per_group(x, groups, std="task")


def test_normalize_per_group_with_one_std_keeps_a_quiet_group_quiet():
    # Group 0 carries signal, group 1 only tiny noise (a task with no success in the rollout).
    x = torch.tensor([1.0, 3.0, 5.0, 7.0, 0.001, -0.001, 0.002, 0.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    out = normalize_per_group(x, groups, std="all")
    centred = torch.cat([x[:4] - x[:4].mean(), x[4:] - x[4:].mean()])
    torch.testing.assert_close(out, centred / centred.std(unbiased=False))
    assert float(out[:4].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out[4:].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out[4:].abs().max()) < 1e-3  # not blown up to unit std ...
    assert float(normalize_per_group(x, groups)[4:].std(unbiased=False)) == pytest.approx(
        1.0, rel=1e-3
    )  # ... as per group
    assert float(out.std(unbiased=False)) == pytest.approx(1.0, rel=1e-5)


def test_per_task_advantage_std_is_validated():
    from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig

    with pytest.raises(ValueError, match="per_task_advantage_std must be one of"):
        PiRLAlgorithmConfig(per_task_advantage_std="group")


@pytest.mark.parametrize("per_task,std", [(True, "task"), (True, "rollout"), (False, "task")])
def test_advantages_are_normalised_per_task_of_the_transitions(per_task, std):
    from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
    from tests.helpers import synthetic_transitions, tiny_pi_rl
    from tests.test_algorithm import make_algo

    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, normalize_advantages_per_task=per_task, per_task_advantage_std=std)
    transitions = synthetic_transitions(policy, n_envs=4, n_chunks=6)
    for t in transitions:  # envs 0-1 play task A, envs 2-3 task B (B's rewards on another scale)
        env = int(t["complementary_info"]["env_id"])
        t["state"]["task"] = ["task A" if env < 2 else "task B"]
        t["reward"] = float(t["reward"]) * (1.0 if env < 2 else 50.0) + (0.0 if env < 2 else 3.0)
    buffer = RolloutBuffer(algo.transition_spec())
    assert buffer.add(transitions) == len(transitions)
    batch, _ = buffer.take(0, 1)
    rollout = algo.prepare_rollout(batch)
    is_a = torch.tensor([t == "task A" for t in batch.state["task"]])
    adv = rollout.advantages.cpu()
    assert float(adv.mean()) == pytest.approx(0.0, abs=1e-5)
    means = [float(adv[m].mean()) for m in (is_a, ~is_a)]
    stds = [float(adv[m].std(unbiased=False)) for m in (is_a, ~is_a)]
    if per_task:
        assert means == pytest.approx([0.0, 0.0], abs=1e-5)
    if per_task and std == "task":
        assert stds == pytest.approx([1.0, 1.0], rel=1e-4)
    elif per_task:  # one std over the rollout: B's 50x rewards keep B's advantages the larger
        assert float(adv.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
        assert stds[1] > 5 * stds[0]
    else:
        assert abs(means[0] - means[1]) > 0.1


def test_training_success_is_reported_per_task():
    from lerobot_pirl.runtime.episodes import EpisodeTracker
    from lerobot_pirl.runtime.interactions import EpisodeLog, per_task_success
    from lerobot_pirl.runtime.vector import ChunkResult

    tracker = EpisodeTracker(3)
    done = np.array([True, True, True])
    result = ChunkResult(
        next_obs={},
        last_obs={},
        rewards=np.ones(3),
        steps=np.full(3, 5),
        terminated=done,
        truncated=~done,
        success=np.array([True, False, True]),
        episode_success=np.array([True, False, True]),
    )
    episodes = tracker.record(result, np.zeros(3), ["reach-v3", "reach-v3", "push-v3"])
    assert [e["task"] for e in episodes] == ["reach-v3", "reach-v3", "push-v3"]
    assert "task" not in tracker.record(result, np.zeros(3))[0]  # one-task envs name none
    log = EpisodeLog()
    log.add(episodes)
    summary = log.summary()
    assert summary["episode_success/reach-v3"] == 0.5 and summary["episode_success/push-v3"] == 1.0
    assert summary["episode_success"] == pytest.approx(2 / 3)
    # A peer cannot grow the record without bound: at most max_tasks names, each at most 100 characters.
    many = [{"return": 0.0, "success": 1.0, "length": 1, "task": f"t{i}"} for i in range(150)]
    assert len(per_task_success([*many, {"success": 1.0, "task": "x" * 101}])) == 100


def test_tasks_nobody_tuned_get_the_one_rule_and_mixes_scale_it():
    from lerobot_pirl.bench.setups import RULE, SFT_STEPS_PER_TASK, TASKS, task_setup

    assert task_setup("hammer-v3") == RULE and "hammer-v3" not in TASKS
    assert task_setup("push-v3") == TASKS["push-v3"]
    mt10 = task_setup("MT10")
    assert (mt10.demos, mt10.action_noise, mt10.noise_gripper) == (
        RULE.demos,
        RULE.action_noise,
        RULE.noise_gripper,
    )
    assert mt10.rl_updates == 10 * RULE.rl_updates and mt10.sft_steps == max(
        RULE.sft_steps, 10 * SFT_STEPS_PER_TASK
    )
    assert task_setup(TWO, demos=2).demos == 2


def test_a_run_refuses_a_mix_in_another_order_than_its_base_policy(tmp_path):
    from tests.helpers import parse_run_config

    base = _rl_checkpoint(tmp_path / "base", {"type": "pirl_metaworld_mt", "tasks": TWO})
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "policy": {"type": "pi_rl", "base_policy_path": str(base), "device": "cpu", "push_to_hub": False},
        "env": {"type": "pirl_metaworld_mt", "tasks": "drawer-close-v3,reach-v3", "num_envs": 2},
    }
    with pytest.raises(ValueError, match=r"env\.tasks: the policy at .* was trained with"):
        parse_run_config(tmp_path, cfg)
