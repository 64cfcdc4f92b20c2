"""The pi_rl RLAlgorithm: config, rollout assembly, update direction, state round trips."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
from lerobot.rl.algorithms.configs import RLAlgorithmConfig

from lerobot_pirl.algorithms.pi_rl.advantages import compute_gae
from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm, Rollout, RolloutSource
from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from tests.helpers import obs_batch, synthetic_transitions, tiny_pi_rl


def make_algo(policy, **kw) -> PiRLAlgorithm:
    defaults = dict(rollout_size=16, minibatch_size=8, update_epochs=2, actor_lr=1e-3, critic_lr=1e-3)
    cfg = PiRLAlgorithmConfig(policy_config=policy.config, **{**defaults, **kw})
    algo = PiRLAlgorithm(policy, cfg)
    algo.make_optimizers_and_scheduler()
    return algo


def test_registered_and_built_from_policy_config():
    assert RLAlgorithmConfig.get_choice_class("pi_rl") is PiRLAlgorithmConfig
    noise_policy = tiny_pi_rl("flow_noise")
    assert PiRLAlgorithmConfig.from_policy_config(noise_policy.config).entropy_coef == 0.005
    assert PiRLAlgorithmConfig.from_policy_config(tiny_pi_rl("flow_sde").config).entropy_coef == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"clip_ratio_low": -0.1}, "clip_ratio_low"),
        ({"clip_ratio_high": 0.0}, "clip_ratio_high"),
        ({"gae_lambda": 1.5}, "gae_lambda"),
        ({"gamma": -0.1}, "gamma"),
        ({"minibatch_size": 64, "rollout_size": 32}, "minibatch_size"),
        ({"estimator": "vtrace"}, "estimator"),
        ({"max_policy_lag": -1}, "max_policy_lag"),
        ({"target_kl": 0.0}, "target_kl"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PiRLAlgorithmConfig(**kwargs)


def _rollout_from(policy, n=32, seed=0, adv=None):
    batch = obs_batch(n, seed=seed)
    out = policy.sample_chain(batch, generator=torch.Generator().manual_seed(seed))
    advantages = adv if adv is not None else torch.randn(n)
    return batch, out, Rollout.from_sample(batch, out, advantages)


@pytest.mark.parametrize(("method", "sde_steps"), [("flow_sde", "one"), ("flow_noise", "all")])
def test_positive_advantage_raises_and_negative_lowers_the_logprob(method, sde_steps):
    policy = tiny_pi_rl(method, sde_steps, seed=1)
    adv = torch.tensor([1.0, -1.0] * 16)
    batch, out, rollout = _rollout_from(policy, adv=adv)
    algo = make_algo(
        policy, update_epochs=1, minibatch_size=32, rollout_size=32, actor_lr=3e-3, value_clip=None
    )
    for _ in range(5):
        algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    with torch.no_grad():
        new = policy.score_chain(batch, out.chain, out.denoise_index).logprob
    delta = new - out.logprob
    assert (delta[adv > 0] > 0).float().mean() > 0.9
    assert (delta[adv < 0] < 0).float().mean() > 0.9


def test_value_loss_only_reaches_the_value_head_and_actor_loss_never_does():
    from lerobot_pirl.algorithms.pi_rl.losses import ppo_actor_loss, value_loss

    policy = tiny_pi_rl("flow_noise", detach_critic_input=True)
    batch, out, rollout = _rollout_from(policy)
    score = policy.score_chain(batch, out.chain, out.denoise_index)
    value_loss(score.value, rollout.old_values, rollout.returns + 1.0, 0.2, 10.0).backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.base.parameters())
    assert all(p.grad is None for p in policy.noise_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.value_head.parameters())
    policy.zero_grad(set_to_none=True)
    ppo_actor_loss(score.logprob, rollout.old_logprob, rollout.advantages, 0.2, 0.2)[0].backward()
    assert all(p.grad is None for p in policy.value_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.base.parameters())


def test_update_reports_the_diagnostics_with_stable_names():
    policy = tiny_pi_rl("flow_noise")
    algo = make_algo(policy, entropy_coef=0.005)
    _, _, rollout = _rollout_from(policy)
    stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict()
    for key in (
        "actor_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_fraction",
        "ratio_min",
        "ratio_max",
        "ratio_mean",
        "noise_std",
        "base_grad_norm",
        "noise_head_grad_norm",
        "value_head_grad_norm",
        "ratio_guard_max_dev",
        "epochs_run",
    ):
        assert key in stats, key
    assert stats["ratio_guard_max_dev"] < 1e-4
    assert stats["epochs_run"] == 2 and stats["minibatches"] == 8
    assert 0.08 <= stats["noise_std"] <= 0.16
    assert algo.optimization_step == 1


def test_ratio_guard_logs_an_error_when_logprobs_disagree(caplog):
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    _, _, rollout = _rollout_from(policy)
    rollout.old_logprob = rollout.old_logprob + 0.5
    with caplog.at_level(logging.ERROR):
        stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    assert stats.extra["ratio_guard_max_dev"] > 0.3
    assert any("ratio guard" in r.message for r in caplog.records)


def test_target_kl_stops_epochs_early():
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, update_epochs=10, target_kl=1e-9, actor_lr=1e-2)
    _, _, rollout = _rollout_from(policy)
    stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    assert stats.extra["early_stopped"] == 1.0 and stats.extra["epochs_run"] < 10


def test_state_dict_round_trip_gives_an_identical_next_update():
    policy = tiny_pi_rl("flow_noise")
    algo = make_algo(policy)
    _, _, rollout = _rollout_from(policy)
    algo.update(algo.configure_data_iterator(RolloutSource(rollout)))  # optimiser state is non-trivial now
    algo.policy_version = 3
    snapshot = (
        copy.deepcopy(policy.state_dict()),
        algo.state_dict(),
        {k: copy.deepcopy(o.state_dict()) for k, o in algo.optimizers.items()},
        algo._generator.get_state(),
    )
    params_before = {
        k: [id(p) for g in o.param_groups for p in g["params"]] for k, o in algo.optimizers.items()
    }
    first = algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict()
    after_first = copy.deepcopy(policy.state_dict())

    policy.load_state_dict(snapshot[0])
    algo.policy_version = 0
    algo.load_state_dict(snapshot[1])
    for k, o in algo.optimizers.items():
        o.load_state_dict(snapshot[2][k])
    algo._generator.set_state(snapshot[3])
    assert algo.policy_version == 3
    assert params_before == {
        k: [id(p) for g in o.param_groups for p in g["params"]] for k, o in algo.optimizers.items()
    }
    ids = {id(p) for p in policy.parameters()}
    assert all(id(p) in ids for o in algo.optimizers.values() for g in o.param_groups for p in g["params"])
    second = algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict()
    for key, value in after_first.items():
        assert torch.equal(policy.state_dict()[key], value), key
    assert first["actor_loss"] == second["actor_loss"]


def test_algorithm_save_pretrained_round_trip(tmp_path):
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    algo.policy_version = 7
    algo.save_pretrained(tmp_path)
    loaded = PiRLAlgorithm.from_pretrained(tmp_path, policy=policy)
    assert loaded.policy_version == 7
    assert loaded.config.minibatch_size == 8 and loaded.config.rollout_size == 16


def test_weights_for_the_actor_exclude_the_value_head_and_carry_the_version():
    learner_policy, actor_policy = tiny_pi_rl("flow_noise", seed=1), tiny_pi_rl("flow_noise", seed=2)
    learner, actor = make_algo(learner_policy), make_algo(actor_policy)
    learner.policy_version = 5
    weights = learner.get_weights()
    assert not any(k.startswith("value_head.") for k in weights)
    assert any(k.startswith("noise_head.") for k in weights)
    actor.load_weights(weights)
    assert actor.policy_version == 5
    batch = obs_batch(4)
    noise = torch.randn(4, 4, 3)
    assert torch.equal(
        actor_policy.predict_action_chunk(batch, noise), learner_policy.predict_action_chunk(batch, noise)
    )
    with pytest.raises(ValueError, match="do not match"):
        actor.load_weights({"nonsense": torch.zeros(1)})


def test_rollout_assembly_gae_is_per_stream_and_drops_stale_transitions():
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, normalize_advantages=False, max_policy_lag=0)
    buffer = RolloutBuffer(algo.transition_spec())
    a = synthetic_transitions(policy, n_envs=2, n_chunks=6, actor_id=11, seed=1)
    b = synthetic_transitions(policy, n_envs=3, n_chunks=5, actor_id=22, seed=2)
    stale = synthetic_transitions(policy, n_envs=1, n_chunks=2, actor_id=33, seed=3, version=-1)
    # Interleave the two actors' transitions as a learner would receive them.
    mixed = [t for pair in zip(a[:10], b[:10], strict=True) for t in pair] + a[10:] + b[10:] + stale
    assert buffer.add(mixed) == len(mixed)
    assert buffer.num_usable(0, 0) == len(a) + len(b)
    batch, dropped = buffer.take(0, 0)
    assert dropped == 2 and len(batch) == len(a) + len(b)
    rollout = algo.prepare_rollout(batch)

    # Reference: per (actor, env) stream, with values from the critic.
    for transitions, n_envs in ((a, 2), (b, 3)):
        for env in range(n_envs):
            stream = [t for t in transitions if t["complementary_info"]["env_id"] == env]
            state = {k: torch.cat([t["state"][k] for t in stream]) for k in stream[0]["state"]}
            chain = torch.stack([t["complementary_info"]["chain"] for t in stream])
            k_idx = torch.tensor([t["complementary_info"]["denoise_index"] for t in stream])
            with torch.no_grad():
                values = policy.score_chain(state, chain, k_idx).value
                last_next = {k: v for k, v in stream[-1]["next_state"].items()}
                final_vals = policy.value_of(
                    {k: torch.cat([t["next_state"][k] for t in stream]) for k in state}
                )
            term = torch.tensor([t["done"] for t in stream])
            trunc = torch.tensor([t["truncated"] for t in stream])
            next_values = torch.cat([values[1:], policy.value_of(last_next)])
            next_values = torch.where(trunc, final_vals, next_values)
            trunc = trunc.clone()
            trunc[-1] = trunc[-1] | ~term[-1]
            rewards = torch.tensor([t["reward"] for t in stream])
            ref, _ = compute_gae(
                rewards, values, next_values, term, trunc, algo.config.gamma, algo.config.gae_lambda
            )
            # Locate the stream's rows in the rollout by their chains.
            rows = [int((rollout.chain == c).flatten(1).all(1).nonzero()[0]) for c in chain]
            torch.testing.assert_close(rollout.advantages[rows], ref, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(rollout.old_values[rows], values, rtol=1e-5, atol=1e-6)


def test_advantages_are_normalised_over_the_rollout():
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(synthetic_transitions(policy, n_envs=4, n_chunks=6))
    batch, _ = buffer.take(0, 1)
    rollout = algo.prepare_rollout(batch)
    assert float(rollout.advantages.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(rollout.advantages.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    stats = algo.rollout_stats(rollout, batch, 0)
    assert stats["transitions_used"] == 24 and stats["on_policy_fraction"] == 1.0


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t["complementary_info"].pop("logprob"), "lacks"),
        (lambda t: t["complementary_info"].update(chain=torch.zeros(3, 3)), "chain has shape"),
        (lambda t: t.update(reward=float("nan")), "reward"),
        (lambda t: t["state"].update({"observation.state": torch.zeros(1, 99)}), "shape"),
        (lambda t: t["complementary_info"].update(denoise_index=17), "denoise_index"),
        (lambda t: t["next_state"].update({"observation.state": torch.full((1, 6), float("inf"))}), "finite"),
        (lambda t: t.pop("complementary_info"), "missing field"),
        (lambda t: t["complementary_info"].update(is_intervention=torch.ones(3)), "is_intervention"),
        (lambda t: t["complementary_info"].update(success="yes"), "unreadable"),
    ],
)
def test_malformed_transitions_are_rejected_counted_and_never_stored(mutate, reason):
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    buffer = RolloutBuffer(algo.transition_spec())
    good = synthetic_transitions(policy, n_envs=2, n_chunks=2)
    bad = copy.deepcopy(good[0])
    mutate(bad)
    assert buffer.add([bad, *good[1:]]) == len(good) - 1
    assert sum(buffer.rejected.values()) == 1
    assert reason in next(iter(buffer.rejected))
    batch, _ = buffer.take(0, 1)
    rollout = algo.prepare_rollout(batch)
    assert torch.isfinite(rollout.advantages).all()


def test_grpo_estimator_gives_zero_mean_group_advantages():
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(
        policy, estimator="grpo", grpo_group_size=2, grpo_success_filter=False, normalize_advantages=False
    )
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(synthetic_transitions(policy, n_envs=4, n_chunks=4, episode_len=4))
    batch, _ = buffer.take(0, 1)
    rollout = algo.prepare_rollout(batch)
    # Two groups of two envs; every step of an episode carries its episode's advantage.
    by_env = {}
    for row in range(len(batch)):
        col = (batch.columns == row).nonzero()[0, 1].item()
        by_env.setdefault(col, set()).add(round(float(rollout.advantages[row]), 5))
    assert all(len(v) == 1 for v in by_env.values())
    adv = [next(iter(by_env[e])) for e in range(4)]
    assert adv[0] == pytest.approx(-adv[1], abs=1e-4) and adv[2] == pytest.approx(-adv[3], abs=1e-4)


def test_task_strings_ride_along_and_preprocessor_outputs_reach_the_policy_inputs():
    """VLA prompts: transitions carry the env's task strings; whatever tensors the policy's preprocessor
    derives from them (e.g. language tokens) are part of the rollout's observations."""
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    buffer = RolloutBuffer(algo.transition_spec())
    transitions = synthetic_transitions(policy, n_envs=2, n_chunks=3)
    for i, t in enumerate(transitions):
        t["state"]["task"] = [f"press the button {i % 2}"]
        t["next_state"]["task"] = [f"press the button {i % 2}"]
    buffer.add(transitions)
    batch, _ = buffer.take(0, 1)
    assert batch.state["task"][:2] == ["press the button 0", "press the button 1"]
    seen = {}

    def preprocessor(obs):
        seen["task"] = obs["task"]
        n = len(obs["task"])
        return {**obs, "observation.language.tokens": torch.arange(n)[:, None].expand(n, 4)}

    rollout = algo.prepare_rollout(batch, preprocessor)
    assert seen["task"] and rollout.obs["observation.language.tokens"].shape == (6, 4)
    assert "task" not in rollout.obs


def test_offline_loss_joins_every_minibatch_with_its_weight_and_batch_size():
    """Hybrid: each PPO minibatch draws offline_ratio * minibatch_size offline chunks and adds the base's
    flow-matching loss on them at the scheduled weight; the logs carry the loss, weight, batch size and the
    offline gradient's share."""
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, offline_loss_coef=0.5, offline_ratio=0.5)
    sizes = []

    def source(n):
        sizes.append(n)
        return {**obs_batch(n), "action": torch.randn(n, 4, 3)}

    algo.offline_source = source
    _, _, rollout = _rollout_from(policy)
    stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    assert sizes == [4] * int(stats.extra["minibatches"])  # 0.5 * minibatch_size 8
    assert stats.losses["offline_loss"] > 0
    assert stats.extra["offline_weight"] == 0.5 and stats.extra["offline_batch_size"] == 4
    assert 0 < stats.extra["offline_grad_share"] < 1 and stats.extra["offline_grad_norm"] > 0


def test_offline_loss_is_skipped_once_its_weight_decayed_or_without_data():
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(
        policy, offline_loss_coef=0.5, offline_loss_schedule="linear", offline_loss_decay_updates=1
    )
    calls = []
    algo.offline_source = lambda n: calls.append(n)  # an empty buffer: None
    _, _, rollout = _rollout_from(policy)
    stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    assert calls and "offline_loss" not in stats.losses  # no data yet: PPO alone
    calls.clear()
    algo.update(algo.configure_data_iterator(RolloutSource(rollout)))  # update 1: weight decayed to 0
    assert calls == [] and algo.offline_weight() == 0.0


def test_offline_gradient_reaches_only_the_chosen_parameters():
    """offline_params="expert": the offline loss moves the adapter's expert parameters and nothing else
    of the base (the PPO gradient is untouched there)."""
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, offline_loss_coef=1.0, offline_params="expert")
    base = policy.param_groups()["base"]
    expert = {id(p) for p in algo.offline_parameters()}
    assert 0 < len(expert) < len(base)
    for opt in algo.optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss, _ = policy.forward({**obs_batch(6), "action": torch.randn(6, 4, 3)})
    stats = algo._add_offline_gradient(loss)
    assert all(p.grad is None for p in base if id(p) not in expert)
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in base if id(p) in expert)
    assert stats["offline_grad_share"] == 1.0  # no PPO gradient in this call
    assert len(make_algo(policy, offline_loss_coef=1.0).offline_parameters()) == len(base)  # "actor"


@pytest.mark.parametrize(
    "schedule, update, expected",
    [
        ("constant", 50, 1.0),
        ("linear", 0, 1.0),
        ("linear", 5, 0.6),
        ("linear", 10, 0.2),
        ("linear", 99, 0.2),
        ("cosine", 0, 1.0),
        ("cosine", 5, 0.6),
        ("cosine", 2.5, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("cosine", 10, 0.2),
    ],
)
def test_offline_weight_schedule(schedule, update, expected):
    from lerobot_pirl.algorithms.pi_rl.offline import offline_loss_weight

    assert offline_loss_weight(1.0, 0.2, schedule, 10, update) == pytest.approx(expected)


def test_offline_config_is_validated():
    for bad in (
        {"offline_loss_schedule": "step"},
        {"offline_ratio": 0.0},
        {"offline_params": "vlm"},
        {"offline_loss_coef": -1.0},
        {"correction_capacity": -1},
        {"offline_loss_decay_updates": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PiRLAlgorithmConfig(**bad)


def test_grpo_groups_by_env_when_a_lost_message_splits_a_stream():
    """Envs 0-1 and 2-3 reset together (groups of 2). A lost transition of env 0 splits its stream into
    two columns: the groups still pair env 0 with env 1 and env 2 with env 3, and env 0's episode that
    lost a chunk gets no advantage (its return is incomplete)."""
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(
        policy, estimator="grpo", grpo_group_size=2, grpo_success_filter=False, normalize_advantages=False
    )
    buffer = RolloutBuffer(algo.transition_spec())
    transitions = synthetic_transitions(policy, n_envs=4, n_chunks=8, episode_len=4)
    lost = next(
        i
        for i, t in enumerate(transitions)
        if t["complementary_info"]["env_id"] == 0 and t["complementary_info"]["chunk_index"] == 1
    )
    buffer.add(transitions[:lost] + transitions[lost + 1 :])
    batch, _ = buffer.take(0, 1)
    assert batch.columns.shape[1] == 5  # env 0's stream is split in two
    rollout = algo.prepare_rollout(batch)

    def advantage(env: int, episode: int) -> set[float]:
        rows = (batch.env_id == env) & (batch.episode_id == episode)
        return {round(float(a), 5) for a in rollout.advantages[rows]}

    assert advantage(0, 0) == {0.0}  # chunk 1 of this episode was lost
    second = [advantage(env, 1) for env in range(4)]
    assert all(len(a) == 1 for a in second)
    a0, a1, a2, a3 = (next(iter(a)) for a in second)
    assert a0 == pytest.approx(-a1, abs=1e-4) and a0 != 0.0
    assert a2 == pytest.approx(-a3, abs=1e-4) and a2 != 0.0


def test_whole_episodes_leaves_out_episodes_cut_by_the_rollout():
    from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import whole_episodes

    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy)
    buffer = RolloutBuffer(algo.transition_spec())
    # Chunks 2..9 of 2 envs with 4-chunk episodes: episode 0 lacks its start, episode 2 its end.
    buffer.add(synthetic_transitions(policy, n_envs=2, n_chunks=8, episode_len=4, start_chunk=2))
    batch, _ = buffer.take(0, 1)
    episodes = whole_episodes(batch)
    assert sorted(episodes) == [(1, 0, 1), (1, 1, 1)]
    for (_, env, _), rows in episodes.items():
        assert batch.episode_chunk[rows].tolist() == [0, 1, 2, 3]
        assert (batch.env_id[rows] == env).all()


def test_critic_warmup_moves_only_the_value_head_then_ppo_takes_over():
    policy = tiny_pi_rl("flow_noise", seed=2)
    algo = make_algo(policy, critic_warmup_updates=2, entropy_coef=0.005)
    _, _, rollout = _rollout_from(policy)
    actor = {k: v.clone() for k, v in policy.actor_state_dict().items()}  # base + noise head
    critic = {k: v.clone() for k, v in policy.value_head.state_dict().items()}
    for _ in range(2):
        stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict()
        assert stats["critic_warmup"] == 1.0 and "base_grad_norm" not in stats
    assert all(torch.equal(actor[k], v) for k, v in policy.actor_state_dict().items())  # bit-identical
    assert not all(torch.equal(critic[k], v) for k, v in policy.value_head.state_dict().items())
    stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict()
    assert stats["critic_warmup"] == 0.0
    assert not all(torch.equal(actor[k], v) for k, v in policy.actor_state_dict().items())


def test_critic_warmup_needs_a_critic():
    with pytest.raises(ValueError, match="critic_warmup_updates"):
        PiRLAlgorithmConfig(estimator="grpo", critic_warmup_updates=3)


@pytest.mark.parametrize(("success_filter", "kept"), [(False, 4), (True, 0)])
def test_grpo_logs_how_many_groups_its_success_filter_kept(success_filter, kept):
    """Two groups of two envs, two whole episodes each: the first all succeed, the second all fail, so the
    [0.1, 0.9] success filter drops every group and no chunk keeps an advantage."""
    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, estimator="grpo", grpo_group_size=2, grpo_success_filter=success_filter)
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(synthetic_transitions(policy, n_envs=4, n_chunks=8, episode_len=4))
    batch, _ = buffer.take(0, 1)
    stats = algo.rollout_stats(algo.prepare_rollout(batch), batch, 0)
    assert stats["grpo_episodes"] == 8 and stats["grpo_groups"] == 4
    assert stats["grpo_groups_kept"] == kept and stats["grpo_groups_kept_fraction"] == kept / 4
    assert stats["advantage_nonzero_fraction"] == (1.0 if kept else 0.0)


def test_grpo_chunks_of_dropped_groups_keep_exactly_zero_advantage_after_normalisation():
    """Group 0's first episodes are mixed (one member fails): kept; the other groups all succeed or all
    fail: dropped. Normalising over the rollout must neither hand the dropped chunks ``-mean / std`` nor
    count them in the std (which would scale the graded chunks' advantages up by sqrt(all / graded))."""
    from lerobot_pirl.transition_keys import ENV_ID, EPISODE_ID, SUCCESS

    policy = tiny_pi_rl("flow_sde")
    algo = make_algo(policy, estimator="grpo", grpo_group_size=2)
    transitions = synthetic_transitions(policy, n_envs=4, n_chunks=8, episode_len=4)
    for t in transitions:
        info = t["complementary_info"]
        if int(info[ENV_ID]) == 0 and int(info[EPISODE_ID]) == 0:
            info[SUCCESS] = torch.zeros_like(torch.as_tensor(info[SUCCESS]))
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(transitions)
    batch, _ = buffer.take(0, 1)
    rollout = algo.prepare_rollout(batch)
    kept = (batch.env_id < 2) & (batch.episode_id == 0)
    assert (rollout.advantages[~kept] == 0).all()
    assert (rollout.advantages[kept] != 0).all()
    assert float(rollout.advantages[kept].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(rollout.advantages[kept].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    stats = algo.rollout_stats(rollout, batch, 0)
    assert stats["grpo_groups_kept"] == 1 and stats["advantage_nonzero_fraction"] == pytest.approx(0.25)
