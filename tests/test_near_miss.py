"""The near-miss diagnostic: MetaWorld's goal distance in the env's info, one episode's closest / final
distance, the failures' summary, and its refusal of held-out seeds."""

from __future__ import annotations

import numpy as np
import pytest

from lerobot_pirl.bench.near_miss import (
    GOAL_DIMS,
    Approach,
    approach_summary,
    demo_goals,
    main,
    nearest_gap,
    play,
)
from lerobot_pirl.envs.metaworld import STATE_DIM, MetaWorldStateEnv, metaworld_env_config
from tests.helpers import write_metaworld_base


def test_reach_goal_distance_is_the_hands_distance_to_its_target():
    env = MetaWorldStateEnv("reach-v3", episode_length=5)
    env.reset(seed=2_000_000)
    try:
        for action in ([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0]):
            _, _, _, _, info = env.step(np.array(action, dtype=np.float32))
            hand_to_goal = np.linalg.norm(env._env.tcp_center - env._env._target_pos)
            assert info["goal_distance"] == pytest.approx(hand_to_goal, abs=1e-6)
            assert info["is_success"] == (hand_to_goal <= 0.05)
    finally:
        env.close()


def test_summary_counts_failures_and_those_that_drifted_off():
    episodes = [
        Approach(0, True, 0.01, 0.01, [0, 0, 0]),
        Approach(1, False, 0.06, 0.10, [0, 0, 0]),  # got to 6 cm, ended at 10: drifted off
        Approach(2, False, 0.20, 0.20, [0, 0, 0]),  # never closer than where it ended
        Approach(3, False, 0.08, 0.0805, [0, 0, 0]),  # within a millimetre: not counted as drifting
    ]
    s = approach_summary(episodes)
    assert s["success_rate"] == 0.25 and s["failures"] == 3
    assert s["failed_closest_median"] == pytest.approx(0.08)
    assert s["failed_closest_range"] == [pytest.approx(0.06), pytest.approx(0.20)]
    assert s["failed_final_median"] == pytest.approx(0.10)
    assert s["failed_drifted_off"] == 1
    assert "failures" not in approach_summary(episodes[:1])


def test_an_episode_of_a_mix_policy_reports_its_closest_and_final_distance(tmp_path):
    from lerobot_pirl.evaluate import load_policy_for_eval

    write_metaworld_base(tmp_path / "base", state_dim=STATE_DIM + 2)
    policy, pre, post = load_policy_for_eval(str(tmp_path / "base"))
    cfg = metaworld_env_config("reach-v3,push-v3", episode_length=7).for_task("reach-v3")
    e = play(policy, pre, post, cfg, seed=2_000_003)
    assert 0 < e.closest <= e.final and len(e.goal) == 3
    env = MetaWorldStateEnv("reach-v3")
    env.reset(seed=2_000_003)
    assert e.goal == pytest.approx(list(env._env._target_pos))  # the episode's own goal
    env.close()


def test_zero_noise_is_the_central_path_whatever_the_random_state(tmp_path):
    import torch

    from lerobot_pirl.evaluate import load_policy_for_eval

    write_metaworld_base(tmp_path / "base")
    policy, pre, post = load_policy_for_eval(str(tmp_path / "base"))
    cfg = metaworld_env_config("reach-v3", episode_length=9)
    runs = {}
    for scale in (0.0, 1.0):
        for torch_seed in (1, 2):
            torch.manual_seed(torch_seed)
            runs[scale, torch_seed] = play(policy, pre, post, cfg, seed=2_000_001, noise_scale=scale)
    assert runs[0.0, 1] == runs[0.0, 2]
    assert runs[1.0, 1].closest != runs[1.0, 2].closest  # the policy's own noise: a different episode


def test_demo_goals_are_each_demo_episodes_first_goal_of_the_chosen_task(tmp_path):
    from lerobot.datasets import LeRobotDataset

    from lerobot_pirl.collect import collect_dataset

    collect_dataset(
        ["reach-v3", "drawer-close-v3"], 2, tmp_path / "demos", episode_length=150, progress=False
    )
    ds = LeRobotDataset("local/mt", root=tmp_path / "demos")
    starts = [ds[int(i)]["observation.state"].numpy() for i in ds.meta.episodes["dataset_from_index"]]
    reach = np.stack([s[GOAL_DIMS] for s in starts if s[STATE_DIM] == 1])
    assert demo_goals(tmp_path / "demos", task_index=0) == pytest.approx(reach)
    assert len(demo_goals(tmp_path / "demos", task_index=1)) == 2 and len(demo_goals(tmp_path / "demos")) == 4
    assert nearest_gap(list(reach[1] + [0.03, 0.04, 0.0]), reach) == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="LeRobotDataset root"):
        demo_goals(tmp_path)
    s = approach_summary(
        [Approach(0, True, 0.04, 0.04, [0, 0, 0], 0.01), Approach(1, False, 0.1, 0.2, [0, 0, 0], 0.09)]
    )
    assert s["succeeded_demo_gap_median"] == 0.01 and s["failed_demo_gap_median"] == 0.09


def test_the_diagnostic_stays_off_the_held_out_seeds(tmp_path):
    with pytest.raises(SystemExit, match="held-out"):
        main(["--policy_path", str(tmp_path), "--task", "reach-v3", "--first_seed", "2999990"])
