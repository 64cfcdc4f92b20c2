"""PPO losses and diagnostics as pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _broadcast_advantages(advantages: Tensor, logprob: Tensor) -> Tensor:
    """``[B]`` advantages against ``[B]`` (chunk) or ``[B, ...]`` (token) log-probs, never ``[B, B]``."""
    if advantages.ndim != 1:
        raise ValueError(f"advantages must have shape [B], got {tuple(advantages.shape)}")
    if logprob.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"log-probs {tuple(logprob.shape)} and advantages {tuple(advantages.shape)} disagree on the batch"
        )
    return advantages.view(-1, *([1] * (logprob.ndim - 1)))


def ppo_actor_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate ``mean(max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)))``.

    Chunk level: ``logprob`` is ``[B]`` (one ratio per sample). Token level: ``[B, ...]`` (one ratio
    per action element, the sample's advantage shared by its elements).
    Returns the loss and detached diagnostics: approx_kl (``E[(r - 1) - log r]``), clip fraction and
    ratio min / max / mean.
    """
    if logprob.shape != old_logprob.shape:
        raise ValueError(f"logprob {tuple(logprob.shape)} and old_logprob {tuple(old_logprob.shape)} differ")
    adv = _broadcast_advantages(advantages.float(), logprob)
    log_ratio = logprob.float() - old_logprob.float()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "approx_kl": ((ratio - 1.0) - log_ratio).mean(),
            "clip_fraction": ((ratio < 1.0 - clip_low) | (ratio > 1.0 + clip_high)).float().mean(),
            "ratio_min": ratio.min(),
            "ratio_max": ratio.max(),
            "ratio_mean": ratio.mean(),
        }
    return loss, stats


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    value_clip: float | None,
    huber_delta: float,
) -> Tensor:
    """``mean(max(huber(R - V), huber(R - V_clip)))`` with ``V_clip = V_old + clamp(V - V_old, +-c)``."""
    for name, t in (("old_values", old_values), ("returns", returns)):
        if t.shape != values.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must match values {tuple(values.shape)}")
    values, old_values, returns = values.float(), old_values.float(), returns.float()
    loss = F.huber_loss(values, returns, reduction="none", delta=huber_delta)
    if value_clip is not None:
        v_clip = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
        loss = torch.maximum(loss, F.huber_loss(v_clip, returns, reduction="none", delta=huber_delta))
    return loss.mean()


def entropy_bonus(entropy: Tensor) -> Tensor:
    """Mean entropy of the batch (subtracted from the loss, times ``entropy_coef``)."""
    return entropy.float().mean()


def explained_variance(predicted: Tensor, target: Tensor) -> float:
    """``1 - Var[target - predicted] / Var[target]`` (nan when the target is constant)."""
    var_y = target.float().var(unbiased=False)
    if var_y.item() == 0.0:
        return float("nan")
    return float(1.0 - (target.float() - predicted.float()).var(unbiased=False) / var_y)
