"""Exact tests of the step rules and Gaussian log-densities (issue 3)."""

from __future__ import annotations

import math

import pytest
import torch

from lerobot_pirl.flow.steps import (
    FlowCPSStep,
    FlowNoiseStep,
    FlowSDEStep,
    ODEStep,
    bounded_std,
    flow_sde_mean_mixture,
    flow_sde_sigma,
    gaussian_entropy,
    gaussian_log_prob,
    make_step_rule,
)


def _xv(seed=0, shape=(4, 5, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(
        shape, generator=g, dtype=torch.float64
    )


def test_gaussian_log_prob_matches_torch_normal():
    x, mean = _xv(1)
    std = torch.rand_like(x) + 0.05
    expected = torch.distributions.Normal(mean.float(), std.float()).log_prob(x.float())
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected, rtol=1e-6, atol=1e-6)
    assert gaussian_log_prob(x, mean, std).dtype == torch.float32


def test_gaussian_entropy_matches_torch_normal():
    std = torch.rand(10) + 0.01
    torch.testing.assert_close(gaussian_entropy(std), torch.distributions.Normal(0.0, std).entropy())


@pytest.mark.parametrize("num_steps", range(1, 11))
def test_flow_sde_mean_equals_both_algebraic_forms(num_steps):
    x, v = _xv(num_steps)
    a, delta = 0.5, 1.0 / num_steps
    rule = FlowSDEStep(a)
    for k in range(num_steps):
        tau = torch.tensor(1.0 - k / num_steps, dtype=torch.float64)
        mean, std = rule(x, v, tau, delta, num_steps)
        sigma = flow_sde_sigma(tau, a, num_steps)
        mixture = flow_sde_mean_mixture(x, v, tau, delta, sigma)
        bracket = x - delta * (v + sigma**2 / (2 * tau) * (x + (1 - tau) * v))
        torch.testing.assert_close(mean, mixture, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mean, bracket, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(std, torch.full_like(x, math.sqrt(delta) * float(sigma)))
        assert torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()


@pytest.mark.parametrize("num_steps", [1, 2, 4, 10])
def test_flow_sde_sigma_at_tau_one_uses_fallback(num_steps):
    a = 0.7
    sigma = flow_sde_sigma(torch.tensor(1.0, dtype=torch.float64), a, num_steps)
    # tau = 1 - 1/K in the denominator: sigma = a * sqrt(1 / (1/K)) = a * sqrt(K)
    assert float(sigma) == pytest.approx(a * math.sqrt(num_steps))
    inner = flow_sde_sigma(torch.tensor(0.25, dtype=torch.float64), a, num_steps)
    assert float(inner) == pytest.approx(a * math.sqrt(0.25 / 0.75))


def test_flow_sde_with_zero_noise_is_the_ode_step_bitwise():
    x, v = _xv(3)
    x, v = x.float(), v.float()
    tau = torch.tensor(0.75)
    mean, std = FlowSDEStep(0.0)(x, v, tau, 0.25, 4)
    ode_mean, ode_std = ODEStep()(x, v, tau, 0.25, 4)
    assert torch.equal(mean, ode_mean)
    assert torch.equal(std, torch.zeros_like(std)) and torch.equal(ode_std, torch.zeros_like(ode_std))


def test_flow_noise_uses_the_head_std_and_ode_mean():
    x, v = _xv(4)
    std_in = torch.rand_like(x) + 0.1
    mean, std = FlowNoiseStep()(x, v, torch.tensor(0.5), 0.25, 4, std_in)
    torch.testing.assert_close(mean, x - 0.25 * v)
    assert torch.equal(std, std_in)
    with pytest.raises(ValueError, match="noise_std"):
        FlowNoiseStep()(x, v, torch.tensor(0.5), 0.25, 4, None)


def test_cps_step_formula():
    x, v = _xv(5)
    a, tau, delta = 0.4, torch.tensor(0.75, dtype=torch.float64), 0.25
    mean, std = FlowCPSStep(a)(x, v, tau, delta, 4)
    t_next = 0.5
    x0, x1 = x - tau * v, x + (1 - tau) * v
    torch.testing.assert_close(mean, (1 - t_next) * x0 + t_next * math.cos(math.pi * a / 2) * x1)
    torch.testing.assert_close(std, torch.full_like(x, t_next * math.sin(math.pi * a / 2)))


def test_bounded_std_stays_in_bounds():
    raw = torch.linspace(-50, 50, 101)
    s = bounded_std(raw, 0.08, 0.16)
    assert (s >= 0.08).all() and (s <= 0.16).all()
    assert float(bounded_std(torch.zeros(()), 0.08, 0.16)) == pytest.approx(0.12)


def test_unknown_noise_method_is_a_clear_error():
    with pytest.raises(ValueError, match="noise_method"):
        make_step_rule("flow_magic", 0.5)
