"""Pure tensor functions for one denoising step of a flow-matching policy.

Time convention (LeRobot's pi0 / pi05 / smolvla): ``x_tau = tau * noise + (1 - tau) * action``, the
velocity is ``v = noise - action`` and sampling integrates from ``tau = 1`` (noise) to ``tau = 0``
(action) on the grid ``tau_k = 1 - k / K``. A step maps ``x_k`` at ``tau`` to ``x_{k+1}`` at
``tau - delta`` with ``delta = 1 / K``.

Every rule is affine in ``(x, v)``: a step draws ``x_{k+1} ~ N(a_x * x + a_v * v, std^2)``, where the
coefficients depend only on the step's time (and the method's noise level), and ``std`` is either a
fixed schedule or, for Flow-Noise, the noise head's per-element output. A rule therefore only provides
:meth:`StepRule.coefficients`, in double precision; :func:`step_mean` applies them. Samplers precompute
the coefficients of the K steps once, so a stochastic step costs three tensor operations more than an
ODE step, and sampling and re-scoring evaluate exactly the same expression. The deterministic ODE step
``(1, -delta, 0)`` reproduces LeRobot's ``x + dt * v`` bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class StepCoefficients:
    """One step's transition ``N(a_x * x + a_v * v, std^2)``; ``std`` is None when it is learned."""

    a_x: float
    a_v: float
    std: float | None


class StepRule(Protocol):
    """One stochastic (or deterministic) Euler step of the reverse flow."""

    stochastic: ClassVar[bool]  # False only for the deterministic ODE step
    learned_std: ClassVar[bool]  # True when the std comes from the noise head

    def coefficients(self, tau: float, delta: float, num_steps: int) -> StepCoefficients: ...


def step_mean(x: Tensor, v: Tensor, a_x: float | Tensor, a_v: float | Tensor) -> Tensor:
    """``a_x * x + a_v * v``; ``a_x == 1`` skips a multiplication that would not change a bit."""
    if isinstance(a_x, float) and a_x == 1.0:
        return x + v * a_v
    return x * a_x + v * a_v


def predicted_action(x: Tensor, v: Tensor, tau: float | Tensor) -> Tensor:
    """``x0_hat = x - tau * v``: the action the current velocity points to."""
    return x - tau * v


def predicted_noise(x: Tensor, v: Tensor, tau: float | Tensor) -> Tensor:
    """``x1_hat = x + (1 - tau) * v``: the noise the current velocity points back to."""
    return x + (1.0 - tau) * v


@dataclass(frozen=True)
class ODEStep:
    """Deterministic Euler step ``x - delta * v`` (std 0): what deployment and evaluation run."""

    stochastic: ClassVar[bool] = False
    learned_std: ClassVar[bool] = False

    def coefficients(self, tau: float, delta: float, num_steps: int) -> StepCoefficients:
        return StepCoefficients(1.0, -delta, 0.0)


def flow_sde_sigma(tau: float, noise_level: float, num_steps: int) -> float:
    """``sigma_tau = a * sqrt(tau / (1 - tau))``; at ``tau = 1`` the denominator uses ``tau = 1 - 1/K``."""
    tau_den = 1.0 - 1.0 / num_steps if tau >= 1.0 else tau
    return noise_level * math.sqrt(tau / (1.0 - tau_den))


@dataclass(frozen=True)
class FlowSDEStep:
    """Flow-SDE: the ODE turned into an SDE with the same marginals, noise level ``a``.

    The mean ``x - delta * [v + sigma^2 / (2 tau) * (x + (1 - tau) v)]`` (equivalently
    ``(1 - tau + delta) x0_hat + (tau - delta - sigma^2 delta / (2 tau)) x1_hat``) is affine with
    ``a_x = 1 - delta c`` and ``a_v = -delta (1 + c (1 - tau))``, ``c = sigma^2 / (2 tau)``; the std is
    ``sqrt(delta) sigma``. With ``noise_level == 0`` the coefficients are exactly the ODE's.
    """

    noise_level: float
    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = False

    def coefficients(self, tau: float, delta: float, num_steps: int) -> StepCoefficients:
        sigma = flow_sde_sigma(tau, self.noise_level, num_steps)
        c = sigma * sigma / (2.0 * tau)
        return StepCoefficients(1.0 - delta * c, -delta * (1.0 + c * (1.0 - tau)), math.sqrt(delta) * sigma)


def flow_sde_mean_mixture(x: Tensor, v: Tensor, tau: float, delta: float, sigma: float) -> Tensor:
    """The Flow-SDE mean written as a mixture of the predicted action and noise (reference form)."""
    w0 = 1.0 - tau + delta
    w1 = tau - delta - sigma * sigma * delta / (2.0 * tau)
    return w0 * predicted_action(x, v, tau) + w1 * predicted_noise(x, v, tau)


@dataclass(frozen=True)
class FlowNoiseStep:
    """Flow-Noise: the ODE mean with a learned per-element std from the noise head."""

    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = True

    def coefficients(self, tau: float, delta: float, num_steps: int) -> StepCoefficients:
        return StepCoefficients(1.0, -delta, None)


@dataclass(frozen=True)
class FlowCPSStep:
    """Coefficient-preserving sampling: ``mean = (1-t')x0 + t' cos(pi a/2) x1``, ``std = t' sin(pi a/2)``."""

    noise_level: float
    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = False

    def coefficients(self, tau: float, delta: float, num_steps: int) -> StepCoefficients:
        t_next = tau - delta
        angle = math.pi * self.noise_level / 2.0
        w0, w1 = 1.0 - t_next, t_next * math.cos(angle)  # weights of x0_hat and x1_hat
        return StepCoefficients(w0 + w1, -w0 * tau + w1 * (1.0 - tau), t_next * math.sin(angle))


def as_float32(t: Tensor) -> Tensor:
    """``t.float()`` without a dispatch when it already is float32 (hot loops count operations)."""
    return t if t.dtype == torch.float32 else t.float()


def gaussian_log_peak(std: Tensor) -> Tensor:
    """``log N(mean; mean, std^2) = -log(std) - log(sqrt(2 pi))`` in float32: the log-density at the mean,
    which a fixed std schedule computes once per step instead of once per evaluation."""
    return -LOG_SQRT_2PI - torch.log(as_float32(std))


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor, peak: Tensor | None = None) -> Tensor:
    """Element-wise ``log N(x; mean, std^2) = peak - z^2 / 2`` with ``z = (x - mean) / std``, in float32
    (``std`` and ``peak`` broadcast); ``peak`` is :func:`gaussian_log_peak` of ``std``, if precomputed."""
    std = as_float32(std)
    z = (as_float32(x) - as_float32(mean)) / std
    return torch.addcmul(gaussian_log_peak(std) if peak is None else peak, z, z, value=-0.5)


def standard_normal_log_prob(x: Tensor, peak: Tensor | None = None) -> Tensor:
    """Element-wise ``log N(x; 0, 1) = peak - x^2 / 2`` in float32 (the chain's prior term); ``peak`` is
    :func:`gaussian_log_peak` of a unit std (0-dim, on ``x``'s device), if the caller keeps one."""
    x = as_float32(x)
    if peak is None:
        peak = gaussian_log_peak(torch.ones((), device=x.device))
    return torch.addcmul(peak, x, x, value=-0.5)


def gaussian_entropy(std: Tensor) -> Tensor:
    """Element-wise entropy of ``N(., std^2)`` in float32."""
    return torch.log(std.float()) + 0.5 + LOG_SQRT_2PI


def bounded_std(raw: Tensor, std_min: float, std_max: float, mid: Tensor | None = None) -> Tensor:
    """Squash an unbounded head output into ``[std_min, std_max]`` with ``tanh``: ``mid + half * tanh``
    as one fused add (two Python-scalar operations cost more than the head's last layer at batch 1);
    ``mid`` is ``(std_min + std_max) / 2`` as a 0-dim float32 tensor, if the caller keeps one."""
    if mid is None:
        mid = torch.full((), (std_max + std_min) / 2.0, dtype=torch.float32, device=raw.device)
    return torch.add(mid, torch.tanh(raw), alpha=(std_max - std_min) / 2.0)


def make_step_rule(noise_method: str, noise_level: float) -> StepRule:
    """The step rule of a noise method (``ode``, ``flow_sde``, ``flow_noise``, ``flow_cps``)."""
    rules: dict[str, StepRule] = {
        "ode": ODEStep(),
        "flow_sde": FlowSDEStep(noise_level),
        "flow_noise": FlowNoiseStep(),
        "flow_cps": FlowCPSStep(noise_level),
    }
    if noise_method not in rules:
        raise ValueError(f"noise_method must be one of {sorted(rules)}, got {noise_method!r}")
    return rules[noise_method]


NOISE_METHODS = ("ode", "flow_sde", "flow_noise", "flow_cps")
