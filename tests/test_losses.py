"""PPO losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lerobot_pirl.algorithms.pi_rl.losses import explained_variance, ppo_actor_loss, value_loss


def test_clipped_surrogate_equals_hand_computed_value():
    ratios = torch.tensor([0.5, 1.0, 1.5, 1.1])
    adv = torch.tensor([1.0, -2.0, 1.0, -1.0])
    old = torch.zeros(4)
    loss, stats = ppo_actor_loss(torch.log(ratios), old, adv, 0.2, 0.2)
    # per sample max(-A r, -A clip(r)):
    # r=0.5, A=1  : max(-0.5, -0.8) = -0.5
    # r=1.0, A=-2 : max(2.0, 2.0)   = 2.0
    # r=1.5, A=1  : max(-1.5, -1.2) = -1.2
    # r=1.1, A=-1 : max(1.1, 1.1)   = 1.1
    assert float(loss) == pytest.approx((-0.5 + 2.0 - 1.2 + 1.1) / 4, rel=1e-6)
    assert float(stats["clip_fraction"]) == pytest.approx(0.5)
    assert float(stats["ratio_min"]) == pytest.approx(0.5)
    assert float(stats["ratio_max"]) == pytest.approx(1.5)
    expected_kl = sum((r - 1) - math.log(r) for r in [0.5, 1.0, 1.5, 1.1]) / 4
    assert float(stats["approx_kl"]) == pytest.approx(expected_kl, rel=1e-5)


def test_asymmetric_clip_bounds():
    loss, _ = ppo_actor_loss(torch.log(torch.tensor([1.5])), torch.zeros(1), torch.tensor([1.0]), 0.2, 0.28)
    assert float(loss) == pytest.approx(-1.28, rel=1e-6)


def test_shapes_do_not_broadcast_wrongly():
    logprob, old, adv = torch.zeros(4), torch.zeros(4), torch.arange(4.0)
    with pytest.raises(ValueError, match="advantages"):
        ppo_actor_loss(logprob, old, adv[:, None], 0.2, 0.2)  # [B, 1] advantages
    with pytest.raises(ValueError, match="old_logprob"):
        ppo_actor_loss(logprob[:, None], old, adv, 0.2, 0.2)  # [B, 1] vs [B] log-probs
    # Token level: [B, H, D] log-probs share their sample's advantage.
    tok = torch.zeros(4, 2, 3)
    loss, _ = ppo_actor_loss(tok, tok.clone(), adv, 0.2, 0.2)
    assert float(loss) == pytest.approx(-float(adv.mean()))


def test_token_level_gradient_is_per_element():
    logprob = torch.zeros(2, 1, 2, requires_grad=True)
    loss, _ = ppo_actor_loss(logprob, torch.zeros(2, 1, 2), torch.tensor([1.0, -1.0]), 0.2, 0.2)
    loss.backward()
    torch.testing.assert_close(logprob.grad, torch.tensor([[[-0.25, -0.25]], [[0.25, 0.25]]]))


def test_value_loss_with_clipping_and_huber():
    values = torch.tensor([1.0, 0.0, 3.0])
    old = torch.tensor([0.5, 0.0, 0.0])
    returns = torch.tensor([2.0, 0.1, 0.0])
    loss = value_loss(values, old, returns, value_clip=0.2, huber_delta=1.0)

    def huber(e, d=1.0):
        e = abs(e)
        return 0.5 * e * e if e <= d else d * (e - 0.5 * d)

    v_clip = [0.7, 0.0, 0.2]
    expected = (
        sum(
            max(huber(r - v), huber(r - vc))
            for r, v, vc in zip([2.0, 0.1, 0.0], [1.0, 0.0, 3.0], v_clip, strict=True)
        )
        / 3
    )
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    unclipped = value_loss(values, old, returns, value_clip=None, huber_delta=1.0)
    assert float(unclipped) == pytest.approx(
        sum(huber(r - v) for r, v in zip([2.0, 0.1, 0.0], [1.0, 0.0, 3.0], strict=True)) / 3
    )
    with pytest.raises(ValueError, match="returns"):
        value_loss(values, old, returns[:, None], 0.2, 1.0)


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(y, 2.5), y) == pytest.approx(0.0)
    assert math.isnan(explained_variance(y, torch.ones(4)))
