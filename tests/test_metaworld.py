"""The pirl_metaworld env config, demo collection and the chunk stepper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lerobot_pirl.collect import collect_episodes
from lerobot_pirl.envs.metaworld import MetaWorldStateEnv, MetaWorldStateEnvConfig
from lerobot_pirl.runtime.vector import ChunkStepper
from tests.helpers import write_metaworld_base


def test_env_config_shapes_features_and_registration():
    from lerobot.envs.configs import EnvConfig

    assert EnvConfig.get_choice_class("pirl_metaworld") is MetaWorldStateEnvConfig
    cfg = MetaWorldStateEnvConfig(task="drawer-close-v3", num_envs=3)
    assert cfg.features["agent_pos"].shape == (39,) and cfg.features["action"].shape == (4,)
    assert cfg.features_map["agent_pos"] == "observation.state"
    vec = cfg.create_envs()["pirl_metaworld"][0]
    obs, _ = vec.reset()
    assert obs["agent_pos"].shape == (3, 39) and obs["agent_pos"].dtype == np.float32
    vec.close()
    with pytest.raises(ValueError, match="reward_type"):
        MetaWorldStateEnvConfig(reward_type="shaped")
    with pytest.raises(ValueError, match="group_size"):
        MetaWorldStateEnvConfig(num_envs=4, group_size=3)
    with pytest.raises(ValueError, match="task"):
        MetaWorldStateEnv("no-such-task-v3")


def test_training_and_evaluation_seeds_are_disjoint_and_deterministic():
    cfg = MetaWorldStateEnvConfig(task="button-press-v3", num_envs=4, seed=0, eval_seed=10)
    train = [cfg.make_env(i, seed_stride=4, seed_limit=cfg.eval_seed) for i in range(4)]
    seeds = sorted(env.reset()[1]["episode_seed"] for env in train for _ in range(2))
    assert seeds == list(range(8))
    env = train[0]
    assert env.reset()[1]["episode_seed"] == 8
    with pytest.raises(RuntimeError, match="held-out"):
        env.reset()  # the next training seed would be 12 >= eval_seed
    a, b = cfg.make_env(cfg.eval_seed), cfg.make_env(cfg.eval_seed)
    obs_a, _ = a.reset(seed=cfg.eval_seed + 3)
    obs_b, _ = b.reset(seed=cfg.eval_seed + 3)
    assert np.array_equal(obs_a["agent_pos"], obs_b["agent_pos"])  # same seed, same task variation


@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
def test_reward_types_and_success_flag(reward_type):
    eps, _ = collect_episodes("button-press-v3", 1, seed=123, progress=False)
    actions = [f["action"] for f in eps[0]]
    env = MetaWorldStateEnv("button-press-v3", reward_type=reward_type, reward_scale=0.1)
    env.reset(seed=123)
    rewards, info, terminated = [], {}, False
    for a in actions:
        _, r, terminated, truncated, info = env.step(a)
        rewards.append(r)
        if terminated or truncated:
            break
    assert terminated and info["is_success"]  # the expert's demo replays to success, which terminates
    if reward_type == "sparse":
        assert rewards[-1] == 1.0 and set(rewards[:-1]) == {0.0}
    else:
        assert 0.0 < rewards[-1] <= 1.0 and len(set(rewards)) > 2


def test_progress_reward_is_success_plus_the_change_of_the_shaped_reward():
    eps, _ = collect_episodes("button-press-v3", 1, seed=123, progress=False)
    actions = [f["action"] for f in eps[0]]
    runs = {}
    for reward_type in ("dense", "progress"):
        env = MetaWorldStateEnv("button-press-v3", reward_type=reward_type, reward_scale=0.1)
        for _ in range(2):  # the second episode starts from zero shaping again
            env.reset(seed=123)
            steps = [env.step(a) for a in actions]
        runs[reward_type] = steps
    dense = np.array([s[1] for s in runs["dense"]])
    progress = np.array([s[1] for s in runs["progress"]])
    success = np.array([float(s[4]["is_success"]) for s in runs["progress"]])
    expected = success + np.diff(dense, prepend=dense[0])
    np.testing.assert_allclose(progress, expected, rtol=1e-6, atol=1e-9)
    assert progress[0] == 0.0 and success[-1] == 1.0
    # potential-based: the episode's rewards sum to its success plus its net shaped progress
    np.testing.assert_allclose(progress.sum(), success.sum() + dense[-1] - dense[0], rtol=1e-6)


def test_distance_scale_adds_the_steps_approach_to_the_goal():
    eps, _ = collect_episodes("button-press-v3", 1, seed=123, progress=False)
    actions = [f["action"] for f in eps[0]]
    runs = {}
    for scale in (0.0, 5.0):
        env = MetaWorldStateEnv("button-press-v3", reward_type="sparse", distance_scale=scale)
        for _ in range(2):  # the second episode starts from zero shaping again
            env.reset(seed=123)
            steps = [env.step(a) for a in actions]
        runs[scale] = steps
    sparse = np.array([s[1] for s in runs[0.0]])
    shaped = np.array([s[1] for s in runs[5.0]])
    distance = np.array([s[4]["goal_distance"] for s in runs[5.0]])
    assert np.isfinite(distance).all() and distance[-1] < distance[0]  # the expert closes in on the goal
    np.testing.assert_allclose(shaped, sparse + 5.0 * np.concatenate([[0.0], -np.diff(distance)]), atol=1e-9)
    assert shaped[0] == sparse[0] == 0.0 and sparse[-1] == 1.0
    # potential-based: the shaping sums to the net approach after the first step
    np.testing.assert_allclose(shaped.sum(), 1.0 + 5.0 * (distance[0] - distance[-1]), rtol=1e-6)
    with pytest.raises(ValueError, match="distance_scale"):
        MetaWorldStateEnvConfig(task="button-press-v3", distance_scale=-1.0)
    with pytest.raises(ValueError, match="distance_scale"):
        MetaWorldStateEnv("button-press-v3", distance_scale=-1.0)


def test_chunk_stepper_never_runs_a_chunk_across_two_episodes():
    cfg = MetaWorldStateEnvConfig(task="button-press-v3", num_envs=2, episode_length=7)
    stepper = ChunkStepper(cfg.create_envs()["pirl_metaworld"][0])
    stepper.reset()
    res = stepper.step_chunk(np.zeros((2, 5, 4), dtype=np.float32))
    assert res.steps.tolist() == [5, 5] and not res.truncated.any()
    res = stepper.step_chunk(np.zeros((2, 5, 4), dtype=np.float32))
    # The episode ends after 7 steps: the second chunk executes only 2 of its 5 actions.
    assert res.steps.tolist() == [2, 2] and res.truncated.all()
    before = [env._t for env in stepper.vec.envs]
    stepper.reset_done(res)
    assert before == [7, 7] and [env._t for env in stepper.vec.envs] == [0, 0]


def test_goal_stays_in_the_state_after_reset():
    """MetaWorld caches its observation space; a stale one would clip the goal dims to 0 after reset."""
    env = MetaWorldStateEnv("push-v3")
    obs, _ = env.reset(seed=7)
    goal = obs["agent_pos"][36:39].copy()
    assert np.abs(goal).sum() > 0
    for _ in range(3):
        obs, *_ = env.step(np.zeros(4, dtype=np.float32))
        np.testing.assert_allclose(obs["agent_pos"][36:39], goal, atol=1e-6)


def test_held_out_evaluation_is_reproducible_and_leaves_the_callers_random_stream(tmp_path):
    """The ODE's initial noise is seeded from eval_seed: one checkpoint, one result; the global RNG is
    untouched (an actor evaluating between rollouts keeps its sampling stream)."""
    from lerobot_pirl.evaluate import evaluate_policy, load_policy_for_eval

    write_metaworld_base(tmp_path / "base")
    policy, pre, post = load_policy_for_eval(str(tmp_path / "base"))
    cfg = MetaWorldStateEnvConfig(
        task="button-press-v3", num_envs=2, episode_length=12, eval_seed=77, reward_type="dense"
    )
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = evaluate_policy(policy, pre, post, cfg, episodes=2)
    assert torch.equal(torch.get_rng_state(), state)
    torch.randn(5)  # a different global stream before the second evaluation
    assert evaluate_policy(policy, pre, post, cfg, episodes=2) == first
    cfg.eval_seed = 78  # other seeds: other episodes and other noise
    assert evaluate_policy(policy, pre, post, cfg, episodes=2)["mean_return"] != first["mean_return"]


def test_held_out_evaluation_batches_by_the_protocol_not_by_the_training_envs(tmp_path):
    """The actor evaluates with its training env config (e.g. 16 envs), the benchmark with 10: both run
    the protocol's batches, so the same checkpoint on the same seeds gives the same result."""
    from lerobot_pirl.evaluate import evaluate_policy, load_policy_for_eval

    write_metaworld_base(tmp_path / "base")
    policy, pre, post = load_policy_for_eval(str(tmp_path / "base"))
    reports = [
        evaluate_policy(
            policy,
            pre,
            post,
            MetaWorldStateEnvConfig(
                task="button-press-v3", num_envs=n, episode_length=10, reward_type="dense"
            ),
            episodes=4,
        )
        for n in (2, 5)
    ]
    assert reports[0] == reports[1]
    assert reports[0]["seeds"] == [3_000_000, 3_000_003]


@pytest.mark.slow  # renders (MUJOCO_GL=egl)
def test_camera_frames_are_rendered_every_camera_every_steps_and_at_episode_end():
    """With camera_every=3 a new frame comes at reset, at steps 3, 6, ... and at the episode's last step;
    in between the last frame is held (the policy reads only chunk starts). The env's language
    instruction is LeRobot's MetaWorld description."""
    env = MetaWorldStateEnv("button-press-v3", episode_length=7, image_size=32, camera_every=3)
    assert env.task_description == "Press a button"
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
    frames, truncated = [obs["pixels"]], False
    while not truncated:
        obs, _, _, truncated, _ = env.step(np.array([1.0, 1.0, 0.0, 0.0], np.float32))
        frames.append(obs["pixels"])
    assert len(frames) == 8
    new = [t for t in range(1, 8) if not np.array_equal(frames[t], frames[t - 1])]
    assert new == [3, 6, 7]  # the arm moved every step, but only these steps rendered a frame
    assert np.array_equal(frames[7], env.render())
    env.close()
    with pytest.raises(ValueError, match="camera_every"):
        MetaWorldStateEnvConfig(image_size=32, camera_every=0)


@pytest.mark.slow  # renders (MUJOCO_GL=egl)
def test_demos_with_images_are_a_lerobot_dataset_with_the_instruction(tmp_path):
    from lerobot.datasets import LeRobotDataset

    from lerobot_pirl.collect import collect_dataset

    collect_dataset("drawer-close-v3", 1, tmp_path / "d", episode_length=150, image_size=32, progress=False)
    ds = LeRobotDataset("local/drawer-close-v3", root=tmp_path / "d")
    item = ds[0]
    assert item["observation.image"].shape == (3, 32, 32) and item["observation.image"].max() <= 1.0
    assert item["observation.state"].shape == (39,) and item["task"] == "Push and close a drawer"
    assert ds.meta.features["observation.image"]["dtype"] == "image"


def test_grpo_on_pirl_metaworld_compares_the_envs_that_share_reset_states(tmp_path):
    """The actor's own stepping on pirl_metaworld with groups of 2 envs: group members start every episode
    from the same state, and the learner's GRPO advantages are ``(R - mean_g) / (std_g + 1e-6)`` over the
    two members' returns of the same episode."""
    import threading

    from lerobot_pirl.actor import PiRLActor, make_actor_env
    from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
    from lerobot_pirl.runtime.episodes import EpisodeTracker
    from lerobot_pirl.runtime.transitions import decode_transitions
    from tests.helpers import metaworld_run_config

    algorithm = {
        "type": "pi_rl",
        "estimator": "grpo",
        "grpo_group_size": 2,
        "grpo_success_filter": False,
        "normalize_advantages": False,
        "value_loss_coef": 0.0,
        "rollout_size": 48,
        "minibatch_size": 16,
    }
    env = {"type": "pirl_metaworld", "task": "reach-v3", "num_envs": 4, "group_size": 2, "episode_length": 9}
    env.update(reward_type="dense", terminate_on_success=False)  # returns differ within a group
    cfg = metaworld_run_config(tmp_path, algorithm=algorithm, env=env)
    actor = PiRLActor(cfg, threading.Event())
    actor.algorithm.policy_version = 0
    actor_env = make_actor_env(cfg)
    obs = actor_env.stepper.reset()
    episodes = EpisodeTracker(4)
    returns: dict[tuple[int, int], float] = {}
    for _ in range(12):  # 3-step chunks, 9-step episodes: 4 whole episodes per env
        if int(episodes.episode_chunks[0]) == 0:  # a new episode everywhere: each group from one state
            starts = obs["agent_pos"]
            np.testing.assert_array_equal(starts[0], starts[1])
            np.testing.assert_array_equal(starts[2], starts[3])
            assert not np.array_equal(starts[0], starts[2])
        ids = episodes.episode_ids.clone()
        raw, sample, result = actor.act(actor_env, obs)
        nxt = actor_env.observations(result.next_obs, actor_env.tasks)
        actor.queue_transitions(raw, nxt, sample, result, np.zeros(4), 0, episodes)
        for e in range(4):
            key = (e // 2, int(ids[e]))
            returns.setdefault(key, [0.0, 0.0])[e % 2] += float(result.rewards[e])
        episodes.record(result, np.zeros(4))
        obs = actor_env.stepper.reset_done(result)
    actor_env.stepper.close()
    transitions = []
    while not actor.transitions_queue.empty():
        transitions += decode_transitions(actor.transitions_queue.get())
    buffer = RolloutBuffer(actor.algorithm.transition_spec())
    buffer.add(transitions)
    batch, _ = buffer.take(0, 1)
    rollout = actor.algorithm.prepare_rollout(batch, actor.pre)
    expected = []
    for pair in returns.values():
        r = torch.tensor(pair, dtype=torch.float64)
        expected += ((r - r.mean()) / (r.std(unbiased=False) + 1e-6)).tolist()
    got = rollout.advantages.double()
    assert len(returns) == 8
    # every chunk carries one of its group's advantages, and every episode's advantage is carried
    assert all(float((got - e).abs().min()) < 1e-3 for e in expected)
    assert all(min(abs(float(a) - e) for e in expected) < 1e-3 for a in got)


def test_grpo_groups_must_be_the_envs_that_share_reset_states(tmp_path):
    from tests.helpers import metaworld_run_config

    algorithm = {"type": "pi_rl", "estimator": "grpo", "grpo_group_size": 8, "value_loss_coef": 0.0}
    with pytest.raises(ValueError, match=r"env.group_size \(2\) must equal algorithm.grpo_group_size \(8\)"):
        metaworld_run_config(
            tmp_path, algorithm=algorithm, env={"type": "pirl_metaworld", "num_envs": 4, "group_size": 2}
        )


@pytest.mark.parametrize(
    ("env", "rollout_size", "error"),
    [
        ({"terminate_on_success": True}, 60, r"env.terminate_on_success: GRPO needs false"),
        # 4 envs, 60 chunks: 15 per env, episodes of 150 / 3 = 50 chunks
        ({"terminate_on_success": False}, 60, r"algorithm.rollout_size \(60\).*a multiple of 200"),
        ({"terminate_on_success": False}, 200, None),
        # an actor's own pacing (several actors share a rollout) is what must hold whole episodes then
        ({"terminate_on_success": False, "chunks_per_version": 60}, 200, r"chunks_per_version \(60\).*of 50"),
        ({"terminate_on_success": False, "chunks_per_version": 100}, 60, None),
    ],
)
def test_grpo_groups_must_end_their_episodes_together_and_fit_a_rollout(tmp_path, env, rollout_size, error):
    """Ended on success, a group's episodes drift apart; cut by a rollout boundary, they are never graded."""
    from tests.helpers import metaworld_run_config

    algorithm = {"type": "pi_rl", "estimator": "grpo", "grpo_group_size": 2, "value_loss_coef": 0.0}
    algorithm.update(rollout_size=rollout_size, minibatch_size=20)
    env = {"type": "pirl_metaworld", "num_envs": 4, "group_size": 2, "episode_length": 150, **env}
    actor = {"chunks_per_version": env.pop("chunks_per_version", None)}
    if error is None:
        metaworld_run_config(tmp_path, policy={"actor": actor}, algorithm=algorithm, env=env)
        return
    with pytest.raises(ValueError, match=error):
        metaworld_run_config(tmp_path, policy={"actor": actor}, algorithm=algorithm, env=env)


def test_an_expert_that_never_succeeds_raises_naming_the_task_and_noise(monkeypatch):
    import lerobot_pirl.collect as collect

    class Idle:  # never moves: the episode can only time out
        def get_action(self, state):
            return np.zeros(4)

    monkeypatch.setattr(collect, "expert_policy", lambda task: Idle())
    monkeypatch.setattr(collect, "ATTEMPTS_PER_DEMO", 2)
    with pytest.raises(
        collect.TooFewSuccessesError, match=r"drawer-close-v3 expert \(action noise 0.5\).* 0 of 2"
    ):
        collect.collect_episodes("drawer-close-v3", 1, episode_length=5, action_noise=0.5, progress=False)


def test_demo_noise_is_halved_until_the_expert_succeeds_and_recorded(monkeypatch, tmp_path):
    import lerobot_pirl.collect as collect

    assert collect.noise_levels(1.0) == [1.0, 0.5, 0.25, 0.125, 0.0]
    assert collect.noise_levels(0.0) == [0.0]
    real = collect.collect_episodes
    tried = []

    def breaks_above_a_third(task, episodes, action_noise=0.0, **kwargs):  # like assembly-v3 at noise 1.0
        tried.append((task, action_noise))
        if task == "drawer-close-v3" and action_noise > 0.3:
            raise collect.TooFewSuccessesError(f"the {task} expert failed")
        return real(task, episodes, action_noise=action_noise, **kwargs)

    monkeypatch.setattr(collect, "collect_episodes", breaks_above_a_third)
    stats = collect.collect_dataset(
        ["reach-v3", "drawer-close-v3"],
        1,
        tmp_path / "demos",
        episode_length=150,
        action_noise=1.0,
        progress=False,
    )
    assert tried == [
        ("reach-v3", 1.0),
        ("drawer-close-v3", 1.0),
        ("drawer-close-v3", 0.5),
        ("drawer-close-v3", 0.25),
    ]
    assert stats["episodes"] == 2 and stats["noise_lowered"] == {"drawer-close-v3": 0.25}

    def never(task, episodes, action_noise=0.0, **kwargs):
        raise collect.TooFewSuccessesError(f"the {task} expert (action noise {action_noise}) failed")

    monkeypatch.setattr(collect, "collect_episodes", never)
    # The noiseless expert is the last try, and its failure is the error.
    with pytest.raises(collect.TooFewSuccessesError, match=r"action noise 0\.0\)"):
        collect.collect_with_noise_backoff("reach-v3", 1, 1.0)
