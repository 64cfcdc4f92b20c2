"""Every recipe in ``recipes/`` parses into LeRobot's ``TrainRLServerPipelineConfig``; the VLA recipes also
build (policy, processors, algorithm, one sampled and re-scored chunk) with their base swapped for a tiny
local checkpoint of the same family.

VLA recipes are named ``<env>_<family>_<method>.json`` (family: pi0, pi05, smolvla).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lerobot_pirl  # noqa: F401  (registers pi_rl before parsing)
from lerobot_pirl.runtime.config import resolve_pi_rl_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.json"))
VLA_FAMILIES = ("pi05", "pi0", "smolvla")  # pi05 before pi0: "_pi0_" is not a substring of "_pi05_" anyway
DEFAULT_PLACEMENT = {"pi0": "expert", "pi05": "prefix", "smolvla": "prefix"}


def family_of(recipe: Path) -> str | None:
    """The VLA family a recipe fine-tunes a pretrained checkpoint of; None for the CPU benchmark's recipes
    (``metaworld_<model>_...``: flow_mlp and the tiny from-scratch SmolVLA, checked by the benchmark)."""
    if recipe.stem.startswith(("metaworld_flow_mlp_", "metaworld_smolvla_tiny_")):
        return None
    return next((f for f in VLA_FAMILIES if f"_{f}_" in f"_{recipe.stem}_"), None)


def parse(recipe: Path, *args: str):
    import draccus
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig

    with draccus.config_type("json"):
        cfg = draccus.parse(TrainRLServerPipelineConfig, str(recipe), args=list(args))
    return resolve_pi_rl_config(cfg)


def test_there_are_vla_recipes_for_every_family():
    assert {family_of(r) for r in RECIPES} >= {"pi0", "pi05", "smolvla"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(recipe):
    from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
    from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig

    cfg = parse(recipe)
    assert isinstance(cfg.policy, PiRLConfig) and isinstance(cfg.algorithm, PiRLAlgorithmConfig)
    assert cfg.algorithm.policy_config is cfg.policy
    assert cfg.env is not None and cfg.output_dir is not None
    raw = json.loads(recipe.read_text())
    family = family_of(recipe)
    if family is None:
        return
    # The VLA recipes follow the paper: entropy bonus for Flow-Noise only, the family's critic placement,
    # a frozen VLM, and an executed chunk no longer than the paper's (5, or 10 for LIBERO-Long).
    method = cfg.policy.sampler.noise_method
    assert method in raw["job_name"] and family in raw["job_name"]
    assert cfg.algorithm.entropy_coef == (0.005 if method == "flow_noise" else 0.0)
    assert cfg.policy.value_head.placement == DEFAULT_PLACEMENT[family]
    assert cfg.policy.train_expert_only and raw["policy"]["device"] == "cuda"  # (cpu here without a GPU)
    assert cfg.policy.sampler.action_chunk in (5, 10)


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Tiny base checkpoints (with processors) per family; chunk 10 so recipes' executed chunks fit."""
    pytest.importorskip("transformers")
    from tests.vla_helpers import build_base, save_base_checkpoint, tiny_paligemma, write_word_tokenizer

    root = tmp_path_factory.mktemp("recipe_bases")
    tokenizer = write_word_tokenizer(root / "tokenizer")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family == "smolvla":
            pytest.importorskip("num2words")
        if family not in cache:
            with tiny_paligemma():
                base = build_base(family, root, chunk_size=10, n_action_steps=5)
                cache[family] = save_base_checkpoint(base, root / family, tokenizer)
        return cache[family]

    return get


@pytest.mark.parametrize("recipe", [r for r in RECIPES if family_of(r)], ids=lambda p: p.stem)
def test_vla_recipe_builds_with_a_tiny_base(recipe, tiny_checkpoints):
    from lerobot.utils.constants import OBS_STATE

    from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm
    from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
    from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors
    from tests.vla_helpers import IMAGE_KEY, IMAGE_SIZE, STATE_DIM, tiny_paligemma

    family = family_of(recipe)
    ckpt = tiny_checkpoints(family)
    cfg = parse(recipe, f"--policy.base_policy_path={ckpt}", "--policy.device=cpu")
    with tiny_paligemma():
        policy = PiRLPolicy(cfg.policy)
    assert policy.base.config.type == family
    assert policy.value_placement == DEFAULT_PLACEMENT[family]
    pre, post = make_pi_rl_pre_post_processors(policy.config)
    algorithm = PiRLAlgorithm(policy, cfg.algorithm)
    assert set(algorithm.make_optimizers_and_scheduler()) >= {"base", "value_head"}
    spec = algorithm.transition_spec()
    assert spec.chain_shape[1:] == (policy.adapter.chunk_size, policy.adapter.action_dim)

    # One chunk through the recipe's processors: sample (actor, eval) and re-score (learner, train).
    g = torch.Generator().manual_seed(0)
    raw = {
        IMAGE_KEY: torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        OBS_STATE: torch.rand(2, STATE_DIM, generator=g) * 2 - 1,
        "task": ["pick the red cube", "put the bowl on the drawer"],
    }
    batch = pre(raw)
    sample = policy.eval().sample_chain(batch, generator=g)
    score = policy.train().score_chain(batch, sample.chain, sample.denoise_index)
    assert torch.equal(score.logprob, sample.logprob)
    actions = post(sample.executed)
    assert actions.shape == (2, cfg.policy.sampler.action_chunk, policy.adapter.real_action_dim)


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem.startswith("libero_")], ids=lambda p: p.stem)
def test_libero_recipes_follow_lerobots_libero_eval_protocol(recipe):
    """A LIBERO success from the actor means what one from ``lerobot-eval`` means: LeRobot's own ``libero``
    env and processors, episodes ending at the suite's max steps (no ``episode_length`` override), the
    7-dim relative end-effector action, one task per actor."""
    cfg = parse(recipe)
    assert cfg.env.type == "libero" and cfg.env.task.startswith("libero_")
    assert cfg.env.episode_length is None and cfg.env.control_mode == "relative"
    assert cfg.env.features["action"].shape == (7,) and len(cfg.env.task_ids) == 1
