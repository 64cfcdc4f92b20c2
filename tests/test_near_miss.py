"""The near-miss diagnostic: MetaWorld's goal distance in the env's info, one episode's closest / final
distance, the failures' summary, and its refusal of held-out seeds."""

from __future__ import annotations

import numpy as np
import pytest

from lerobot_pirl.bench.near_miss import Approach, approach_summary, main, play
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


def test_the_diagnostic_stays_off_the_held_out_seeds(tmp_path):
    with pytest.raises(SystemExit, match="held-out"):
        main(["--policy_path", str(tmp_path), "--task", "reach-v3", "--first_seed", "2999990"])
