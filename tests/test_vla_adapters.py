"""pi_rl on LeRobot's own pi0 / pi05 / smolvla through the VLA adapters.

Tiny, offline models (see ``tests/vla_helpers.py``), float32 on CPU. Everything that should be equal is
checked bit for bit: the ODE against LeRobot's sampling, stored against re-scored log-probs, actions
after save / load / export / plain LeRobot load.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class
from lerobot.utils.constants import OBS_LANGUAGE_TOKENS, OBS_STATE

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm, Rollout, RolloutSource
from lerobot_pirl.flow.adapters import make_adapter
from lerobot_pirl.flow.config import FlowSamplerConfig, ValueHeadConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from tests.vla_helpers import (
    ACTION_DIM,
    CHUNK,
    IMAGE_KEY,
    MAX_ACTION_DIM,
    N_ACTION_STEPS,
    build_base,
    tiny_paligemma,
    vla_batch,
)

FAMILIES = ["pi0", "pi05", "smolvla"]
STEPS_FIELD = {"pi0": "num_inference_steps", "pi05": "num_inference_steps", "smolvla": "num_steps"}
BASE_STEPS = 3


@pytest.fixture(autouse=True)
def _tiny_backbones():
    with tiny_paligemma():
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One saved tiny base checkpoint per family (built on first use)."""
    root = tmp_path_factory.mktemp("vla_bases")
    cache: dict[str, str] = {}

    def get(family: str) -> str:
        if family == "smolvla":
            pytest.importorskip("num2words")
        if family not in cache:
            with tiny_paligemma():
                build_base(family, root).save_pretrained(root / family)
            cache[family] = str(root / family)
        return cache[family]

    return get


def make_pirl(path: str, method: str = "flow_sde", *, steps: int = BASE_STEPS, **kw) -> PiRLPolicy:
    value = ValueHeadConfig(hidden_dims=[8], detach_critic_input=kw.pop("detach_critic_input", True))
    sampler = FlowSamplerConfig(noise_method=method, num_denoise_steps=steps, **kw)
    cfg = PiRLConfig(
        device="cpu", base_policy_path=path, sampler=sampler, value_head=value, push_to_hub=False
    )
    return PiRLPolicy(cfg)


def lerobot_sample_actions(base, batch: dict, noise: torch.Tensor) -> torch.Tensor:
    """LeRobot's own sampling of the full padded chunk ``[B, T, max_action_dim]`` for a given noise."""
    tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch["observation.language.attention_mask"]
    if base.config.type == "smolvla":
        images, img_masks = base.prepare_images(batch)
        return base.model.sample_actions(
            images, img_masks, tokens, masks, base.prepare_state(batch), noise=noise
        )
    images, img_masks = base._preprocess_images(batch)
    state = [base.prepare_state(batch)] if base.config.type == "pi0" else []
    return base.model.sample_actions(images, img_masks, tokens, masks, *state, noise=noise)


def plain_chunk(policy, batch: dict, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """A LeRobot policy's public ``predict_action_chunk`` with the noise ``noise`` (pi0 / pi05 take no
    noise argument: they draw it first thing from the global RNG, like our ``sample_noise``)."""
    if policy.config.type == "smolvla":
        return policy.predict_action_chunk(batch, noise=noise.clone())
    torch.manual_seed(seed)
    return policy.predict_action_chunk(batch)


def seeded_noise(seed: int, batch_size: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch_size, CHUNK, MAX_ACTION_DIM)


# --------------------------------------------------------------------------- registration
def test_adapters_register_without_transformers():
    code = (
        "import sys\n"
        "sys.modules['transformers'] = None  # as if the pi / smolvla extras were not installed\n"
        "sys.modules['peft'] = None  # (peft needs transformers: it goes with it)\n"
        "import lerobot_pirl\n"
        "from lerobot_pirl.flow.adapters import supported_base_types\n"
        "assert {'pi0', 'pi05', 'smolvla'} <= set(supported_base_types()), supported_base_types()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- (a) ODE parity
@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_ode_is_lerobots_sampling(checkpoints, family):
    policy = make_pirl(checkpoints(family)).eval()
    batch = vla_batch(3)
    noise = seeded_noise(0, 3)
    ours = policy.sampler.sample_ode(policy.adapter, batch, noise=noise.clone())
    assert ours.dtype == torch.float32 and ours.shape == (3, CHUNK, MAX_ACTION_DIM)
    assert torch.equal(ours, lerobot_sample_actions(policy.base, batch, noise.clone()))

    # Public paths: LeRobot's predict_action_chunk (real dims, full chunk) vs pi_rl's (executed chunk).
    expected = plain_chunk(policy.base, batch, seeded_noise(1, 3), seed=1)
    torch.manual_seed(1)
    deployed = policy.predict_action_chunk(batch)
    assert deployed.shape == (3, N_ACTION_STEPS, ACTION_DIM)
    assert torch.equal(deployed, expected[:, :N_ACTION_STEPS])


# --------------------------------------------------------------------------- (b) ratio == 1
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("method", "sde_steps"), [("flow_sde", "one"), ("flow_noise", "all")])
def test_stored_logprob_equals_rescored(checkpoints, family, method, sde_steps):
    policy = make_pirl(checkpoints(family), method, sde_steps=sde_steps)
    batch = vla_batch(4, seed=1)
    policy.eval()  # the actor samples in eval mode ...
    sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(3))
    policy.train()  # ... the learner re-scores in train mode
    score = policy.score_chain(batch, sample.chain, sample.denoise_index)
    assert sample.logprob.dtype == torch.float32 and score.logprob.dtype == torch.float32
    assert torch.equal(score.logprob, sample.logprob)
    assert torch.equal(score.value, sample.value)
    assert torch.equal(torch.exp(score.logprob - sample.logprob), torch.ones(4))
    # The executed part of the chunk is what the env gets; padded dims never enter the log-prob.
    assert sample.executed.shape == (4, N_ACTION_STEPS, ACTION_DIM)
    if method == "flow_noise":
        assert torch.isfinite(score.entropy).all() and (score.noise_std > 0).all()


# --------------------------------------------------------------------------- (c) gradients
LEROBOT_TRAINABLE_BUT_FROZEN_HERE = {
    "pi0": {"model.paligemma_with_expert.gemma_expert.lm_head.weight"},
    "pi05": {"model.paligemma_with_expert.gemma_expert.lm_head.weight"},
    "smolvla": {"model.state_proj.weight", "model.state_proj.bias"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_only_what_train_expert_only_trains(checkpoints, tmp_path, family):
    policy = make_pirl(checkpoints(family), "flow_noise").train()
    adapter = policy.adapter
    names = {id(p): n for n, p in policy.base.named_parameters()}
    expert = {names[id(p)] for p in adapter.expert_parameters()}
    backbone = {names[id(p)] for p in adapter.backbone_parameters()}
    assert expert and backbone and not expert & backbone and expert | backbone == set(names.values())
    assert {names[id(p)] for p in policy.param_groups()["base"]} == expert

    # The same split as LeRobot's own train_expert_only, up to the documented differences.
    reference = build_base(family, tmp_path, train_expert_only=True)
    lerobot_trainable = {n for n, p in reference.named_parameters() if p.requires_grad}
    assert expert <= lerobot_trainable
    assert lerobot_trainable - expert == LEROBOT_TRAINABLE_BUT_FROZEN_HERE[family]

    batch = vla_batch(3, seed=2)
    sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(0))
    score = policy.score_chain(batch, sample.chain, sample.denoise_index)
    (-score.logprob.mean() - 0.1 * score.entropy.mean()).backward()
    grads = {n: p.grad for n, p in policy.base.named_parameters()}
    assert all(grads[n] is None for n in backbone)
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in expert)
    assert all(p.grad is not None for p in policy.noise_head.parameters())
    assert all(p.grad is None for p in policy.value_head.parameters())

    # Critic loss, critic input detached (default): only the value head learns.
    policy.zero_grad(set_to_none=True)
    policy.score_chain(batch, sample.chain, sample.denoise_index).value.sum().backward()
    assert all(p.grad is None for p in policy.base.parameters())
    assert all(p.grad is not None for p in policy.value_head.parameters())

    # Critic input attached: the critic's gradient reaches the expert only where the value head reads
    # the expert (pi0); a prefix-placed head reads the frozen VLM, which carries no graph.
    attached = make_pirl(checkpoints(family), "flow_noise", detach_critic_input=False).train()
    attached.score_chain(batch, sample.chain, sample.denoise_index).value.sum().backward()
    base_grads = {n: p.grad for n, p in attached.base.named_parameters()}
    assert all(base_grads[n] is None for n in backbone)
    reached_expert = any(base_grads[n] is not None and base_grads[n].abs().sum() > 0 for n in expert)
    assert reached_expert == (attached.value_placement == "expert")


# --------------------------------------------------------------------------- (d) value placement
PLACEMENT = {"pi0": ("expert", 16), "pi05": ("prefix", 32), "smolvla": ("prefix", 64)}


@pytest.mark.parametrize("family", FAMILIES)
def test_value_head_placement(checkpoints, family):
    policy = make_pirl(checkpoints(family)).eval()
    placement, width = PLACEMENT[family]
    assert policy.value_placement == placement
    assert policy.value_head.net[0].in_features == width
    assert width == (policy.adapter.hidden_dim if placement == "expert" else policy.adapter.prefix_dim)

    batch = vla_batch(2, seed=4)

    def value(b, noise_seed=0):
        return policy.sample_chain(b, noise=seeded_noise(noise_seed, 2), generator=torch.Generator()).value

    v = value(batch)
    # Expert placement reads the denoising chain; prefix placement only the observation.
    assert torch.equal(v, value(batch, noise_seed=1)) == (placement == "prefix")
    if placement == "prefix":
        assert torch.equal(v, policy.value_of(batch))
    # Images count; padded language positions (attention mask False) do not.
    assert not torch.equal(v, value({**batch, IMAGE_KEY: batch[IMAGE_KEY].flip(-1)}))
    pad_changed = {**batch, OBS_LANGUAGE_TOKENS: batch[OBS_LANGUAGE_TOKENS].clone()}
    pad_changed[OBS_LANGUAGE_TOKENS][:, -1] = 7
    assert torch.equal(v, value(pad_changed))
    # The state vector: pi0 (expert token) and smolvla (prefix token) read it, pi05 has it in the prompt.
    state_changed = {**batch, OBS_STATE: batch[OBS_STATE] + 1.0}
    assert torch.equal(v, value(state_changed)) == (family == "pi05")
    if family == "smolvla":
        # [image+language mean | state token]: image and language tokens do not attend to the state.
        a, b = policy.adapter.encode(batch).features, policy.adapter.encode(state_changed).features
        assert torch.equal(a[:, :32], b[:, :32]) and not torch.equal(a[:, 32:], b[:, 32:])


# --------------------------------------------------------------------------- (e) save / load / export
@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_export_and_plain_lerobot_load(checkpoints, tmp_path, family):
    # Train with K=2 and an executed chunk of 1 (the base checkpoint has K=3, n_action_steps=2).
    policy = make_pirl(checkpoints(family), "flow_noise", steps=2, action_chunk=1)
    with torch.no_grad():  # stands in for fine-tuning
        policy.base.model.action_out_proj.bias.add_(0.05)
    policy.save_pretrained(tmp_path / "pi_rl")
    loaded = PiRLPolicy.from_pretrained(tmp_path / "pi_rl")
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    batch = vla_batch(2, seed=5)
    noise = seeded_noise(2, 2)
    deployed = policy.eval().predict_action_chunk(batch, noise=noise.clone())
    assert deployed.shape == (2, 1, ACTION_DIM)
    assert torch.equal(loaded.predict_action_chunk(batch, noise=noise.clone()), deployed)

    loaded.export_base(tmp_path / "export")
    exported = PreTrainedConfig.from_pretrained(tmp_path / "export")
    assert exported.type == family
    assert getattr(exported, STEPS_FIELD[family]) == 2 and exported.n_action_steps == 1
    assert getattr(loaded.base.config, STEPS_FIELD[family]) == BASE_STEPS  # in-memory config untouched

    plain = get_policy_class(family).from_pretrained(tmp_path / "export")
    assert type(plain) is get_policy_class(family)
    assert torch.equal(plain_chunk(plain, batch, noise, seed=2)[:, :1], deployed)
    plain.reset()
    torch.manual_seed(2)
    first = (
        plain.select_action(batch, noise=noise.clone()) if family == "smolvla" else plain.select_action(batch)
    )
    assert torch.equal(first, deployed[:, 0])


# --------------------------------------------------------------------------- refusals, checkpointing
@pytest.mark.parametrize(
    ("family", "field", "value"),
    [
        ("pi0", "n_obs_steps", 2),
        ("pi05", "rtc_config", "enabled"),
        ("smolvla", "adapt_to_pi_aloha", True),
        ("smolvla", "use_cache", False),
        ("smolvla", "rtc_config", "enabled"),
    ],
)
def test_unsupported_settings_are_refused_by_name(tmp_path, family, field, value):
    if family == "smolvla":
        pytest.importorskip("num2words")
    base = build_base(family, tmp_path)
    if value == "enabled":
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        value = RTCConfig(enabled=True)
    setattr(base.config, field, value)
    with pytest.raises(ValueError, match=field):
        make_adapter(base)


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_bfloat16_base_keeps_parity_and_float32_logprobs(tmp_path, family):
    build_base(family, tmp_path, dtype="bfloat16").save_pretrained(tmp_path / "bf16")
    policy = make_pirl(str(tmp_path / "bf16"), "flow_noise").eval()
    assert policy.base.model.paligemma_with_expert.gemma_expert.model.layers[0].mlp.up_proj.weight.dtype == (
        torch.bfloat16
    )
    batch = vla_batch(2)
    noise = seeded_noise(0, 2)
    ours = policy.sampler.sample_ode(policy.adapter, batch, noise=noise.clone())
    assert ours.dtype == torch.float32
    assert torch.equal(ours, lerobot_sample_actions(policy.base, batch, noise.clone()))
    sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(0))
    score = policy.train().score_chain(batch, sample.chain, sample.denoise_index)
    assert sample.logprob.dtype == score.logprob.dtype == torch.float32
    assert torch.equal(score.logprob, sample.logprob)


def test_pi0_gradient_checkpointing_flag_keeps_the_cache_and_the_ratio(checkpoints, tmp_path):
    base = build_base("pi0", tmp_path, gradient_checkpointing=True)
    base.save_pretrained(tmp_path / "gc")
    policy = make_pirl(str(tmp_path / "gc"), "flow_noise").train()
    assert policy.base.model.gradient_checkpointing_enabled
    batch = vla_batch(2)
    sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(0))
    score = policy.score_chain(batch, sample.chain, sample.denoise_index)
    assert torch.equal(score.logprob, sample.logprob)
    score.logprob.sum().backward()
    assert policy.base.model.action_in_proj.weight.grad is not None
    # The frozen VLM ran in eval mode for the prefix only: the modules' own modes are restored.
    assert policy.base.model.paligemma_with_expert.paligemma.training


# --------------------------------------------------------------------------- PPO updates
def run_ppo_updates(path: str, device: str, updates: int = 3) -> list[dict]:
    """A few PiRLAlgorithm updates on rollouts the policy itself sampled (random advantages)."""
    cfg = PiRLConfig(
        device=device,
        base_policy_path=path,
        sampler=FlowSamplerConfig(noise_method="flow_sde", num_denoise_steps=3),
        value_head=ValueHeadConfig(hidden_dims=[8]),
        push_to_hub=False,
    )
    policy = PiRLPolicy(cfg)
    algo = PiRLAlgorithm(
        policy,
        PiRLAlgorithmConfig(
            policy_config=cfg,
            rollout_size=8,
            minibatch_size=4,
            update_epochs=2,
            actor_lr=1e-3,
            critic_lr=1e-3,
        ),
    )
    algo.make_optimizers_and_scheduler()
    expert_before = [p.detach().clone() for p in policy.adapter.expert_parameters()]
    backbone_before = [p.detach().clone() for p in policy.adapter.backbone_parameters()]
    g = torch.Generator(device=device).manual_seed(0)
    stats = []
    for u in range(updates):
        batch = {k: v.to(device) for k, v in vla_batch(8, seed=10 + u).items()}
        with torch.no_grad():
            out = policy.eval().sample_chain(batch, generator=g)
        adv = torch.randn(8, generator=torch.Generator().manual_seed(u)).to(device)
        rollout = Rollout.from_sample(batch, out, adv)
        policy.train()
        stats.append(algo.update(algo.configure_data_iterator(RolloutSource(rollout))).to_log_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(backbone_before, policy.adapter.backbone_parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(expert_before, policy.adapter.expert_parameters(), strict=True)
    )
    return stats


def test_ppo_updates_on_tiny_pi0_cpu(checkpoints):
    stats = run_ppo_updates(checkpoints("pi0"), "cpu", updates=2)
    assert all(s["ratio_guard_max_dev"] == 0.0 for s in stats)
    assert all(torch.isfinite(torch.tensor([s["actor_loss"], s["value_loss"]])).all() for s in stats)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ppo_updates_on_tiny_pi0_cuda(checkpoints):
    stats = run_ppo_updates(checkpoints("pi0"), "cuda", updates=3)
    # CUDA kernels need not be bitwise reproducible between the sampling and the update batch shapes.
    assert all(s["ratio_guard_max_dev"] < 1e-3 for s in stats)
    assert all(torch.isfinite(torch.tensor([s["actor_loss"], s["value_loss"]])).all() for s in stats)
