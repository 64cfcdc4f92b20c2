"""The chain sampler: stochastic rollouts with exact log-likelihoods, and their re-scoring.

``sample`` runs the K-step denoising chain once per observation (one ``encode``, K ``velocity`` calls),
with the step rule of the configured noise method on the stochastic step(s) and the ODE elsewhere, and
returns everything PPO needs: the executed actions, the stored chain, the behaviour log-prob (float32,
executed slice only), and the value. ``score`` recomputes log-prob, entropy and value for a stored
chain under the current weights, differentiably; for the hybrid mode (``sde_steps="one"``) that costs
one velocity evaluation per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix
from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.flow.heads import NoiseHead, ValueHead
from lerobot_pirl.flow.steps import (
    StepCoefficients,
    as_float32,
    gaussian_entropy,
    gaussian_log_peak,
    gaussian_log_prob,
    make_step_rule,
    standard_normal_log_prob,
    step_mean,
)


class StepColumns(NamedTuple):
    """The columns of the per-step coefficient table, in its column order. ``peak`` is the log-density at
    the mean, ``-log(std) - log(sqrt(2 pi))``; ``std``, ``entropy`` and ``peak`` are NaN where the std is
    learned. Built from a ``[K, 6]`` table each column is ``[K]``; gathered by denoise index, ``[B, 1, 1]``."""

    tau: Tensor
    a_x: Tensor
    a_v: Tensor
    std: Tensor
    entropy: Tensor
    peak: Tensor


class StepRow(NamedTuple):
    """One step's coefficients as 0-dim float32 tensors (``a_x`` stays the float 1.0 when it is one, which
    :func:`step_mean` skips), and the ODE's velocity coefficient ``-1/K``."""

    tau: Tensor
    a_x: Tensor | float
    a_v: Tensor
    std: Tensor
    ode_a_v: Tensor


class StepScale(NamedTuple):
    """The std of stochastic step(s) and its log-density ``peak`` (``None`` when the std is learned)."""

    std: Tensor
    peak: Tensor | None


class ChainRun(NamedTuple):
    """What one pass of the chain returns to :meth:`FlowChainSampler.sample`."""

    actions: Tensor  # [B, T, D] the final chain value
    stored: Tensor  # [B, L, T, D] the chain values a transition stores
    per_elem: Tensor | None  # [B, H, Dr] summed element log-densities (None: the deterministic "ode")
    num_terms: int  # log-density terms in per_elem (for logprob_reduction="mean")
    feats: list[Tensor]  # per-step action-token features, for a value head on the expert


class Rescored(NamedTuple):
    """What re-scoring a stored chain returns to :meth:`FlowChainSampler.score`."""

    per_elem: Tensor | None  # [B, H, Dr] summed element log-densities (None: the deterministic "ode")
    num_terms: int
    std: Tensor | None  # the std of the stochastic step(s), learned or from the table
    entropy: Tensor | None  # [B, 1, 1] the table's entropy of a fixed-std hybrid step, else None
    feats: list[Tensor]


@dataclass
class ChainSample:
    """One batched stochastic rollout of the denoising chain."""

    actions: Tensor  # [B, T, D] final chain value x_K (model space, normalised)
    executed: Tensor  # [B, H, Dr] the part of the chunk that the env executes
    chain: Tensor  # [B, L, T, D] float32: (x_k, x_k+1) at the denoise index k for sde_steps="one", x_0..x_K for "all"
    denoise_index: Tensor  # [B] int64: the stochastic step ("one") or -1 ("all")
    logprob: Tensor  # [B] (chunk level) or [B, H, Dr] (token level), float32
    value: Tensor  # [B] float32


@dataclass
class ChainScore:
    """Log-prob, entropy and value of stored chains under the current weights (differentiable)."""

    logprob: Tensor  # [B] or [B, H, Dr] float32
    entropy: Tensor  # [B] mean Gaussian entropy per executed element of the stochastic step(s)
    value: Tensor  # [B]
    noise_std: Tensor  # [B]


class FlowChainSampler:
    """Stochastic sampling and re-scoring of the denoising chain with one step rule.

    The step coefficients of the K steps are computed once here (rounded to float32, the std floored),
    so a sampled step is the ODE step plus ``mean + eps * std`` and the log-density is evaluated once,
    after the chain, on the executed slice only. Sampling and re-scoring evaluate the same float32
    expressions, so the stored behaviour log-prob equals the re-scored one for unchanged weights.
    """

    def __init__(self, cfg: FlowSamplerConfig, action_chunk: int, real_action_dim: int):
        self.cfg = cfg
        self.rule = make_step_rule(cfg.noise_method, cfg.noise_level)
        self.num_steps = cfg.num_denoise_steps
        self.delta = 1.0 / cfg.num_denoise_steps
        self.hybrid = cfg.sde_steps == "one"
        self.action_chunk = action_chunk
        self.real_action_dim = real_action_dim
        # The ODE step x + dt * v with LeRobot's dt = -1/K (bit-identical to its Euler loop).
        self.ode_a_v = -1.0 / cfg.num_denoise_steps
        raw = [self.rule.coefficients(tau, self.delta, self.num_steps) for tau in self.taus]
        # Steps with a zero fixed std (CPS's last step) are deterministic: they are ODE steps, carry no
        # log-density term and are never the hybrid step. (With noise_level=0 every std is zero: then
        # all steps stay stochastic with the floor std.)
        self.noisy_steps: list[int] = []
        if self.rule.stochastic:
            positive = [k for k, c in enumerate(raw) if c.std is None or c.std > 0]
            self.noisy_steps = positive or list(range(self.num_steps))
        if self.noisy_steps != list(range(len(self.noisy_steps))):
            raise ValueError(f"noise_method={cfg.noise_method!r}: stochastic steps must come first")
        self.coefs = [self._rounded(c) for c in raw]
        # The head's std lies in [noise_std_min, noise_std_max]; the floor only matters below that band.
        self.clamp_learned_std = cfg.std_floor > cfg.noise_std_min
        self._cache: dict[tuple[str, torch.device], object] = {}

    @property
    def taus(self) -> list[float]:
        """``tau_k = 1 + k dt`` for the K steps, like LeRobot's Euler loop (double precision)."""
        return [1.0 + k * (-1.0 / self.num_steps) for k in range(self.num_steps)]

    def _rounded(self, c: StepCoefficients) -> StepCoefficients:
        def f32(value: float) -> float:
            return float(torch.tensor(value, dtype=torch.float32))

        std = None if c.std is None else f32(max(c.std, self.cfg.std_floor))
        return StepCoefficients(f32(c.a_x), f32(c.a_v), std)

    def _cached(self, name: str, device: torch.device, build):
        """A per-device constant (coefficient tables and their views), built on first use."""
        key = (name, device)
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _table(self, device: torch.device) -> Tensor:
        """``[K, 6]`` float32: a row per step, the columns of :class:`StepColumns`. Re-scoring gathers a
        sample's row by its denoise index."""

        def build() -> Tensor:
            rows = [
                (tau, c.a_x, c.a_v, math.nan if c.std is None else c.std)
                for tau, c in zip(self.taus, self.coefs, strict=True)
            ]
            tau, a_x, a_v, std = torch.tensor(rows, dtype=torch.float32, device=device).unbind(1)
            # The one entropy formula and log-density peak (NaN stays NaN).
            columns = StepColumns(tau, a_x, a_v, std, gaussian_entropy(std), gaussian_log_peak(std))
            return torch.stack(columns, dim=1)

        return self._cached("table", device, build)

    def _step_columns(self, device: torch.device) -> StepColumns:
        """The table's columns over the K steps, each ``[K]``."""
        return self._cached("step_columns", device, lambda: StepColumns(*self._table(device).unbind(1)))

    def _gather_columns(self, denoise_index: Tensor) -> StepColumns:
        """Each sample's row of the table, as ``[B, 1, 1]`` columns that broadcast over a chunk: one
        gather (of the table viewed as ``[K, 6, 1, 1]``) and one unbind."""
        device = denoise_index.device
        table = self._cached("table_4d", device, lambda: self._table(device).view(self.num_steps, -1, 1, 1))
        return StepColumns(*table[self._as_index(denoise_index)].unbind(1))

    @staticmethod
    def _as_index(denoise_index: Tensor) -> Tensor:
        return denoise_index if denoise_index.dtype == torch.long else denoise_index.long()

    def _rows(self, device: torch.device) -> list[StepRow]:
        """A :class:`StepRow` per step (views of the table): hot loops multiply by tensors, as a Python
        scalar costs an extra dispatch per use."""

        def build() -> list[StepRow]:
            ode_a_v = torch.tensor(self.ode_a_v, dtype=torch.float32, device=device)
            rows = (StepColumns(*row.unbind(0)) for row in self._table(device))
            return [
                StepRow(r.tau, 1.0 if c.a_x == 1.0 else r.a_x, r.a_v, r.std, ode_a_v)
                for r, c in zip(rows, self.coefs, strict=True)
            ]

        return self._cached("rows", device, build)

    # ---------------------------------------------------------------- helpers
    def _executed(self, t: Tensor) -> Tensor:
        """The executed slice ``[..., :H, :Dr]`` of a ``[..., T, D]`` tensor (a broadcast std stays)."""
        if t.shape[-1] > self.real_action_dim:
            t = t[..., : self.real_action_dim]
        return t[..., : self.action_chunk, :] if t.shape[-2] > self.action_chunk else t

    def _learned_std(self, noise_head: NoiseHead, hidden: Tensor) -> Tensor:
        std = noise_head(hidden)
        return std.clamp_min(self.cfg.std_floor) if self.clamp_learned_std else std

    def _logprob(self, per_elem: Tensor, num_terms: int) -> Tensor:
        """The configured log-prob from the summed element log-densities ``[B, H, Dr]`` of the chain's
        ``num_terms`` terms (stochastic steps, plus the prior of a joint chain)."""
        if self.cfg.logprob_reduction == "mean" and num_terms > 1:
            per_elem = per_elem / num_terms
        return per_elem.sum((-2, -1)) if self.cfg.logprob_level == "chunk" else per_elem

    def _step_log_density(self, x_next: Tensor, mean: Tensor, std: Tensor, peak: Tensor | None) -> Tensor:
        """Element log-densities on the executed slice; a fixed std comes with its precomputed ``peak``."""
        ex = self._executed
        return gaussian_log_prob(ex(x_next), ex(mean), ex(std), None if peak is None else ex(peak))

    def _joint_scale(self, learned: list[Tensor], device: torch.device) -> StepScale:
        """The scale of the noisy steps of a joint chain: ``[B, S, T, D]`` learned (no peak), or
        ``[1, S, 1, 1]`` std and peak from the table."""
        if self.rule.learned_std:
            return StepScale(torch.stack(learned, dim=1), None)

        def build() -> StepScale:
            columns = self._step_columns(device)
            steps = self.noisy_steps
            return StepScale(columns.std[steps].view(1, -1, 1, 1), columns.peak[steps].view(1, -1, 1, 1))

        return self._cached("joint_scale", device, build)

    def _joint_log_density(self, chain: Tensor, means: Tensor, scale: StepScale) -> tuple[Tensor, int]:
        """Summed element log-densities of a joint chain ``[B, K + 1, T, D]`` (the prior of ``x_0`` and
        every noisy step, means ``[B, S, T, D]``) and the term count. Sampling and re-scoring pass the
        same contiguous layout, so the reductions add in the same order."""
        num_noisy = means.shape[1]
        steps = self._step_log_density(chain[:, 1 : num_noisy + 1], means, *scale)
        peak = self._cached(
            "prior_peak", chain.device, lambda: gaussian_log_peak(torch.ones((), device=chain.device))
        )
        return steps.sum(1) + standard_normal_log_prob(self._executed(chain[:, 0]), peak), num_noisy + 1

    def _per_sample(self, std: Tensor) -> Tensor:
        """Mean over the executed elements (and steps) of ``[B, *, *]`` or ``[B, S, *, *]``: ``[B]``."""
        t = self._executed(std).flatten(-2).mean(-1)
        return t.mean(1) if t.ndim == 2 else t

    @staticmethod
    def _pool(step_feats: list[Tensor]) -> Tensor:
        """Average the per-step action-token features (the "expert" value-head input)."""
        return torch.stack(step_feats, dim=0).mean(0)

    def _draw_denoise_index(self, batch_size: int, device, generator) -> Tensor:
        high = self.num_steps - 1 if self.cfg.exclude_last_step else self.num_steps
        if self.rule.stochastic:
            high = min(high, len(self.noisy_steps))
        if self.cfg.hybrid_step_draw == "per_batch":
            return torch.randint(0, high, (1,), device=device, generator=generator).repeat(batch_size)
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
        """One stochastic chain per observation. Steps nobody samples at are plain ODE steps; the
        hybrid mode scores each sample's stochastic step (its denoise index) after the loop, the joint
        mode every noisy step.
        ``with_value=False`` skips the value head (an actor does not need it: the learner computes
        values) and returns NaN values."""
        prefix = adapter.encode(batch)
        bsz = prefix.features.shape[0]
        device = prefix.features.device
        x = as_float32(noise if noise is not None else adapter.sample_noise(bsz, device, generator))
        need_feats = with_value and value_head.placement == "expert"
        if self.hybrid:
            denoise_index = self._draw_denoise_index(bsz, device, generator)
            run = self._run_hybrid(adapter, noise_head, prefix, x, denoise_index, generator, need_feats)
        else:
            denoise_index = torch.full((bsz,), -1, dtype=torch.long, device=device)
            run = self._run_joint(adapter, noise_head, prefix, x, generator, need_feats)
        per_elem, num_terms = run.per_elem, run.num_terms
        if per_elem is None:  # the "ode" method: no density, log-prob 0
            per_elem, num_terms = torch.zeros_like(self._executed(run.actions)), 1
        if with_value:
            expert = None
            if (
                need_feats
            ):  # hybrid: the features at each sample's own stochastic step, as re-scoring sees them
                stacked = torch.stack(run.feats)
                rows = torch.arange(bsz, device=device)
                expert = stacked[denoise_index, rows] if self.hybrid else stacked.mean(0)
            value = as_float32(value_head(prefix.features, expert))
        else:
            value = torch.full((bsz,), float("nan"), device=device)
        return ChainSample(
            actions=run.actions,
            executed=self._executed(run.actions),
            chain=run.stored,
            denoise_index=denoise_index,
            logprob=self._logprob(per_elem, num_terms),
            value=value,
        )

    def _run_hybrid(self, adapter, noise_head, prefix, x, denoise_index, generator, need_feats) -> ChainRun:
        """The chain with one stochastic step per sample, at its own denoise index. When the whole batch
        shares it (batch 1, ``per_batch`` draws) the other steps are plain ODE steps; otherwise each step
        applies per-sample coefficients (the step's own for samples whose denoise index it is, the ODE's,
        bit for bit, elsewhere) and the recorded values are gathered after the loop."""
        bsz, device = x.shape[0], x.device
        rows = self._rows(device)
        index_list = denoise_index.tolist()
        shared = index_list.count(index_list[0]) == bsz
        per_sample, own_scale = (None, None) if shared else self._per_sample_coefficients(denoise_index)
        eps = torch.randn(x.shape, device=device, generator=generator) if self.rule.stochastic else None
        chain, means, learned_stds, feats = [x], [], [], []
        record = None  # (x_k, x_k+1, mean, learned std) of the shared denoise index k
        for k, (tau, a_x, a_v, std, ode_a_v) in enumerate(rows):
            v, hidden = adapter.velocity(prefix, x, tau.expand(bsz))
            v = as_float32(v)
            if need_feats:
                feats.append(as_float32(hidden).mean(1))
            learned = (
                self._learned_std(noise_head, hidden)
                if self.rule.learned_std and (per_sample is not None or k == index_list[0])
                else None
            )
            if per_sample is not None:
                sel_x, sel_v, sel_std = per_sample[k]  # views, unbound once before the loop
                mean = x * sel_x + v * sel_v
                if learned is not None:
                    learned_stds.append(learned)
                    sel_std = learned * sel_std  # the mask: zero std off the sample's denoise index
                x = mean if eps is None else torch.addcmul(mean, eps, sel_std)
                chain.append(x)
                means.append(mean)
            elif k == index_list[0]:
                mean = step_mean(x, v, a_x, a_v)
                x_next = (
                    mean if eps is None else torch.addcmul(mean, eps, learned if learned is not None else std)
                )
                record = (x, x_next, mean, learned)
                x = x_next
            else:
                x = x + v * ode_a_v
        if per_sample is None:
            x_k, x_k1, mean_k, learned = record
            stored = torch.stack([x_k, x_k1], dim=1)
        else:  # gather each sample's (x_k, x_k+1), mean and std at its denoise index: one indexing each
            rows_b = torch.arange(bsz, device=device)
            pairs = self._cached(
                "pairs", device, lambda: torch.arange(self.num_steps + 1, device=device).unfold(0, 2, 1)
            )
            stored = torch.stack(chain, dim=1)[rows_b.view(-1, 1), pairs[denoise_index]]
            x_k, x_k1 = stored[:, 0], stored[:, 1]
            mean_k = torch.stack(means, dim=1)[rows_b, denoise_index]
            learned = torch.stack(learned_stds, dim=1)[rows_b, denoise_index] if learned_stds else None
        if not self.rule.stochastic:
            return ChainRun(x, stored, None, 1, feats)
        if learned is not None:
            return ChainRun(x, stored, self._step_log_density(x_k1, mean_k, learned, None), 1, feats)
        if own_scale is None:
            columns = self._gather_columns(denoise_index)
            own_scale = StepScale(columns.std, columns.peak)
        return ChainRun(x, stored, self._step_log_density(x_k1, mean_k, *own_scale), 1, feats)

    def _per_sample_coefficients(self, denoise_index: Tensor) -> tuple[list[tuple[Tensor, ...]], StepScale]:
        """The ``[B, 1, 1]`` columns of a batch with per-sample denoise indices, picked from a per-device
        table in one gather: per step ``(a_x, a_v, std)``, the step's own coefficients for the samples
        whose denoise index it is and the ODE's ``(1, -1/K, 0)`` for the others (with a learned std the
        third column is a 0/1 mask); and the scale of each sample's own step (NaN when learned), for its
        log-density."""
        device = denoise_index.device
        num_steps = self.num_steps

        def build() -> Tensor:  # [3K + 2, K]: a column per value of the denoise index
            columns = self._step_columns(device)
            switch = torch.empty(num_steps, 3, num_steps, dtype=torch.float32, device=device)
            switch[:, 0], switch[:, 1] = 1.0, self.ode_a_v
            switch[:, 2] = 0.0
            steps = torch.arange(num_steps, device=device)
            switch[steps, 0, steps], switch[steps, 1, steps] = columns.a_x, columns.a_v
            switch[steps, 2, steps] = 1.0 if self.rule.learned_std else columns.std
            return torch.cat(
                [switch.view(3 * num_steps, num_steps), torch.stack([columns.std, columns.peak])]
            )

        switch = self._cached("switch", device, build)
        cols = switch[:, denoise_index].view(3 * num_steps + 2, -1, 1, 1).unbind(0)
        return [cols[3 * k : 3 * k + 3] for k in range(num_steps)], StepScale(cols[-2], cols[-1])

    def _run_joint(self, adapter, noise_head, prefix, x, generator, need_feats) -> ChainRun:
        """The chain with every noisy step stochastic (the noise of all steps drawn at once); the
        log-density of the prior and every noisy step is evaluated after the loop."""
        bsz, device = x.shape[0], x.device
        rows = self._rows(device)
        num_noisy = len(self.noisy_steps)
        eps = (
            torch.randn((num_noisy, *x.shape), device=device, generator=generator).unbind(0)
            if self.rule.stochastic
            else None
        )
        chain, means, learned_stds, feats = [x], [], [], []
        for k, (tau, a_x, a_v, std, ode_a_v) in enumerate(rows):
            v, hidden = adapter.velocity(prefix, x, tau.expand(bsz))
            v = as_float32(v)
            if need_feats:
                feats.append(as_float32(hidden).mean(1))
            if eps is None or k >= num_noisy:  # "ode", or CPS's deterministic last step
                x = x + v * ode_a_v
            else:
                mean = step_mean(x, v, a_x, a_v)
                if self.rule.learned_std:
                    std = self._learned_std(noise_head, hidden)
                    learned_stds.append(std)
                x = torch.addcmul(mean, eps[k], std)
                means.append(mean)
            chain.append(x)
        stored = torch.stack(chain, dim=1)
        if eps is None:
            return ChainRun(x, stored, None, 1, feats)
        scale = self._joint_scale(learned_stds, device)
        per_elem, num_terms = self._joint_log_density(stored, torch.stack(means, dim=1), scale)
        return ChainRun(x, stored, per_elem, num_terms, feats)

    @torch.no_grad()
    def sample_ode(
        self, adapter: FlowAdapter, batch: dict[str, Tensor], noise: Tensor | None = None
    ) -> Tensor:
        """Deterministic ODE sampling (deployment / evaluation): the full chunk ``[B, T, D]``."""
        prefix = adapter.encode(batch)
        bsz = prefix.features.shape[0]
        device = prefix.features.device
        x = as_float32(noise if noise is not None else adapter.sample_noise(bsz, device))
        for tau, _, _, _, ode_a_v in self._rows(device):
            v, _ = adapter.velocity(prefix, x, tau.expand(bsz))
            x = x + as_float32(v) * ode_a_v
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
        """Log-prob, entropy and value of stored chains under the current weights; the hybrid mode
        evaluates the velocity once per sample, at its own denoise index."""
        prefix: Prefix = adapter.encode(batch)
        chain = as_float32(chain)
        need_feats = value_head.placement == "expert"
        if self.hybrid:
            rescored = self._rescore_hybrid(adapter, noise_head, prefix, chain, denoise_index, need_feats)
        else:
            rescored = self._rescore_joint(adapter, noise_head, prefix, chain, need_feats)
        value = as_float32(value_head(prefix.features, self._pool(rescored.feats) if need_feats else None))
        if not self.rule.stochastic:
            zeros = torch.zeros_like(value)
            logprob = self._logprob(torch.zeros_like(self._executed(chain[:, 0])), 1)
            return ChainScore(logprob=logprob, entropy=zeros, value=value, noise_std=zeros)
        if rescored.entropy is not None:  # a fixed std: the step's row has both
            entropy, noise_std = rescored.entropy.view(-1), rescored.std.view(-1)
        else:
            entropy = self._per_sample(gaussian_entropy(rescored.std)).expand_as(value)
            noise_std = self._per_sample(rescored.std).expand_as(value)
        logprob = self._logprob(rescored.per_elem, rescored.num_terms)
        return ChainScore(logprob=logprob, entropy=entropy, value=value, noise_std=noise_std)

    def _rescore_hybrid(self, adapter, noise_head, prefix, chain, denoise_index, need_feats) -> Rescored:
        """Stored pairs ``(x_k, x_k+1)``: one velocity evaluation per sample at its denoise index ``k``."""
        x, x_next = chain.unbind(1)
        columns = self._gather_columns(denoise_index)
        v, hidden = adapter.velocity(prefix, x, columns.tau.view(-1))
        mean = step_mean(x, as_float32(v), columns.a_x, columns.a_v)
        feats = [as_float32(hidden).mean(1)] if need_feats else []
        if self.rule.learned_std:
            std, peak, entropy = self._learned_std(noise_head, hidden), None, None
        else:
            std, peak, entropy = columns.std, columns.peak, columns.entropy
        per_elem = self._step_log_density(x_next, mean, std, peak) if self.rule.stochastic else None
        return Rescored(per_elem, 1, std, entropy, feats)

    def _rescore_joint(self, adapter, noise_head, prefix, chain, need_feats) -> Rescored:
        """Stored chains ``x_0 .. x_K``: the velocity at every noisy step (at every step for a value head
        on the expert), the prior and every noisy step's log-density."""
        bsz, device = chain.shape[0], prefix.features.device
        means, stds, feats = [], [], []
        for k, row in enumerate(self._rows(device)):
            if k not in self.noisy_steps and not need_feats:
                continue
            x = chain[:, k]
            v, hidden = adapter.velocity(prefix, x, row.tau.expand(bsz))
            if need_feats:
                feats.append(as_float32(hidden).mean(1))
            if k in self.noisy_steps:
                means.append(step_mean(x, as_float32(v), row.a_x, row.a_v))
                if self.rule.learned_std:
                    stds.append(self._learned_std(noise_head, hidden))
        if not self.rule.stochastic:
            return Rescored(None, 1, None, None, feats)
        scale = self._joint_scale(stds, device)
        per_elem, num_terms = self._joint_log_density(chain.contiguous(), torch.stack(means, dim=1), scale)
        return Rescored(per_elem, num_terms, scale.std, None, feats)
