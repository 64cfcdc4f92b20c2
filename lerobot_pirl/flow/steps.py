"""Pure tensor functions for one denoising step of a flow-matching policy.

Time convention (LeRobot's pi0 / pi05 / smolvla): ``x_tau = tau * noise + (1 - tau) * action``, the
velocity is ``v = noise - action`` and sampling integrates from ``tau = 1`` (noise) to ``tau = 0``
(action) on the grid ``tau_k = 1 - k / K``. A step maps ``x_k`` at ``tau`` to ``x_{k+1}`` at
``tau - delta`` with ``delta = 1 / K``.

Every rule returns the Gaussian transition ``N(mean, std^2)`` of the step; the deterministic ODE rule
has ``std == 0``. All rules share one signature so a sampler can swap them without branching:
``rule(x, v, tau, delta, num_steps, noise_std) -> (mean, std)``, where ``tau`` broadcasts against
``x`` and ``noise_std`` is the learned per-element std (only Flow-Noise reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class StepRule(Protocol):
    """One stochastic (or deterministic) Euler step of the reverse flow."""

    stochastic: ClassVar[bool]  # False only for the deterministic ODE step
    learned_std: ClassVar[bool]  # True when the std comes from the noise head

    def __call__(
        self, x: Tensor, v: Tensor, tau: Tensor, delta: float, num_steps: int, noise_std: Tensor | None
    ) -> tuple[Tensor, Tensor]: ...


def predicted_action(x: Tensor, v: Tensor, tau: Tensor) -> Tensor:
    """``x0_hat = x - tau * v``: the action the current velocity points to."""
    return x - tau * v


def predicted_noise(x: Tensor, v: Tensor, tau: Tensor) -> Tensor:
    """``x1_hat = x + (1 - tau) * v``: the noise the current velocity points back to."""
    return x + (1.0 - tau) * v


@dataclass(frozen=True)
class ODEStep:
    """Deterministic Euler step ``x - delta * v`` (std 0): what deployment and evaluation run."""

    stochastic: ClassVar[bool] = False
    learned_std: ClassVar[bool] = False

    def __call__(
        self, x: Tensor, v: Tensor, tau: Tensor, delta: float, num_steps: int, noise_std: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        mean = x - delta * v
        return mean, torch.zeros_like(mean)


def flow_sde_sigma(tau: Tensor, noise_level: float, num_steps: int) -> Tensor:
    """``sigma_tau = a * sqrt(tau / (1 - tau))``; at ``tau = 1`` the denominator uses ``tau = 1 - 1/K``."""
    tau_den = torch.where(tau >= 1.0, torch.full_like(tau, 1.0 - 1.0 / num_steps), tau)
    return noise_level * torch.sqrt(tau / (1.0 - tau_den))


@dataclass(frozen=True)
class FlowSDEStep:
    """Flow-SDE: the ODE turned into an SDE with the same marginals, noise level ``a``.

    The mean is computed in the form ``x - delta * [v + sigma^2 / (2 tau) * (x + (1 - tau) v)]``, which
    equals ``(1 - tau + delta) x0_hat + (tau - delta - sigma^2 delta / (2 tau)) x1_hat`` and reduces
    bit-for-bit to the ODE step when ``noise_level == 0``.
    """

    noise_level: float
    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = False

    def __call__(
        self, x: Tensor, v: Tensor, tau: Tensor, delta: float, num_steps: int, noise_std: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        sigma = flow_sde_sigma(tau, self.noise_level, num_steps)
        drift = v + sigma.square() / (2.0 * tau) * predicted_noise(x, v, tau)
        mean = x - delta * drift
        std = (math.sqrt(delta) * sigma).expand_as(mean)
        return mean, std


def flow_sde_mean_mixture(x: Tensor, v: Tensor, tau: Tensor, delta: float, sigma: Tensor) -> Tensor:
    """The Flow-SDE mean written as a mixture of the predicted action and noise (reference form)."""
    w0 = 1.0 - tau + delta
    w1 = tau - delta - sigma.square() * delta / (2.0 * tau)
    return w0 * predicted_action(x, v, tau) + w1 * predicted_noise(x, v, tau)


@dataclass(frozen=True)
class FlowNoiseStep:
    """Flow-Noise: the ODE mean with a learned per-element std from the noise head."""

    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = True

    def __call__(
        self, x: Tensor, v: Tensor, tau: Tensor, delta: float, num_steps: int, noise_std: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if noise_std is None:
            raise ValueError("flow_noise needs the noise head's std (noise_std is None)")
        mean = x - delta * v
        return mean, noise_std.expand_as(mean)


@dataclass(frozen=True)
class FlowCPSStep:
    """Coefficient-preserving sampling: ``mean = (1-t')x0 + t' cos(pi a/2) x1``, ``std = t' sin(pi a/2)``."""

    noise_level: float
    stochastic: ClassVar[bool] = True
    learned_std: ClassVar[bool] = False

    def __call__(
        self, x: Tensor, v: Tensor, tau: Tensor, delta: float, num_steps: int, noise_std: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        t_next = tau - delta
        angle = math.pi * self.noise_level / 2.0
        mean = (1.0 - t_next) * predicted_action(x, v, tau) + t_next * math.cos(angle) * predicted_noise(
            x, v, tau
        )
        std = (t_next * math.sin(angle)).expand_as(mean)
        return mean, std


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Element-wise ``log N(x; mean, std^2)`` computed in float32."""
    x, mean, std = x.float(), mean.float(), std.float()
    return -((x - mean) ** 2) / (2.0 * std**2) - torch.log(std) - LOG_SQRT_2PI


def gaussian_entropy(std: Tensor) -> Tensor:
    """Element-wise entropy of ``N(., std^2)`` in float32."""
    return torch.log(std.float()) + 0.5 + LOG_SQRT_2PI


def bounded_std(raw: Tensor, std_min: float, std_max: float) -> Tensor:
    """Squash an unbounded head output into ``[std_min, std_max]`` with ``tanh``."""
    return std_min + (std_max - std_min) * (torch.tanh(raw) + 1.0) / 2.0


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
