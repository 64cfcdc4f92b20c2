"""LoRA through LeRobot's PEFT wrapping: only adapters and heads train, the ratio starts at 1, the run's
--peft.* reaches the policy, and the export is a plain base checkpoint that reproduces the adapted policy."""

from __future__ import annotations

import torch
from lerobot.configs import PreTrainedConfig
from lerobot.configs.default import PeftConfig
from lerobot.policies.factory import get_policy_class

from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import Rollout, RolloutSource
from lerobot_pirl.export import export_checkpoint
from lerobot_pirl.flow.config import FlowSamplerConfig, ValueHeadConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from tests.helpers import ACTION_DIM, metaworld_run_config, obs_batch, tiny_flow_mlp_config
from tests.test_algorithm import make_algo


def _lora_policy(tmp_path, method: str = "flow_noise", peft: PeftConfig | None = None) -> PiRLPolicy:
    torch.manual_seed(0)
    sft = tmp_path / "sft"
    if not sft.exists():
        get_policy_class("flow_mlp")(tiny_flow_mlp_config()).save_pretrained(sft)
    cfg = PiRLConfig(
        device="cpu",
        base_policy_path=str(sft),
        push_to_hub=False,
        train_expert_only=False,
        sampler=FlowSamplerConfig(noise_method=method, sde_steps="all" if method == "flow_noise" else None),
        value_head=ValueHeadConfig(hidden_dims=[16]),
        peft=peft or PeftConfig(r=4, lora_alpha=8),
    )
    return PiRLPolicy(cfg)


def trained_under_lora(name: str) -> bool:
    """Whether a parameter / state key is one LoRA trains: an adapter, or the value / noise head."""
    return ".lora_" in name or name.startswith(("value_head.", "noise_head."))


def _train(policy: PiRLPolicy, updates: int = 3):
    batch = obs_batch(32, seed=1)
    with torch.no_grad():
        sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(2))
    rollout = Rollout.from_sample(batch, sample, torch.randn(32, generator=torch.Generator().manual_seed(3)))
    algo = make_algo(policy, rollout_size=32, minibatch_size=16, actor_lr=1e-2)
    stats = [algo.update(algo.configure_data_iterator(RolloutSource(rollout))) for _ in range(updates)]
    return stats


def test_lora_trains_only_adapters_and_heads_and_starts_at_ratio_one(tmp_path):
    policy = _lora_policy(tmp_path)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all(trained_under_lora(n) for n in trainable), sorted(trainable)
    assert any(n.startswith("noise_head.") for n in trainable) and any(".lora_B." in n for n in trainable)
    stats = _train(policy)
    # Fresh LoRA (B = 0) leaves the policy as the base was: the actor's log-probs are the learner's.
    assert stats[0].extra["ratio_guard_max_dev"] < 1e-5
    after = policy.state_dict()
    for key, value in before.items():
        if not trained_under_lora(key):
            assert torch.equal(after[key], value), f"{key} is frozen under LoRA but moved"
    for prefix in (".lora_B.", "value_head.", "noise_head."):
        assert any(prefix in k and not torch.equal(after[k], before[k]) for k in before), f"no {prefix} moved"


def test_lora_checkpoint_exports_a_plain_base_that_acts_like_the_adapted_policy(tmp_path):
    policy = _lora_policy(tmp_path, method="flow_sde")
    _train(policy)
    policy.save_pretrained(tmp_path / "ckpt")
    # The pi_rl checkpoint reloads with its adapters (config.peft) and the trained weights.
    reloaded = PiRLPolicy.from_pretrained(tmp_path / "ckpt")
    for key, value in policy.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    batch, noise = obs_batch(5, seed=4), torch.randn(5, 4, ACTION_DIM)
    adapted = reloaded.predict_action_chunk(batch, noise=noise)

    from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors

    for proc in make_pi_rl_pre_post_processors(reloaded.config):
        proc.save_pretrained(tmp_path / "ckpt")
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "export")
    exported_cfg = PreTrainedConfig.from_pretrained(out)
    assert exported_cfg.type == "flow_mlp" and not exported_cfg.use_peft
    plain = get_policy_class("flow_mlp").from_pretrained(out)
    assert not any("lora" in k or "base_layer" in k for k in plain.state_dict())
    deployed = plain.predict_action_chunk(batch, noise=noise)[:, : adapted.shape[1]]
    torch.testing.assert_close(deployed, adapted, rtol=1e-5, atol=1e-5)
    # ... and the adapters did change the actions: the comparison is not the SFT base against itself.
    sft = get_policy_class("flow_mlp").from_pretrained(tmp_path / "sft")
    assert not torch.allclose(sft.predict_action_chunk(batch, noise=noise)[:, : adapted.shape[1]], adapted)


def test_run_level_peft_flags_reach_the_policy_config(tmp_path):
    cfg = metaworld_run_config(tmp_path, ["--peft.r=8", "--peft.lora_alpha=16"])
    assert cfg.policy.peft is not None and (cfg.policy.peft.r, cfg.policy.peft.lora_alpha) == (8, 16)
    policy = PiRLPolicy(cfg.policy)
    assert {n for n, p in policy.base.named_parameters() if p.requires_grad} and all(
        ".lora_" in n for n, p in policy.base.named_parameters() if p.requires_grad
    )
