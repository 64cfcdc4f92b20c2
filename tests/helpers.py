"""Small builders shared by the tests: tiny flow_mlp / pi_rl policies with local features."""

from __future__ import annotations

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_pirl.flow.config import FlowSamplerConfig, ValueHeadConfig
from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy

STATE_DIM = 6
ACTION_DIM = 3


def tiny_flow_mlp_config(
    chunk_size: int = 4,
    n_action_steps: int = 2,
    image: bool = False,
    state_dim: int = STATE_DIM,
    action_dim: int = ACTION_DIM,
    **kw,
) -> FlowMLPConfig:
    inputs = {OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))}
    if image:
        inputs["observation.image"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 16, 16))
    sizes = dict(
        num_inference_steps=4, obs_dim=16, hidden_dim=32, num_layers=2, token_dim=8, time_embed_dim=8
    )
    return FlowMLPConfig(
        device="cpu",
        chunk_size=chunk_size,
        n_action_steps=n_action_steps,
        image_channels=[4, 8],
        input_features=inputs,
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        push_to_hub=False,
        **{**sizes, **kw},
    )


def tiny_pi_rl(
    noise_method: str = "flow_sde",
    sde_steps: str | None = None,
    seed: int = 0,
    value_placement: str = "prefix",
    detach_critic_input: bool = True,
    train_expert_only: bool = False,
    **sampler_kw,
) -> PiRLPolicy:
    torch.manual_seed(seed)
    cfg = PiRLConfig(
        device="cpu",
        base=tiny_flow_mlp_config(),
        sampler=FlowSamplerConfig(noise_method=noise_method, sde_steps=sde_steps, **sampler_kw),
        value_head=ValueHeadConfig(
            placement=value_placement, hidden_dims=[16], detach_critic_input=detach_critic_input
        ),
        train_expert_only=train_expert_only,
        push_to_hub=False,
    )
    return PiRLPolicy(cfg)


def obs_batch(
    batch_size: int, seed: int = 0, image: bool = False, state_dim: int = STATE_DIM
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {OBS_STATE: torch.randn(batch_size, state_dim, generator=g)}
    if image:
        batch["observation.image"] = torch.rand(batch_size, 3, 16, 16, generator=g)
    return batch


def synthetic_transitions(
    policy: PiRLPolicy,
    n_envs: int = 4,
    n_chunks: int = 6,
    version: int = 0,
    actor_id: int = 1,
    seed: int = 0,
    episode_len: int = 4,
    start_chunk: int = 0,
    state_dim: int = STATE_DIM,
) -> list:
    """Transitions of ``n_envs`` random streams sampled by ``policy`` (rewards are random; every
    ``episode_len`` chunks an episode ends, alternating termination and truncation)."""
    from lerobot_pirl.runtime.transitions import chunk_transitions

    g = torch.Generator().manual_seed(seed)
    out = []
    state = obs_batch(n_envs, seed=seed, state_dim=state_dim)
    for c in range(start_chunk, start_chunk + n_chunks):
        sample = policy.sample_chain(state, generator=g)
        next_state = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in state.items()}
        ends = (c + 1) % episode_len == 0
        terminated = torch.full((n_envs,), ends and (c // episode_len) % 2 == 0)
        truncated = torch.full((n_envs,), ends) & ~terminated
        out += chunk_transitions(
            state,
            next_state,
            sample.executed,
            torch.randn(n_envs, generator=g),
            terminated,
            truncated,
            sample,
            policy_version=version,
            actor_id=actor_id,
            env_ids=torch.arange(n_envs),
            episode_ids=torch.full((n_envs,), c // episode_len),
            chunk_indices=torch.full((n_envs,), c),
            episode_chunks=torch.full((n_envs,), c % episode_len),
            success=terminated.float(),
        )
        state = obs_batch(n_envs, seed=seed + 1000 + c, state_dim=state_dim) if ends else next_state
    return out


def write_metaworld_base(path, chunk_size: int = 6, n_action_steps: int = 3, state_dim: int = 39) -> None:
    """A randomly initialised flow_mlp for pirl_metaworld (39-dim state, or 39 + the task one-hot of a
    multi-task mix; 4-dim action) with processors, saved like a lerobot-train checkpoint (stands in for an
    SFT policy in runtime tests)."""
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = tiny_flow_mlp_config(
        chunk_size,
        n_action_steps,
        state_dim=state_dim,
        action_dim=4,
        num_inference_steps=10,
        obs_dim=32,
        hidden_dim=64,
    )
    policy = get_policy_class("flow_mlp")(cfg)
    stats = {
        OBS_STATE: {"mean": torch.zeros(state_dim), "std": torch.ones(state_dim)},
        ACTION: {"mean": torch.zeros(4), "std": torch.full((4,), 0.5)},
    }
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    for obj in (policy, pre, post):
        obj.save_pretrained(path)


def parse_run_config(tmp_path, cfg: dict, args: list[str] = ()):
    """``cfg`` written as a recipe JSON and parsed like one (``args``: command-line overrides), resolved."""
    import json

    import draccus
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig

    from lerobot_pirl.runtime.config import resolve_pi_rl_config

    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with draccus.config_type("json"):
        parsed = draccus.parse(TrainRLServerPipelineConfig, str(tmp_path / "cfg.json"), args=list(args))
    return resolve_pi_rl_config(parsed)


def metaworld_run_config(tmp_path, args: list[str] = (), policy: dict | None = None, **sections):
    """A resolved ``TrainRLServerPipelineConfig`` of a pi_rl run on pirl_metaworld with a tiny flow_mlp base
    written to ``tmp_path / "base"``, parsed from JSON like a recipe (``args``: command-line overrides;
    ``policy`` / ``sections``: extra fields of the policy / other sections)."""
    write_metaworld_base(tmp_path / "base")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "policy": {
            "type": "pi_rl",
            "base_policy_path": str(tmp_path / "base"),
            "device": "cpu",
            "push_to_hub": False,
            **(policy or {}),
        },
        "algorithm": {"type": "pi_rl", "rollout_size": 64, "minibatch_size": 32},
        "env": {"type": "pirl_metaworld", "num_envs": 2},
        **sections,
    }
    return parse_run_config(tmp_path, cfg, args)
