"""Tiny, offline pi0 / pi05 / smolvla builders for the VLA adapter and recipe tests.

Nothing here downloads anything (the tests set ``HF_HUB_OFFLINE=1``):

- pi0 / pi05 hard-code the PaliGemma sizes (SigLIP-So400m, a 257k vocabulary, Gemma 2B / 300M widths)
  in ``get_gemma_config`` and ``PaliGemmaWithExpertModel.__init__``. :func:`tiny_paligemma` swaps those
  two module-level names of ``modeling_pi0`` / ``modeling_pi05`` for tiny versions while it is active,
  so LeRobot's own ``PI0Policy`` / ``PI05Policy`` classes (``__init__``, ``from_pretrained``,
  ``predict_action_chunk``, ...) run unchanged on a model of a few ten thousand parameters. The
  policy type stays ``pi0`` / ``pi05``, so ``get_policy_class(type)`` and ``make_adapter`` are the
  real ones.
- smolvla reads its backbone's config and processor from ``vlm_model_name``: :func:`write_tiny_smolvlm`
  writes a tiny SmolVLM config and processor (with a word-level tokenizer) into a local directory.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from pathlib import Path

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE
from torch import nn

from lerobot_pirl.bench import tiny_vla

IMAGE_KEY = "observation.images.top"
IMAGE_SIZE = 16
PATCH = 4  # 16 / 4 -> 16 image tokens per camera (pi0 / pi05)
STATE_DIM = 5
ACTION_DIM = 3
MAX_STATE_DIM = 8
MAX_ACTION_DIM = 6
CHUNK = 4
N_ACTION_STEPS = 2
TOKENS = 6  # language tokens per sample (tokenizer_max_length)
VOCAB = 64

WORDS = ["pick", "place", "the", "red", "blue", "cube", "bowl", "open", "drawer", "put", "in", "on"]
SPECIAL = tiny_vla.SPECIAL_TOKENS


def features() -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    inputs = {
        IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
        OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
    }
    return inputs, {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


# --------------------------------------------------------------------------- pi0 / pi05
_TINY_DIMS = {
    # The VLM ("gemma_2b" slot) and the expert ("gemma_300m" slot) need the same depth, number of kv heads
    # and head_dim (the expert attends to the VLM's per-layer cache); LeRobot's joint training forward
    # reshapes attention outputs with 8 heads, so num_heads is 8.
    "gemma_2b": dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=4),
    "gemma_300m": dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=4),
}


def _tiny_gemma_config(module, dims: dict[str, dict], variant: str):
    return module.GemmaConfig(**dims[variant])


def _tiny_paligemma_init(
    self,
    vlm_config,
    action_expert_config,
    use_adarms=None,
    precision="float32",
    image_size=IMAGE_SIZE,
    freeze_vision_encoder=False,
    train_expert_only=False,
):
    """Same structure as LeRobot's ``PaliGemmaWithExpertModel`` (a PaliGemma VLM with PiGemma decoder
    and a PiGemma action expert), with a tiny SigLIP, a 64-token vocabulary and float32 configs."""
    from lerobot.policies.pi_gemma import PaliGemmaForConditionalGenerationWithPiGemma, PiGemmaForCausalLM
    from transformers.models.auto import CONFIG_MAPPING

    use_adarms = use_adarms or [False, False]
    nn.Module.__init__(self)
    self.freeze_vision_encoder = freeze_vision_encoder
    self.train_expert_only = train_expert_only

    vlm = CONFIG_MAPPING["paligemma"]()
    vlm._vocab_size = VOCAB
    vlm.image_token_index = VOCAB - 1
    text = vlm.text_config
    text.hidden_size, text.intermediate_size = vlm_config.width, vlm_config.mlp_dim
    text.num_hidden_layers, text.num_attention_heads = vlm_config.depth, vlm_config.num_heads
    text.num_key_value_heads, text.head_dim = vlm_config.num_kv_heads, vlm_config.head_dim
    text.hidden_activation, text.dtype, text.vocab_size = "gelu_pytorch_tanh", "float32", VOCAB
    text.use_adarms = use_adarms[0]
    text.adarms_cond_dim = vlm_config.width if use_adarms[0] else None
    vision = vlm.vision_config
    vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = 16, 32, 1
    vision.num_attention_heads, vision.patch_size, vision.image_size = 2, PATCH, image_size
    # The multi-modal projector maps vision features to the text width.
    vision.projection_dim, vision.projector_hidden_act, vision.dtype = (
        vlm_config.width,
        "gelu_fast",
        "float32",
    )

    expert = CONFIG_MAPPING["gemma"](
        head_dim=action_expert_config.head_dim,
        hidden_size=action_expert_config.width,
        intermediate_size=action_expert_config.mlp_dim,
        num_attention_heads=action_expert_config.num_heads,
        num_hidden_layers=action_expert_config.depth,
        num_key_value_heads=action_expert_config.num_kv_heads,
        vocab_size=VOCAB,
        hidden_activation="gelu_pytorch_tanh",
        dtype="float32",
        use_adarms=use_adarms[1],
        adarms_cond_dim=action_expert_config.width if use_adarms[1] else None,
    )
    self.paligemma = PaliGemmaForConditionalGenerationWithPiGemma(config=vlm)
    self.gemma_expert = PiGemmaForCausalLM(config=expert)
    self.gemma_expert.model.embed_tokens = None
    self.to_bfloat16_for_selected_params(precision)
    self._set_requires_grad()


@functools.cache
def _tiny_paligemma_class(base: type) -> type:
    return type(f"Tiny{base.__name__}", (base,), {"__init__": _tiny_paligemma_init})


@contextlib.contextmanager
def tiny_paligemma(dims: dict[str, dict] | None = None):
    """While active, LeRobot's pi0 / pi05 build tiny PaliGemma backbones (see the module docstring);
    ``dims`` replaces the Gemma sizes of the ``gemma_2b`` (VLM) and ``gemma_300m`` (expert) slots (the
    same keys as ``_TINY_DIMS``), e.g. pi0's real expert geometry at a reduced depth for benchmarks."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    saved = []
    try:
        for module in (modeling_pi0, modeling_pi05):
            saved.append((module, module.get_gemma_config, module.PaliGemmaWithExpertModel))
            module.get_gemma_config = functools.partial(_tiny_gemma_config, module, dims or _TINY_DIMS)
            module.PaliGemmaWithExpertModel = _tiny_paligemma_class(module.PaliGemmaWithExpertModel)
        yield
    finally:
        for module, get_config, cls in reversed(saved):
            module.get_gemma_config = get_config
            module.PaliGemmaWithExpertModel = cls


def tiny_pi_config(policy_type: str, **overrides):
    """A PI0Config / PI05Config for the tiny PaliGemma (float32, CPU, 16x16 images)."""
    from lerobot.configs import PreTrainedConfig

    inputs, outputs = features()
    kwargs = dict(
        device="cpu",
        dtype="float32",
        image_resolution=(IMAGE_SIZE, IMAGE_SIZE),
        chunk_size=CHUNK,
        n_action_steps=N_ACTION_STEPS,
        max_state_dim=MAX_STATE_DIM,
        max_action_dim=MAX_ACTION_DIM,
        num_inference_steps=3,
        tokenizer_max_length=TOKENS,
        input_features=inputs,
        output_features=outputs,
        push_to_hub=False,
    )
    kwargs.update(overrides)
    return PreTrainedConfig.get_choice_class(policy_type)(**kwargs)


# --------------------------------------------------------------------------- smolvla
def word_tokenizer():
    """A word-level fast tokenizer over the tiny vocabulary (pads right with ``<pad>``)."""
    return tiny_vla.word_tokenizer(WORDS)


def write_word_tokenizer(path: Path) -> Path:
    """Save :func:`word_tokenizer` so ``AutoTokenizer.from_pretrained(path)`` loads it offline."""
    word_tokenizer().save_pretrained(path)
    return path


def write_tiny_smolvlm(path: Path) -> Path:
    """A tiny SmolVLM (config + processor, no weights) for ``SmolVLAConfig(vlm_model_name=path,
    load_vlm_weights=False)``: 2 text layers of width 32, a 1-layer SigLIP on 16x16 images with 4x4
    patches and pixel shuffle 2 -> 4 image tokens per camera; the expert is 0.75 x 32 = 24 wide."""
    return tiny_vla.write_tiny_smolvlm(path, WORDS, image_size=IMAGE_SIZE, patch_size=PATCH)


def tiny_smolvla_config(vlm_dir: Path, **overrides):
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    inputs, outputs = features()
    kwargs = dict(
        device="cpu",
        vlm_model_name=str(vlm_dir),
        load_vlm_weights=False,
        num_vlm_layers=2,
        num_expert_layers=-1,
        self_attn_every_n_layers=2,
        resize_imgs_with_padding=(IMAGE_SIZE, IMAGE_SIZE),
        chunk_size=CHUNK,
        n_action_steps=N_ACTION_STEPS,
        max_state_dim=MAX_STATE_DIM,
        max_action_dim=MAX_ACTION_DIM,
        num_steps=3,
        tokenizer_max_length=TOKENS,
        input_features=inputs,
        output_features=outputs,
        push_to_hub=False,
    )
    kwargs.update(overrides)
    return SmolVLAConfig(**kwargs)


# --------------------------------------------------------------------------- batches and checkpoints
def vla_batch(batch_size: int, seed: int = 0, n_pad: int = 2) -> dict[str, torch.Tensor]:
    """A preprocessed observation batch: images in [0, 1], a normalised state, language tokens whose last
    ``n_pad`` positions are padding (attention mask False)."""
    g = torch.Generator().manual_seed(seed)
    batch = {
        IMAGE_KEY: torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        OBS_STATE: torch.randn(batch_size, STATE_DIM, generator=g),
        OBS_LANGUAGE_TOKENS: torch.randint(
            len(SPECIAL), len(SPECIAL) + len(WORDS), (batch_size, TOKENS), generator=g
        ),
        OBS_LANGUAGE_ATTENTION_MASK: torch.ones(batch_size, TOKENS, dtype=torch.bool),
    }
    if n_pad:
        batch[OBS_LANGUAGE_TOKENS][:, -n_pad:] = 0
        batch[OBS_LANGUAGE_ATTENTION_MASK][:, -n_pad:] = False
    return batch


def build_base(policy_type: str, tmp_dir: Path, seed: int = 0, **overrides):
    """A tiny base policy of ``policy_type`` (call pi0 / pi05 inside :func:`tiny_paligemma`)."""
    from lerobot.policies.factory import get_policy_class

    torch.manual_seed(seed)
    if policy_type == "smolvla":
        vlm_dir = Path(tmp_dir) / "tiny_smolvlm"
        if not (vlm_dir / "config.json").is_file():
            write_tiny_smolvlm(vlm_dir)
        cfg = tiny_smolvla_config(vlm_dir, **overrides)
    else:
        cfg = tiny_pi_config(policy_type, **overrides)
    return get_policy_class(policy_type)(cfg)


def unit_stats(
    state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM
) -> dict[str, dict[str, torch.Tensor]]:
    """Normalisation statistics of zero mean, unit std and quantiles -1 / 1 for the state and the action."""

    def unit(dim: int) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.zeros(dim),
            "std": torch.ones(dim),
            "q01": -torch.ones(dim),
            "q99": torch.ones(dim),
        }

    return {OBS_STATE: unit(state_dim), ACTION: unit(action_dim)}


def save_base_checkpoint(
    policy, path: Path, tokenizer_dir: Path | None = None, stats: dict | None = None
) -> Path:
    """Save a tiny base policy with its pre/post processors like an SFT checkpoint (``stats``: the
    normalisation statistics, unit ones by default). The pi0 / pi05 tokenizer step points at a local
    word-level tokenizer instead of the Hub's PaliGemma tokenizer."""
    path = Path(path)
    policy.save_pretrained(path)
    stats = stats if stats is not None else unit_stats()
    pre, post = make_pre_post_processors_offline(policy.config, stats, tokenizer_dir)
    pre.save_pretrained(path)
    post.save_pretrained(path)
    return path


def make_pre_post_processors_offline(config, stats, tokenizer_dir: Path | None):
    """LeRobot's processors for ``config``, with pi0 / pi05's Hub tokenizer replaced by a local one
    (the saved pipeline then records the local tokenizer directory)."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.processor import TokenizerProcessorStep

    if config.type == "smolvla":  # its tokenizer is the (local) vlm_model_name's
        return make_pre_post_processors(config, dataset_stats=stats)
    if tokenizer_dir is None:
        raise ValueError("pi0 / pi05 processors need a local tokenizer directory")
    module = importlib.import_module(f"lerobot.policies.{config.type}.processor_{config.type}")

    def local_tokenizer_step(**kwargs):
        return TokenizerProcessorStep(**{**kwargs, "tokenizer_name": str(tokenizer_dir)})

    saved = module.TokenizerProcessorStep
    module.TokenizerProcessorStep = local_tokenizer_step
    try:
        return make_pre_post_processors(config, dataset_stats=stats)
    finally:
        module.TokenizerProcessorStep = saved
