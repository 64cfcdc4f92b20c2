"""The whole few-shot pipeline on one easy task with a tiny budget (`slow`)."""

from __future__ import annotations

import json

import pytest
import torch

from lerobot_pirl.bench.cli import main

pytestmark = pytest.mark.slow


def test_demos_sft_pirl_and_evaluation_end_to_end(tmp_path):
    results = tmp_path / "results.json"
    common = [
        "--task",
        "drawer-close-v3",
        "--noise_method",
        "flow_sde",
        "--demos",
        "2",
        "--action_noise",
        "0.5",
        "--sft_steps",
        "40",
        "--eval_episodes",
        "6",
        "--eval_every",
        "1",
        "--out",
        str(tmp_path / "bench"),
        "--results",
        str(results),
        # 4 envs x 30 chunks: one whole 150-step episode per env and rollout (GRPO grades whole ones)
        "--rl_arg=--algorithm.rollout_size=120",
        "--rl_arg=--algorithm.minibatch_size=40",
        "--rl_arg=--env.num_envs=4",
    ]
    main(
        [
            *common,
            "--rl_updates",
            "2",
            # PPO, GRPO (groups of 2 envs that share reset states) and LeRobot's SAC on a tiny budget.
            "--algorithm",
            "ppo",
            "grpo",
            "sac",
            "--rl_arg=--env.group_size=2",
            "--rl_arg=--algorithm.grpo_group_size=2",
            "--sac_env_steps=640",
            "--sac_updates_per_env_step=0.05",
        ]
    )
    root = tmp_path / "bench" / "drawer-close-v3"
    assert (root / "demos" / "meta" / "info.json").is_file()  # a real LeRobotDataset
    from lerobot.datasets import LeRobotDataset

    from lerobot_pirl.collect import collect_episodes

    demo_actions = LeRobotDataset("local/drawer-close-v3", root=root / "demos")[0]["action"]
    clean, _ = collect_episodes("drawer-close-v3", 1, progress=False)
    assert not torch.allclose(
        demo_actions, torch.as_tensor(clean[0][0]["action"])
    )  # the demo noise was applied
    assert (root / "sft" / "checkpoints" / "last" / "pretrained_model" / "model.safetensors").is_file()
    records = [
        json.loads(line) for line in (root / "flow_sde" / "rl" / "metrics.jsonl").read_text().splitlines()
    ]
    updates = [r for r in records if r["kind"] == "update"]
    assert len(updates) >= 2
    assert updates[-1]["rollout_version_max"] >= 1  # weights synced to the actor
    payload = json.loads(results.read_text())
    assert [r["method"] for r in payload["tasks"]] == ["ppo", "grpo", "sac"]
    for row in payload["tasks"]:
        assert row["task"] == "drawer-close-v3" and row["eval_episodes"] == 6
        assert 0.0 <= row["sft_success"] <= 1.0 and 0.0 <= row["rl_success"] <= 1.0
        assert row["raw_env_steps_per_s"] > 0 and 0 < row["sim_fraction"] < 2 and row["time_shares"]
    grpo = [json.loads(x) for x in (root / "flow_sde_grpo" / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "update" for r in grpo) >= 2
    sac = [json.loads(x) for x in (root / "sac" / "sac" / "metrics.jsonl").read_text().splitlines()]
    assert sac[-1]["env_steps"] >= 640 and sac[-1]["update"] > 0 and "loss_critic" in sac[-1]
    assert (root / "sac" / "sac" / "pretrained_model" / "model.safetensors").is_file()
    assert (root / "sac" / "success_vs_env_steps.png").stat().st_size > 10_000
    assert (root / "flow_sde" / "success_vs_env_steps.png").stat().st_size > 10_000
    assert results.with_suffix(".md").read_text().startswith("| task |")

    # The PPO run continued by --resume to a third update: its learner resumes from update 2's checkpoint
    # (demos and SFT reused), and the log reads as one run.
    main([*common, "--rl_updates", "3", "--algorithm", "ppo", "--resume"])
    assert "resumed: update 2, policy version 2" in (root / "flow_sde" / "logs" / "learner.out").read_text()
    records = [
        json.loads(line) for line in (root / "flow_sde" / "rl" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["update"] for r in records if r["kind"] == "update"] == [1, 2, 3]
    versions = [r["policy_version"] for r in records if r["kind"] == "eval"]
    assert len(versions) == len(set(versions))  # the resumed actor's evaluation of v2 is not logged twice
    walls = [r["wall_s"] for r in records if r["kind"] == "update"]
    assert walls == sorted(walls)  # one clock across the two invocations
    ppo = {
        r["rl_updates_budget"]: r for r in json.loads(results.read_text())["tasks"] if r["method"] == "ppo"
    }
    assert ppo[3]["resumed_from_update"] == 2 and ppo[3]["updates"] == 3  # a row of its own: another budget
    assert ppo[2]["updates"] == 2


def test_multitask_pipeline_end_to_end(tmp_path):
    """Three tasks, one policy: multi-task demos -> one SFT -> πRL on the mix (its envs re-split by the actor)
    -> per-task evaluation."""
    tasks = "reach-v3,drawer-close-v3,button-press-topdown-v3"
    results = tmp_path / "results_mt.json"
    main(
        [
            "--task",
            tasks,
            "--noise_method",
            "flow_sde",
            "--demos",
            "2",
            "--sft_steps",
            "40",
            "--rl_updates",
            "2",
            "--eval_episodes",
            "4",
            "--train_eval_episodes",
            "2",
            "--eval_every",
            "1",
            "--out",
            str(tmp_path / "bench"),
            "--results",
            str(results),
            "--rl_arg=--algorithm.rollout_size=48",
            "--rl_arg=--algorithm.minibatch_size=24",
            "--rl_arg=--env.num_envs=6",
            "--rl_arg=--env.episode_length=20",  # training episodes end within the two updates
            "--rl_arg=--policy.actor.stats_period_s=0.2",  # episode statistics reach the learner sooner
            "--rl_arg=--policy.actor.rebalance_envs_every=1",  # the envs re-split by training failure
        ]
    )
    root = tmp_path / "bench" / tasks.replace(",", "+")
    from lerobot.datasets import LeRobotDataset

    demos = LeRobotDataset("local/mt", root=root / "demos")
    assert demos.num_episodes == 6 and len(demos.meta.tasks) == 3  # 2 demos of each task, 3 instructions
    assert demos[0]["observation.state"].shape == (39 + 3,)  # the state ends with the task's one-hot
    records = [
        json.loads(line) for line in (root / "flow_sde" / "rl" / "metrics.jsonl").read_text().splitlines()
    ]
    updates = [r for r in records if r["kind"] == "update"]
    assert len(updates) >= 2
    # Training success per task, from the actor's env workers' task names. The actor's episode statistics
    # arrive on their own clock (every stats_period_s), not per rollout, so one update's record may hold
    # some tasks' episodes and the next the others': every task must appear, not every task in one record.
    assert all(any(f"episode_success/{t}" in r for r in updates) for t in tasks.split(","))
    # The actor's split of its 6 envs (one env per task at least), logged and drawn.
    splits = [[r[f"envs/{t}"] for t in tasks.split(",")] for r in updates if "envs/reach-v3" in r]
    assert splits and all(sum(s) == 6 and min(s) >= 1 for s in splits)
    assert (root / "flow_sde" / "env_split.png").stat().st_size > 10_000
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and all(f"eval_success_rate/{t}" in evals[0] for t in tasks.split(","))
    assert evals[0]["eval_episodes"] == 3 * 2  # per-task evaluation during training
    row = json.loads(results.read_text())["tasks"][0]
    assert row["task"] == tasks and row["eval_episodes"] == 3 * 4
    assert sorted(row["per_task"]) == sorted(tasks.split(","))
    for r in row["per_task"].values():
        assert r["episodes"] == 4 and 0.0 <= r["sft_success"] <= 1.0 and 0.0 <= r["rl_success"] <= 1.0
    mean = sum(r["rl_success"] for r in row["per_task"].values()) / 3
    assert abs(row["rl_success"] - mean) < 1e-9
    assert (root / "flow_sde" / "per_task_success.png").stat().st_size > 10_000
    assert (root / "flow_sde" / "per_task_curves.png").stat().st_size > 10_000
