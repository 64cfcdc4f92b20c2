"""The chain sampler: stochastic rollouts with exact log-likelihoods, and their re-scoring.

``sample`` runs the K-step denoising chain once per observation (one ``encode``, K ``velocity`` calls),
with the step rule of the configured noise method on the stochastic step(s) and the ODE elsewhere, and
returns everything PPO needs: the executed actions, the stored chain, the behaviour log-prob (float32,
executed slice only), and the value. ``score`` recomputes log-prob, entropy and value for a stored
chain under the current weights, differentiably; for the hybrid mode (``sde_steps="one"``) that costs
one velocity evaluation per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix
from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.flow.heads import NoiseHead, ValueHead
from lerobot_pirl.flow.steps import ODEStep, gaussian_entropy, gaussian_log_prob, make_step_rule


@dataclass
class ChainSample:
    """One batched stochastic rollout of the denoising chain."""

    actions: Tensor  # [B, T, D] final chain value x_K (model space, normalised)
    executed: Tensor  # [B, H, Dr] the part of the chunk that the env executes
    chain: Tensor  # [B, L, T, D] float32: (x_k*, x_k*+1) for sde_steps="one", x_0..x_K for "all"
    denoise_index: Tensor  # [B] int64: k* ("one") or -1 ("all")
    logprob: Tensor  # [B] (chunk level) or [B, H, Dr] (token level), float32
    value: Tensor  # [B] float32
    noise_std: Tensor  # [B] mean std of the stochastic step(s) over the executed slice


@dataclass
class ChainScore:
    """Log-prob, entropy and value of stored chains under the current weights (differentiable)."""

    logprob: Tensor  # [B] or [B, H, Dr] float32
    entropy: Tensor  # [B] mean Gaussian entropy per executed element of the stochastic step(s)
    value: Tensor  # [B]
    noise_std: Tensor  # [B]


class FlowChainSampler:
    def __init__(self, cfg: FlowSamplerConfig, action_chunk: int, real_action_dim: int):
        self.cfg = cfg
        self.rule = make_step_rule(cfg.noise_method, cfg.noise_level)
        self.ode = ODEStep()
        self.num_steps = cfg.num_denoise_steps
        self.delta = 1.0 / cfg.num_denoise_steps
        self.hybrid = cfg.sde_steps == "one"
        self.action_chunk = action_chunk
        self.real_action_dim = real_action_dim

    # ---------------------------------------------------------------- helpers
    def _executed(self, t: Tensor) -> Tensor:
        """The executed slice ``[..., :H, :Dr]`` of a ``[..., T, D]`` tensor."""
        return t[..., : self.action_chunk, : self.real_action_dim]

    def _step(
        self, x: Tensor, v: Tensor, tau: Tensor, hidden: Tensor, noise_head: NoiseHead | None
    ) -> tuple[Tensor, Tensor]:
        noise_std = noise_head(hidden) if self.rule.learned_std else None
        mean, std = self.rule(x, v, tau.view(-1, 1, 1), self.delta, self.num_steps, noise_std)
        return mean, std.clamp_min(self.cfg.std_floor)

    def _reduce(self, terms: list[Tensor]) -> Tensor:
        """Combine per-term element log-densities ``[B, H, Dr]`` into the configured log-prob."""
        stacked = torch.stack(terms, dim=0)
        per_elem = stacked.sum(0) if self.cfg.logprob_reduction == "sum" else stacked.mean(0)
        if self.cfg.logprob_level == "chunk":
            return per_elem.flatten(1).sum(-1)
        return per_elem

    @staticmethod
    def _pool(step_feats: list[Tensor]) -> Tensor:
        """Average the per-step action-token features (the "expert" value-head input)."""
        return torch.stack(step_feats, dim=0).mean(0)

    def _prior_term(self, x0: Tensor) -> Tensor:
        return self._executed(gaussian_log_prob(x0, torch.zeros_like(x0), torch.ones_like(x0)))

    def _sample_k_star(self, batch_size: int, device, generator) -> Tensor:
        high = self.num_steps - 1 if self.cfg.exclude_last_step else self.num_steps
        return torch.randint(0, high, (batch_size,), device=device, generator=generator)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        adapter: FlowAdapter,
        value_head: ValueHead,
        noise_head: NoiseHead | None,
        batch: dict[str, Tensor],
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        with_value: bool = True,
    ) -> ChainSample:
        """One stochastic chain per observation. The per-step work is the ODE step plus, on the
        stochastic step(s), the step rule; log-densities are computed once, after the loop, from the
        recorded ``(x_k, x_k+1, mean, std)``. ``with_value=False`` skips the value head (an actor does
        not need it: the learner computes values) and returns NaN values."""
        prefix = adapter.encode(batch)
        bsz = prefix.features.shape[0]
        device = prefix.features.device
        taus = adapter.time_grid(self.num_steps, device)
        x = (noise if noise is not None else adapter.sample_noise(bsz, device, generator)).float()
        k_star = (
            self._sample_k_star(bsz, device, generator)
            if self.hybrid
            else torch.full((bsz,), -1, dtype=torch.long, device=device)
        )
        need_feats = with_value and value_head.placement == "expert"
        chain, feats = [x], []
        record: list[Tensor] | None = None  # hybrid: [x_k*, x_k*+1, mean, std, feat] gathered per sample
        means, stds = [], []  # joint: per step

        for k in range(self.num_steps):
            tau = taus[k].expand(bsz)
            v, hidden = adapter.velocity(prefix, x, tau)
            v = v.float()
            x_next = self.ode(x, v, tau.view(-1, 1, 1), self.delta, self.num_steps, None)[0]
            feat = hidden.float().mean(1) if need_feats else x.new_zeros(bsz, 1)
            selected = (k_star == k) if self.hybrid else None
            if self.hybrid and not bool(selected.any()):
                x = x_next
                continue
            mean = std = x_next
            if self.rule.stochastic:
                mean, std = self._step(x, v, tau, hidden, noise_head)
                eps = torch.randn(mean.shape, device=device, generator=generator, dtype=mean.dtype)
                x_sde = mean + std * eps
                x_next = torch.where(selected.view(-1, 1, 1), x_sde, x_next) if self.hybrid else x_sde
            if self.hybrid:
                values = [x, x_next, mean, std, feat]
                if record is None:
                    record = values
                else:
                    sel3, sel1 = selected.view(-1, 1, 1), selected.view(-1, 1)
                    record = [
                        torch.where(sel1 if t.ndim == 2 else sel3, t, old)
                        for t, old in zip(values, record, strict=True)
                    ]
            else:
                chain.append(x_next)
                means.append(mean)
                stds.append(std)
                feats.append(feat)
            x = x_next

        if self.hybrid:
            x_k, x_k1, mean_t, std_t, feat_t = record
            stored = torch.stack([x_k, x_k1], dim=1)
            nexts, means_t, stds_t, feats = x_k1[None], mean_t[None], std_t[None], [feat_t]
            terms: list[Tensor] = []
        else:
            stored = torch.stack(chain, dim=1)
            nexts, means_t, stds_t = torch.stack(chain[1:]), torch.stack(means), torch.stack(stds)
            terms = [self._prior_term(chain[0])]
        if self.rule.stochastic:
            terms += list(self._executed(gaussian_log_prob(nexts, means_t, stds_t)).unbind(0))
            logprob = self._reduce(terms)
            noise_std = self._executed(stds_t).flatten(2).mean(-1).mean(0)
        else:
            logprob = self._reduce([torch.zeros_like(self._executed(x))])
            noise_std = torch.zeros(bsz, device=device)
        if with_value:
            value = value_head(prefix.features, self._pool(feats) if need_feats else None).float()
        else:
            value = torch.full((bsz,), float("nan"), device=device)
        return ChainSample(
            actions=x,
            executed=self._executed(x),
            chain=stored,
            denoise_index=k_star,
            logprob=logprob,
            value=value,
            noise_std=noise_std,
        )

    @torch.no_grad()
    def sample_ode(
        self, adapter: FlowAdapter, batch: dict[str, Tensor], noise: Tensor | None = None
    ) -> Tensor:
        """Deterministic ODE sampling (deployment / evaluation): the full chunk ``[B, T, D]``."""
        prefix = adapter.encode(batch)
        bsz = prefix.features.shape[0]
        device = prefix.features.device
        taus = adapter.time_grid(self.num_steps, device)
        x = (noise if noise is not None else adapter.sample_noise(bsz, device)).float()
        for k in range(self.num_steps):
            tau = taus[k].expand(bsz)
            v, _ = adapter.velocity(prefix, x, tau)
            x = self.ode(x, v.float(), tau.view(-1, 1, 1), self.delta, self.num_steps, None)[0]
        return x

    # ---------------------------------------------------------------- re-scoring
    def score(
        self,
        adapter: FlowAdapter,
        value_head: ValueHead,
        noise_head: NoiseHead | None,
        batch: dict[str, Tensor],
        chain: Tensor,
        denoise_index: Tensor,
    ) -> ChainScore:
        prefix: Prefix = adapter.encode(batch)
        taus = adapter.time_grid(self.num_steps, prefix.features.device)
        chain = chain.float()
        if self.hybrid:
            pairs = [(chain[:, 0], chain[:, 1], taus[denoise_index.long()])]
            terms: list[Tensor] = []
        else:
            bsz = chain.shape[0]
            pairs = [(chain[:, k], chain[:, k + 1], taus[k].expand(bsz)) for k in range(self.num_steps)]
            terms = [self._prior_term(chain[:, 0])]

        stds, ents, feats = [], [], []
        for x, x_next, tau in pairs:
            v, hidden = adapter.velocity(prefix, x, tau)
            feats.append(hidden.float().mean(1))
            if not self.rule.stochastic:
                continue
            mean, std = self._step(x, v.float(), tau, hidden, noise_head)
            terms.append(self._executed(gaussian_log_prob(x_next, mean, std)))
            stds.append(self._executed(std).flatten(1).mean(-1))
            ents.append(self._executed(gaussian_entropy(std)).flatten(1).mean(-1))

        expert_feat = self._pool(feats)
        value = value_head(prefix.features, expert_feat).float()
        if not self.rule.stochastic:
            zeros = torch.zeros_like(value)
            logprob = self._reduce([torch.zeros_like(self._executed(chain[:, 0]))])
            return ChainScore(logprob=logprob, entropy=zeros, value=value, noise_std=zeros)
        return ChainScore(
            logprob=self._reduce(terms),
            entropy=torch.stack(ents, 0).mean(0),
            value=value,
            noise_std=torch.stack(stds, 0).mean(0),
        )
