"""GAE and GRPO against references."""

from __future__ import annotations

import pytest
import torch

from lerobot_pirl.algorithms.pi_rl.advantages import compute_gae, grpo_advantages


def loop_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Plain per-step reference for one stream."""
    n = len(rewards)
    adv = [0.0] * n
    last = 0.0
    for t in reversed(range(n)):
        bootstrap = 0.0 if terminated[t] else next_values[t]
        delta = rewards[t] + gamma * bootstrap - values[t]
        ends = terminated[t] or truncated[t]
        last = delta + gamma * lam * (0.0 if ends else last)
        adv[t] = last
    return torch.tensor(adv)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (1.0, 1.0), (0.9, 0.0)])
def test_gae_equals_loop_reference_with_terminations_and_truncations(seed, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    n = 40
    rewards, values = torch.randn(n, generator=g), torch.randn(n, generator=g)
    terminated = torch.rand(n, generator=g) < 0.1
    truncated = (torch.rand(n, generator=g) < 0.1) & ~terminated
    next_values = torch.cat([values[1:], torch.randn(1, generator=g)])
    # Truncated steps bootstrap from their final observation, not from the next (reset) state.
    final_obs_values = torch.randn(n, generator=g)
    next_values = torch.where(truncated, final_obs_values, next_values)
    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    ref = loop_gae(
        rewards.tolist(),
        values.tolist(),
        next_values.tolist(),
        terminated.tolist(),
        truncated.tolist(),
        gamma,
        lam,
    )
    torch.testing.assert_close(adv, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret, ref + values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.99])
@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_gae_matches_sb3_closed_form(gamma, lam):
    """Constant value v, reward 1 only at the last (terminal) step of an episode of length n:
    delta_t = gamma*v - v for t < n-1, delta_{n-1} = 1 - v, so
    A_t = (1 - v) (gamma lam)^(n-1-t) + (gamma v - v) * sum_{i=0}^{n-2-t} (gamma lam)^i."""
    n, v = 8, 0.3
    rewards = torch.zeros(n)
    rewards[-1] = 1.0
    values = torch.full((n,), v)
    terminated = torch.zeros(n, dtype=torch.bool)
    terminated[-1] = True
    adv, _ = compute_gae(
        rewards, values, values.clone(), terminated, torch.zeros(n, dtype=torch.bool), gamma, lam
    )
    gl = gamma * lam
    for t in range(n):
        expected = (1 - v) * gl ** (n - 1 - t) + (gamma * v - v) * sum(gl**i for i in range(n - 1 - t))
        assert float(adv[t]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_gae_over_two_concatenated_streams_equals_per_stream_results():
    g = torch.Generator().manual_seed(0)
    streams = []
    for n in (12, 7):
        r, v, nv = torch.randn(n, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g)
        term = torch.rand(n, generator=g) < 0.2
        trunc = (torch.rand(n, generator=g) < 0.2) & ~term
        streams.append((r, v, nv, term, trunc))
    per_stream = [compute_gae(*s, 0.99, 0.95)[0] for s in streams]
    # Vectorised over envs: [T, E] with the shorter stream padded at the end.
    t_max = 12

    def col(i):
        return torch.stack(
            [torch.cat([s[i], torch.zeros(t_max - len(s[i]), dtype=s[i].dtype)]) for s in streams], 1
        )

    adv, _ = compute_gae(col(0), col(1), col(2), col(3), col(4), 0.99, 0.95)
    torch.testing.assert_close(adv[:12, 0], per_stream[0])
    torch.testing.assert_close(adv[:7, 1], per_stream[1])
    assert (adv[7:, 1] == 0).all()


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        compute_gae(
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            torch.zeros(3, 2),
            torch.zeros(3, 1, dtype=torch.bool),
            torch.zeros(3, 2, dtype=torch.bool),
            0.99,
            0.95,
        )


def test_grpo_advantages_are_zero_mean_per_group_and_filter_groups():
    returns = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 5.0, 3.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    success = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 1, 0])
    adv, keep = grpo_advantages(returns, groups, success, success_range=(0.1, 0.9))
    # Group 1 (all solved) and group 2 (all failed) are dropped.
    assert keep.tolist() == [True] * 4 + [False] * 4 + [True] * 2
    assert (adv[~keep] == 0).all()
    for gid in (0, 3):
        members = groups == gid
        assert float(adv[members].mean()) == pytest.approx(0.0, abs=1e-6)
        assert float(adv[members].std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    adv_all, keep_all = grpo_advantages(returns, groups)
    assert keep_all.all()
    assert float(adv_all[groups == 1].abs().max()) == 0.0  # identical returns -> no signal
