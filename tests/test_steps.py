"""Exact tests of the step rules and Gaussian log-densities."""

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
    gaussian_log_peak,
    gaussian_log_prob,
    make_step_rule,
    standard_normal_log_prob,
    step_mean,
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


def test_gaussian_log_prob_broadcasts_a_per_sample_std_and_the_prior():
    x, mean = _xv(2)
    std = torch.rand(x.shape[0], 1, 1, dtype=torch.float64) + 0.05
    expected = torch.distributions.Normal(mean.float(), std.float().expand_as(x)).log_prob(x.float())
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected, rtol=1e-6, atol=1e-6)
    peak = gaussian_log_peak(std)  # precomputed for a fixed schedule: the same float32 values
    assert torch.equal(gaussian_log_prob(x, mean, std, peak), gaussian_log_prob(x, mean, std))
    torch.testing.assert_close(
        peak.float(), torch.distributions.Normal(0.0, std.float()).log_prob(torch.zeros(()))
    )
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(x.float())
    torch.testing.assert_close(standard_normal_log_prob(x), prior, rtol=1e-6, atol=1e-6)
    unit_peak = gaussian_log_peak(torch.ones(()))  # what a caller keeps: the same values
    assert torch.equal(standard_normal_log_prob(x, unit_peak), standard_normal_log_prob(x))


def test_gaussian_entropy_matches_torch_normal():
    std = torch.rand(10) + 0.01
    torch.testing.assert_close(gaussian_entropy(std), torch.distributions.Normal(0.0, std).entropy())


def _mean_std(rule, x, v, tau, delta, num_steps):
    c = rule.coefficients(tau, delta, num_steps)
    return step_mean(x, v, c.a_x, c.a_v), c.std


@pytest.mark.parametrize("num_steps", range(1, 11))
def test_flow_sde_mean_equals_both_algebraic_forms(num_steps):
    x, v = _xv(num_steps)
    a, delta = 0.5, 1.0 / num_steps
    rule = FlowSDEStep(a)
    for k in range(num_steps):
        tau = 1.0 - k / num_steps
        mean, std = _mean_std(rule, x, v, tau, delta, num_steps)
        sigma = flow_sde_sigma(tau, a, num_steps)
        mixture = flow_sde_mean_mixture(x, v, tau, delta, sigma)
        bracket = x - delta * (v + sigma**2 / (2 * tau) * (x + (1 - tau) * v))
        torch.testing.assert_close(mean, mixture, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(mean, bracket, rtol=1e-12, atol=1e-12)
        assert std == pytest.approx(math.sqrt(delta) * sigma, rel=1e-15)
        assert torch.isfinite(mean).all() and math.isfinite(std) and std > 0


@pytest.mark.parametrize("num_steps", [1, 2, 4, 10])
def test_flow_sde_sigma_at_tau_one_uses_fallback(num_steps):
    a = 0.7
    # tau = 1 - 1/K in the denominator: sigma = a * sqrt(1 / (1/K)) = a * sqrt(K)
    assert flow_sde_sigma(1.0, a, num_steps) == pytest.approx(a * math.sqrt(num_steps))
    assert flow_sde_sigma(0.25, a, num_steps) == pytest.approx(a * math.sqrt(0.25 / 0.75))


@pytest.mark.parametrize("num_steps", [1, 3, 4, 7])
def test_flow_sde_with_zero_noise_is_the_ode_step_bitwise(num_steps):
    x, v = _xv(3)
    x, v = x.float(), v.float()
    delta = 1.0 / num_steps
    for k in range(num_steps):
        tau = 1.0 - k / num_steps
        c = FlowSDEStep(0.0).coefficients(tau, delta, num_steps)
        assert c == ODEStep().coefficients(tau, delta, num_steps)
        assert c.std == 0.0
        # LeRobot's Euler update, x + dt * v with dt = -1/K.
        assert torch.equal(step_mean(x, v, c.a_x, c.a_v), x + (-1.0 / num_steps) * v)


def test_step_mean_with_tensor_coefficients_is_bitwise_the_scalar_form():
    """Re-scoring gathers per-sample coefficients; sampling uses Python floats: same bits."""
    x, v = _xv(6)
    x, v = x.float(), v.float()
    c = FlowSDEStep(0.5).coefficients(0.75, 0.25, 4)
    a_x, a_v = float(torch.tensor(c.a_x)), float(torch.tensor(c.a_v))  # float32-exact, as the sampler
    per_sample = torch.tensor([a_x, a_v]).expand(x.shape[0], 2)
    tensor_form = step_mean(x, v, per_sample[:, 0].view(-1, 1, 1), per_sample[:, 1].view(-1, 1, 1))
    assert torch.equal(step_mean(x, v, a_x, a_v), tensor_form)


def test_flow_noise_uses_the_ode_mean_and_a_learned_std():
    x, v = _xv(4)
    mean, std = _mean_std(FlowNoiseStep(), x, v, 0.5, 0.25, 4)
    torch.testing.assert_close(mean, x - 0.25 * v)
    assert std is None and FlowNoiseStep.learned_std


def test_cps_step_formula():
    x, v = _xv(5)
    a, tau, delta = 0.4, 0.75, 0.25
    mean, std = _mean_std(FlowCPSStep(a), x, v, tau, delta, 4)
    t_next = 0.5
    x0, x1 = x - tau * v, x + (1 - tau) * v
    torch.testing.assert_close(mean, (1 - t_next) * x0 + t_next * math.cos(math.pi * a / 2) * x1)
    assert std == pytest.approx(t_next * math.sin(math.pi * a / 2))


def test_bounded_std_stays_in_bounds():
    raw = torch.linspace(-50, 50, 101)
    s = bounded_std(raw, 0.08, 0.16)
    assert (s >= 0.08).all() and (s <= 0.16).all()
    assert float(bounded_std(torch.zeros(()), 0.08, 0.16)) == pytest.approx(0.12)


def test_unknown_noise_method_is_a_clear_error():
    with pytest.raises(ValueError, match="noise_method"):
        make_step_rule("flow_magic", 0.5)
