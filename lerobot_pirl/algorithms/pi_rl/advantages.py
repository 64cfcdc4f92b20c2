"""Advantage estimators as pure tensor functions: GAE (vectorised over envs) and GRPO."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """GAE over time-major ``[T, E]`` tensors (one column per env stream, oldest step first).

    ``next_values[t]`` is ``V(s_{t+1})``: the value of the next step's observation, or, where the
    episode was truncated or the stream ends, the value of the final observation (bootstrap).
    Termination cuts the bootstrap (``V = 0`` after a terminal state); truncation keeps it. Both end
    the recursion, so no advantage flows across episodes. Columns shorter than ``T`` are padded at the
    end with zeros (padding then contributes nothing).

    Returns ``(advantages, returns)`` with ``returns = advantages + values``.
    """
    if rewards.ndim == 1:
        rewards, values, next_values, terminated, truncated = (
            t[:, None] for t in (rewards, values, next_values, terminated, truncated)
        )
        adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
        return adv[:, 0], ret[:, 0]
    shapes = {t.shape for t in (rewards, values, next_values, terminated, truncated)}
    if len(shapes) != 1:
        raise ValueError(f"compute_gae: all inputs must share one [T, E] shape, got {sorted(shapes)}")
    rewards, values, next_values = rewards.float(), values.float(), next_values.float()
    not_term = 1.0 - terminated.float()
    episode_goes_on = 1.0 - torch.clamp(terminated.float() + truncated.float(), max=1.0)
    deltas = rewards + gamma * next_values * not_term - values
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + gamma * gae_lambda * episode_goes_on[t] * last
        advantages[t] = last
    return advantages, advantages + values


def grpo_advantages(
    episode_returns: Tensor,
    group_ids: Tensor,
    episode_success: Tensor | None = None,
    success_range: tuple[float, float] | None = None,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Group-relative advantages ``(R_i - mean_g) / (std_g + eps)`` per episode.

    ``group_ids`` names the group (envs that shared a reset state) of each episode. With
    ``success_range=(low, high)``, groups whose mean success is outside it are dropped (all-solved
    or all-failed groups carry no signal). Returns ``(advantages, keep)`` per episode; dropped
    episodes get advantage 0 and ``keep == False``.
    """
    episode_returns = episode_returns.float()
    advantages = torch.zeros_like(episode_returns)
    keep = torch.zeros_like(episode_returns, dtype=torch.bool)
    for gid in torch.unique(group_ids):
        members = group_ids == gid
        if success_range is not None and episode_success is not None:
            rate = episode_success[members].float().mean().item()
            if not success_range[0] <= rate <= success_range[1]:
                continue
        r = episode_returns[members]
        std = r.std(unbiased=False) if r.numel() > 1 else torch.zeros((), device=r.device)
        advantages[members] = (r - r.mean()) / (std + eps)
        keep[members] = True
    return advantages, keep


def normalize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Zero mean, unit std (population std) over all elements."""
    return (x - x.mean()) / (x.std(unbiased=False) + eps)


def normalize_per_group(x: Tensor, group_ids: Tensor, eps: float = 1e-8, std: str = "group") -> Tensor:
    """Zero mean within each group (elements sharing a ``group_ids`` value, e.g. one task's transitions),
    then unit std: ``std="group"`` divides each group by its own std (every group weighs alike; a group of
    one element becomes 0), ``std="all"`` divides every group by the one std of all the centred elements
    (a group whose advantages are small, e.g. a task with no success in the rollout, stays small instead of
    being scaled up to unit noise)."""
    if x.shape != group_ids.shape:
        raise ValueError(
            f"normalize_per_group: x {tuple(x.shape)} and group_ids {tuple(group_ids.shape)} differ"
        )
    if std not in ("group", "all"):
        raise ValueError(f"normalize_per_group: std must be 'group' or 'all', got {std!r}")
    centred = torch.empty_like(x)
    for gid in torch.unique(group_ids):
        members = group_ids == gid
        centred[members] = x[members] - x[members].mean()
    if std == "all":
        return centred / (centred.std(unbiased=False) + eps)
    out = torch.empty_like(x)
    for gid in torch.unique(group_ids):
        members = group_ids == gid
        out[members] = centred[members] / (centred[members].std(unbiased=False) + eps)
    return out
