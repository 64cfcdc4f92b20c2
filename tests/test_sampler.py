"""The chain sampler against references: executed-slice log-densities, ODE equivalence, ratio == 1,
gradients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix
from lerobot_pirl.flow.config import FlowSamplerConfig, ValueHeadConfig
from lerobot_pirl.flow.heads import NoiseHead, ValueHead
from lerobot_pirl.flow.sampler import FlowChainSampler
from tests.helpers import obs_batch, tiny_pi_rl

METHODS = [
    ("flow_sde", "one"),
    ("flow_sde", "all"),
    ("flow_noise", "all"),
    ("flow_noise", "one"),
    ("flow_cps", "one"),
    ("flow_cps", "all"),
    ("ode", "one"),
    ("ode", "all"),
]


class PaddedLinearAdapter(FlowAdapter):
    """A test double with padded action dims: v = W x + b(obs), chunk 6 x 5 of which 3 dims are real."""

    def __init__(self):
        super().__init__(nn.Linear(4, 6 * 5))
        self.mix = nn.Linear(5, 5)

    chunk_size = 6
    action_dim = 5
    real_action_dim = 3
    hidden_dim = 5
    prefix_dim = 4
    n_action_steps = 2

    def encode(self, batch: dict[str, Tensor]) -> Prefix:
        return Prefix(features=batch["s"], context=self.policy(batch["s"]).view(-1, 6, 5))

    def velocity(self, prefix: Prefix, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.mix(x) * tau.view(-1, 1, 1) + prefix.context)
        return h * 0.7 - x, h

    def expert_parameters(self) -> Iterator[nn.Parameter]:
        return self.mix.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.policy.parameters()


def _padded_setup(method, sde_steps, level="chunk"):
    torch.manual_seed(0)
    adapter = PaddedLinearAdapter()
    cfg = FlowSamplerConfig(
        noise_method=method, sde_steps=sde_steps, num_denoise_steps=4, logprob_level=level
    )
    sampler = FlowChainSampler(cfg, action_chunk=2, real_action_dim=3)
    noise_head = NoiseHead(5, 5, [8], 0.08, 0.16)
    value_head = ValueHead(4, 5, ValueHeadConfig(hidden_dims=[8]), "prefix")
    return adapter, sampler, noise_head, value_head, {"s": torch.randn(8, 4)}


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise", "flow_cps"])
def test_hybrid_logprob_is_normal_log_prob_over_the_executed_slice_only(method):
    adapter, sampler, nh, vh, batch = _padded_setup(method, "one")
    out = sampler.sample(adapter, vh, nh, batch)
    x, x_next, k = out.chain[:, 0], out.chain[:, 1], out.denoise_index
    tau = torch.tensor(sampler.taus, dtype=torch.float32)[k].double().view(-1, 1, 1)
    v, hidden = adapter.velocity(adapter.encode(batch), x, tau.float().view(-1))
    x, v, delta = x.double(), v.double(), 0.25
    if method == "flow_sde":  # the spec's bracket form, sigma = a sqrt(tau / (1 - tau)), fallback at tau = 1
        sigma = 0.5 * torch.sqrt(tau / (1 - torch.where(tau >= 1, 1 - delta, tau)))
        mean = x - delta * (v + sigma**2 / (2 * tau) * (x + (1 - tau) * v))
        std = (delta**0.5 * sigma).expand_as(x)
    elif method == "flow_noise":
        mean, std = x - delta * v, nh(hidden).double()
    else:  # CPS
        t_next, angle = tau - delta, torch.tensor(torch.pi * 0.5 / 2)
        mean = (1 - t_next) * (x - tau * v) + t_next * torch.cos(angle) * (x + (1 - tau) * v)
        std = (t_next * torch.sin(angle)).expand_as(x)
    std = std.clamp_min(sampler.cfg.std_floor).float()
    mean = mean.float()
    ref = torch.distributions.Normal(mean[:, :2, :3], std[:, :2, :3]).log_prob(x_next[:, :2, :3]).sum((1, 2))
    torch.testing.assert_close(out.logprob, ref, rtol=1e-5, atol=1e-5)

    # The entropy is the mean Normal entropy of the executed elements of the stochastic step.
    ent_ref = torch.distributions.Normal(mean[:, :2, :3], std[:, :2, :3]).entropy().mean((1, 2))
    score = sampler.score(adapter, vh, nh, batch, out.chain, out.denoise_index)
    torch.testing.assert_close(score.entropy, ent_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(score.noise_std, std[:, :2, :3].mean((1, 2)), rtol=1e-5, atol=1e-6)

    # Padded dims and non-executed actions contribute nothing.
    chain = out.chain.clone()
    chain[:, 1, 2:, :] += 100.0
    chain[:, 1, :, 3:] -= 100.0
    rescored = sampler.score(adapter, vh, nh, batch, chain, out.denoise_index)
    torch.testing.assert_close(rescored.logprob, out.logprob, rtol=0, atol=1e-5)


def test_joint_flow_noise_logprob_is_the_exact_chain_likelihood():
    adapter, sampler, nh, vh, batch = _padded_setup("flow_noise", "all")
    out = sampler.sample(adapter, vh, nh, batch)
    prefix = adapter.encode(batch)
    taus = torch.tensor(sampler.taus, dtype=torch.float32)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(out.chain[:, 0, :2, :3]).sum((1, 2))
    for k in range(4):
        x, x_next = out.chain[:, k], out.chain[:, k + 1]
        v, hidden = adapter.velocity(prefix, x, taus[k].expand(8))
        std = nh(hidden)
        ref = ref + torch.distributions.Normal((x - 0.25 * v)[:, :2, :3], std[:, :2, :3]).log_prob(
            x_next[:, :2, :3]
        ).sum((1, 2))
    torch.testing.assert_close(out.logprob, ref, rtol=1e-5, atol=1e-4)
    # The executed actions are the chain's final value.
    assert torch.equal(out.executed, out.chain[:, -1, :2, :3])


def test_token_level_and_mean_reduction_shapes():
    adapter, sampler, nh, vh, batch = _padded_setup("flow_sde", "all", level="token")
    out = sampler.sample(adapter, vh, nh, batch)
    assert out.logprob.shape == (8, 2, 3)
    mean_cfg = FlowSamplerConfig(noise_method="flow_sde", sde_steps="all", logprob_reduction="mean")
    mean_sampler = FlowChainSampler(mean_cfg, 2, 3)
    sum_cfg = FlowSamplerConfig(noise_method="flow_sde", sde_steps="all", logprob_reduction="sum")
    s_sum = FlowChainSampler(sum_cfg, 2, 3).score(adapter, vh, nh, batch, out.chain, out.denoise_index)
    s_mean = mean_sampler.score(adapter, vh, nh, batch, out.chain, out.denoise_index)
    torch.testing.assert_close(s_mean.logprob * 5, s_sum.logprob)  # K + 1 = 5 terms


@pytest.mark.parametrize(("method", "sde_steps"), METHODS)
@pytest.mark.parametrize("level", ["chunk", "token"])
def test_stored_logprob_equals_rescored_logprob(method, sde_steps, level):
    policy = tiny_pi_rl(method, sde_steps, logprob_level=level)
    batch = obs_batch(32, seed=3)
    out = policy.sample_chain(batch)
    score = policy.score_chain(batch, out.chain, out.denoise_index)
    assert out.logprob.dtype == torch.float32
    torch.testing.assert_close(score.logprob, out.logprob, rtol=0, atol=1e-6)
    torch.testing.assert_close(score.value, out.value, rtol=0, atol=1e-6)
    # A different minibatch composition (what the learner does) keeps the ratio at 1.
    idx = torch.tensor([5, 0, 17, 31, 2])
    sub = policy.score_chain({k: v[idx] for k, v in batch.items()}, out.chain[idx], out.denoise_index[idx])
    ratio = torch.exp(sub.logprob - out.logprob[idx])
    assert (ratio - 1).abs().max() < 1e-4


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_per_batch_hybrid_step_is_shared_and_rescored_exactly(method):
    policy = tiny_pi_rl(method, "one", hybrid_step_draw="per_batch", num_denoise_steps=5)
    batch = obs_batch(32, seed=8)
    draws = set()
    for _ in range(12):
        out = policy.sample_chain(batch)
        assert out.denoise_index.unique().numel() == 1  # one k* for the whole call
        draws.add(int(out.denoise_index[0]))
        score = policy.score_chain(batch, out.chain, out.denoise_index)
        torch.testing.assert_close(score.logprob, out.logprob, rtol=0, atol=1e-6)
    assert len(draws) > 1  # but a fresh one every call
    with pytest.raises(ValueError, match="hybrid_step_draw"):
        FlowSamplerConfig(hybrid_step_draw="per_env")


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise", "flow_cps"])
def test_per_sample_hybrid_chain_is_the_ode_off_its_step_bit_for_bit(method):
    """Each sample's chain: LeRobot's Euler steps ``x + dt * v`` before k* and after k* + 1, bit for bit."""
    policy = tiny_pi_rl(method, "one", num_denoise_steps=5)
    batch, noise = obs_batch(32, seed=12), torch.randn(32, 4, 3)
    with torch.no_grad():
        out = policy.sample_chain(batch, noise=noise)
        k_star = out.denoise_index
        assert k_star.unique().numel() > 1  # per-sample draws really differ within the batch
        prefix, dt, x = policy.adapter.encode(batch), -1.0 / 5, noise
        for k in range(5):
            here = (k_star == k).view(-1, 1, 1)
            assert torch.equal(x[here.view(-1)], out.chain[here.view(-1), 0])
            tau = torch.tensor(1.0 + k * dt, dtype=torch.float32).expand(32)
            x = torch.where(here, out.chain[:, 1], x + dt * policy.adapter.velocity(prefix, x, tau)[0])
    assert torch.equal(x, out.actions)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise", "flow_cps"])
@pytest.mark.parametrize("level", ["chunk", "token"])
def test_long_joint_chains_are_rescored_bit_for_bit(method, level):
    """Same batch, same weights: sampling and re-scoring add the same float32 terms in the same order."""
    policy = tiny_pi_rl(method, "all", num_denoise_steps=10, logprob_level=level)
    batch = obs_batch(32, seed=11)
    out = policy.sample_chain(batch)
    assert torch.equal(policy.score_chain(batch, out.chain, out.denoise_index).logprob, out.logprob)


@pytest.mark.parametrize("sde_steps", ["one", "all"])
def test_expert_placed_value_is_the_same_in_sampling_and_rescoring(sde_steps):
    policy = tiny_pi_rl("flow_sde", sde_steps, value_placement="expert")
    batch = obs_batch(16, seed=9)
    out = policy.sample_chain(batch)
    score = policy.score_chain(batch, out.chain, out.denoise_index)
    torch.testing.assert_close(score.value, out.value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("placement", ["prefix", "expert"])
@pytest.mark.parametrize("sde_steps", ["one", "all"])
def test_chain_value_is_the_rescored_value(placement, sde_steps):
    """The learner's value pass (the prefix critic skips the velocity) equals ``score_chain``'s value."""
    policy = tiny_pi_rl("flow_sde", sde_steps, value_placement=placement)
    batch = obs_batch(16, seed=10)
    out = policy.sample_chain(batch)
    with torch.no_grad():
        ref = policy.score_chain(batch, out.chain, out.denoise_index).value
    assert torch.equal(policy.chain_value(batch, out.chain, out.denoise_index), ref)


def test_ode_sampler_reproduces_the_base_policy_bitwise():
    policy = tiny_pi_rl("flow_sde", num_denoise_steps=4)
    batch = obs_batch(16, seed=4)
    noise = torch.randn(16, 4, 3)
    base_chunk = policy.base.predict_action_chunk(batch, noise=noise)
    ode_chunk = policy.sampler.sample_ode(policy.adapter, batch, noise)
    assert torch.equal(ode_chunk, base_chunk)
    assert torch.equal(policy.predict_action_chunk(batch, noise=noise), base_chunk[:, :2])


def test_flow_sde_with_zero_noise_reproduces_the_base_policy_bitwise():
    policy = tiny_pi_rl("flow_sde", sde_steps="all", noise_level=0.0, std_floor=0.0)
    batch = obs_batch(16, seed=5)
    noise = torch.randn(16, 4, 3)
    out = policy.sample_chain(batch, noise=noise)
    assert torch.equal(out.actions, policy.base.predict_action_chunk(batch, noise=noise))


@pytest.mark.parametrize("num_steps", range(1, 11))
@pytest.mark.parametrize("method", ["flow_sde", "flow_noise", "flow_cps"])
def test_no_nan_or_inf_for_any_step_count(num_steps, method):
    if method == "flow_cps" and num_steps == 1:
        with pytest.raises(ValueError, match="num_denoise_steps"):
            tiny_pi_rl(method, sde_steps="all", num_denoise_steps=num_steps)
        return
    policy = tiny_pi_rl(method, sde_steps="all", num_denoise_steps=num_steps)
    batch = obs_batch(8, seed=num_steps)
    out = policy.sample_chain(batch)
    score = policy.score_chain(batch, out.chain, out.denoise_index)
    for t in (out.actions, out.logprob, out.value, score.logprob, score.entropy):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize(("method", "sde_steps"), [("flow_sde", "one"), ("flow_noise", "all")])
def test_rescored_logprob_has_gradients_for_velocity_and_noise_head(method, sde_steps):
    policy = tiny_pi_rl(method, sde_steps)
    batch = obs_batch(16)
    out = policy.sample_chain(batch)
    score = policy.score_chain(batch, out.chain, out.denoise_index)
    score.logprob.sum().backward()
    trunk_grad = policy.base.model.trunk[0][0].weight.grad
    assert trunk_grad is not None and trunk_grad.abs().sum() > 0
    if policy.noise_head is not None:
        assert policy.noise_head.net[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in policy.value_head.parameters())


@pytest.mark.parametrize("placement", ["prefix", "expert"])
def test_detached_critic_input_keeps_value_gradients_out_of_the_base(placement):
    policy = tiny_pi_rl("flow_sde", value_placement=placement, detach_critic_input=True)
    batch = obs_batch(16)
    out = policy.sample_chain(batch)
    policy.score_chain(batch, out.chain, out.denoise_index).value.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.base.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.value_head.parameters())

    attached = tiny_pi_rl("flow_sde", value_placement=placement, detach_critic_input=False)
    out = attached.sample_chain(batch)
    attached.score_chain(batch, out.chain, out.denoise_index).value.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in attached.base.parameters())


def test_train_expert_only_freezes_the_backbone():
    policy = tiny_pi_rl("flow_sde", train_expert_only=True)
    assert all(not p.requires_grad for p in policy.base.model.state_encoder.parameters())
    assert all(p.requires_grad for p in policy.base.model.trunk.parameters())
    groups = policy.param_groups()
    assert set(groups) == {"base", "value_head"}
    assert {id(p) for p in groups["base"]} == {id(p) for p in policy.adapter.expert_parameters()}
