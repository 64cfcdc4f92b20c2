"""flow_mlp and pi_rl as LeRobot policies: save / load / export, errors, lerobot-train."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors

from lerobot_pirl.datasets import state_action_features, write_dataset
from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from tests.helpers import ACTION_DIM, STATE_DIM, obs_batch, tiny_flow_mlp_config, tiny_pi_rl


def test_flow_mlp_with_image_trains_and_samples():
    cfg = tiny_flow_mlp_config(image=True)
    policy = get_policy_class("flow_mlp")(cfg)
    batch = obs_batch(8, image=True)
    batch["action"] = torch.randn(8, 4, ACTION_DIM)
    loss, info = policy.forward(batch)
    loss.backward()
    assert torch.isfinite(loss) and info["loss"] > 0
    assert policy.model.image_encoder.proj.weight.grad.abs().sum() > 0
    assert policy.predict_action_chunk(obs_batch(2, image=True)).shape == (2, 4, ACTION_DIM)
    assert policy.select_action(obs_batch(2, image=True)).shape == (2, ACTION_DIM)


@pytest.mark.parametrize("method", ["flow_sde", "flow_noise"])
def test_pi_rl_save_load_gives_the_same_actions(tmp_path, method):
    policy = tiny_pi_rl(method)
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = PiRLPolicy.from_pretrained(tmp_path / "ckpt")
    batch = obs_batch(4)
    noise = torch.randn(4, 4, ACTION_DIM)
    assert torch.equal(
        policy.predict_action_chunk(batch, noise=noise), loaded.predict_action_chunk(batch, noise=noise)
    )
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, b = policy.sample_chain(batch, generator=g1), loaded.sample_chain(batch, generator=g2)
    assert torch.equal(a.chain, b.chain) and torch.equal(a.logprob, b.logprob)
    for key, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_noise_head_widths_follow_the_config_and_survive_a_checkpoint(tmp_path):
    """RLinf's openpi head (128, 64) by default; explicit widths are built as given and rebuilt from a checkpoint."""
    from lerobot_pirl.flow.config import NoiseHeadConfig

    def widths(policy):
        return [(m.in_features, m.out_features) for m in policy.noise_head.linears]

    token = tiny_flow_mlp_config().token_dim
    policy = tiny_pi_rl("flow_noise")
    assert widths(policy) == [(token, 128), (128, 64), (64, ACTION_DIM)]

    policy.config.noise_head = NoiseHeadConfig(hidden_dims=[16, 8])
    explicit = PiRLPolicy(policy.config)
    assert widths(explicit) == [(token, 16), (16, 8), (8, ACTION_DIM)]
    explicit.save_pretrained(tmp_path / "ckpt")
    assert widths(PiRLPolicy.from_pretrained(tmp_path / "ckpt")) == widths(explicit)
    with pytest.raises(ValueError, match=r"noise_head\.hidden_dims"):
        NoiseHeadConfig(hidden_dims=[0])


def test_pi_rl_loads_its_base_from_a_local_checkpoint_and_exports_a_plain_one(tmp_path):
    base = get_policy_class("flow_mlp")(tiny_flow_mlp_config())
    base.save_pretrained(tmp_path / "sft")
    cfg = PiRLConfig(
        device="cpu",
        base_policy_path=str(tmp_path / "sft"),
        push_to_hub=False,
        sampler=FlowSamplerConfig(num_denoise_steps=3, action_chunk=3),
    )
    policy = PiRLPolicy(cfg)
    for key, value in base.state_dict().items():
        assert torch.equal(policy.base.state_dict()[key], value)
    assert policy.config.input_features == base.config.input_features

    # Fine-tune a little so the export is not the SFT weights.
    with torch.no_grad():
        policy.base.model.token_out.bias.add_(0.1)
    policy.export_base(tmp_path / "export")
    exported_cfg = PreTrainedConfig.from_pretrained(tmp_path / "export")
    assert exported_cfg.type == "flow_mlp"
    assert exported_cfg.num_inference_steps == 3 and exported_cfg.n_action_steps == 3
    plain = get_policy_class(exported_cfg.type).from_pretrained(tmp_path / "export")
    batch = obs_batch(4)
    noise = torch.randn(4, 4, ACTION_DIM)
    deployed = policy.predict_action_chunk(batch, noise=noise)
    assert torch.equal(plain.predict_action_chunk(batch, noise=noise)[:, :3], deployed)
    # The base's own config in memory is unchanged by the export.
    assert policy.base.config.num_inference_steps == 4


def test_pi_rl_processors_come_from_the_base_checkpoint(tmp_path):
    base_cfg = tiny_flow_mlp_config()
    base = get_policy_class("flow_mlp")(base_cfg)
    stats = {
        "observation.state": {"mean": torch.full((STATE_DIM,), 2.0), "std": torch.full((STATE_DIM,), 4.0)},
        "action": {"mean": torch.zeros(ACTION_DIM), "std": torch.full((ACTION_DIM,), 0.5)},
    }
    pre, post = make_pre_post_processors(base_cfg, dataset_stats=stats)
    base.save_pretrained(tmp_path / "sft")
    pre.save_pretrained(tmp_path / "sft")
    post.save_pretrained(tmp_path / "sft")
    policy = PiRLPolicy(PiRLConfig(device="cpu", base_policy_path=str(tmp_path / "sft"), push_to_hub=False))
    pre2, post2 = make_pre_post_processors(policy.config)
    out = pre2({"observation.state": torch.full((STATE_DIM,), 6.0)})
    torch.testing.assert_close(out["observation.state"], torch.ones(1, STATE_DIM))
    torch.testing.assert_close(post2(torch.ones(1, ACTION_DIM)), torch.full((1, ACTION_DIM), 0.5))


def test_bad_inputs_are_clear_value_errors(tmp_path):
    with pytest.raises(ValueError, match="noise_method"):
        FlowSamplerConfig(noise_method="flow_magic")
    with pytest.raises(ValueError, match="noise_std_min"):
        FlowSamplerConfig(noise_std_min=0.2, noise_std_max=0.1)
    with pytest.raises(ValueError, match="noise_std_min"):
        FlowSamplerConfig(noise_std_min=0.0)
    with pytest.raises(ValueError, match="action_chunk"):
        tiny_pi_rl(action_chunk=5)  # chunk size is 4
    with pytest.raises(ValueError, match="base"):
        PiRLConfig(device="cpu")
    with pytest.raises(ValueError, match="learner_resend_s"):
        dataclasses.replace(tiny_pi_rl().config, learner_resend_s=0.0)
    # A base checkpoint that is not a flow-matching policy.
    from lerobot.policies.act.configuration_act import ACTConfig

    ACTConfig(device="cpu", push_to_hub=False)._save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"base_policy_path.*'act'.*not a flow-matching policy"):
        PiRLPolicy(PiRLConfig(device="cpu", base_policy_path=str(tmp_path), push_to_hub=False))
    with pytest.raises(ValueError, match="base_policy_path"):
        PiRLPolicy(PiRLConfig(device="cpu", base_policy_path=str(tmp_path / "nothing"), push_to_hub=False))


def _tiny_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(3):
        s = rng.normal(size=(12, STATE_DIM)).astype(np.float32)
        episodes.append(
            [{"observation.state": s[t], "action": np.tanh(s[t, :ACTION_DIM])} for t in range(12)]
        )
    write_dataset(root, "local/tiny", 10, state_action_features(STATE_DIM, ACTION_DIM), episodes, "reach")


def test_vanilla_lerobot_train_trains_flow_mlp(tmp_path):
    _tiny_dataset(tmp_path / "data")
    out = tmp_path / "train"
    lerobot_train = Path(sys.executable).parent / "lerobot-train"
    cmd = [
        str(lerobot_train),
        "--policy.discover_packages_path=lerobot_pirl",
        "--policy.type=flow_mlp",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--policy.chunk_size=4",
        "--policy.n_action_steps=2",
        "--policy.hidden_dim=32",
        "--dataset.repo_id=local/tiny",
        f"--dataset.root={tmp_path / 'data'}",
        f"--output_dir={out}",
        "--steps=6",
        "--batch_size=4",
        "--save_freq=6",
        "--log_freq=2",
        "--num_workers=0",
        "--wandb.enable=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "policy_preprocessor.json").is_file()
    # The checkpoint is a pi_rl base.
    policy = PiRLPolicy(PiRLConfig(device="cpu", base_policy_path=str(ckpt), push_to_hub=False))
    assert policy.base.config.chunk_size == 4


def test_flow_mlp_processors_floor_tiny_dataset_std():
    cfg = tiny_flow_mlp_config()
    stats = {
        "observation.state": {
            "mean": torch.zeros(STATE_DIM),
            "std": torch.tensor([0.0, 1e-5, 0.5, 2.0, 0.0, 0.0]),
        },
        "action": {"mean": torch.zeros(ACTION_DIM), "std": torch.tensor([0.0, 0.3, 1.0])},
    }
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    out = pre({"observation.state": torch.ones(STATE_DIM)})["observation.state"]
    # 1 / max(std, 0.01): constant dims stay finite instead of exploding to 1e8.
    torch.testing.assert_close(out, torch.tensor([[100.0, 100.0, 2.0, 0.5, 100.0, 100.0]]))
    torch.testing.assert_close(post(torch.ones(1, ACTION_DIM)), torch.tensor([[0.01, 0.3, 1.0]]))
    cfg0 = tiny_flow_mlp_config(normalization_std_floor=0.0)
    pre0, _ = make_pre_post_processors(cfg0, dataset_stats=stats)
    assert pre0({"observation.state": torch.ones(STATE_DIM)})["observation.state"][0, 0] > 1e7
