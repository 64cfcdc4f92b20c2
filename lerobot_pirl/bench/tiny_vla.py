"""A tiny, offline SmolVLA backbone for the CPU benchmark (and the tests).

SmolVLA reads its VLM's config and processor from ``vlm_model_name``; with ``load_vlm_weights=false`` it
builds the VLM from that config with fresh weights. :func:`write_tiny_smolvlm` writes such a directory:
a SmolVLM config of a few layers of width 32-64 and a processor whose tokenizer is word-level over a
given vocabulary (e.g. the words of the MetaWorld instructions), so that vanilla ``lerobot-train`` and
πRL run LeRobot's own ``SmolVLAPolicy`` (images + language + state) on 2 CPU cores with nothing
downloaded. The model is trained from scratch on the demos: it is SmolVLA's architecture and code path,
not its pretrained knowledge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# The tokens SmolVLM's processor and SmolVLA's prompt need, first in the vocabulary (<pad> is id 0).
SPECIAL_TOKENS = [
    "<pad>",
    "<unk>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
]
PROCESSOR_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
}


def instruction_words(texts: Iterable[str]) -> list[str]:
    """The sorted lower-case words (and punctuation marks) of ``texts``, as the tokenizer splits them
    (SmolVLA lower-cases nothing itself, so both spellings of a capitalised word are kept)."""
    words: set[str] = set()
    for text in texts:
        for word in re.findall(r"\w+|[^\w\s]", text):
            words.update((word, word.lower()))
    return sorted(words)


def word_tokenizer(words: Iterable[str], extra_special: dict[str, str] | None = None):
    """A word-level fast tokenizer over ``SPECIAL_TOKENS + words`` (pads right with ``<pad>``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [w for w in words if w not in SPECIAL_TOKENS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {"extra_special_tokens": extra_special} if extra_special else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", **kwargs)


def write_tiny_smolvlm(
    path: str | Path,
    words: Iterable[str],
    image_size: int,
    patch_size: int,
    text_width: int = 32,
    text_layers: int = 2,
    vision_width: int = 16,
) -> Path:
    """Write a tiny SmolVLM (config + processor, no weights) to ``path`` for
    ``SmolVLAConfig(vlm_model_name=path, load_vlm_weights=False)``.

    The vision tower is one SigLIP layer on ``image_size`` images cut in ``patch_size`` patches, pixel
    shuffle 2 (so ``(image_size / patch_size / 2) ** 2`` tokens per camera); the text model has
    ``text_layers`` layers of width ``text_width`` (SmolVLA's expert is 0.75 of that wide)."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    if image_size % (2 * patch_size):
        raise ValueError(f"image_size ({image_size}) must be a multiple of 2 * patch_size ({patch_size})")
    path = Path(path)
    tokenizer = word_tokenizer(words, PROCESSOR_TOKENS)
    SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(image_size // patch_size // 2) ** 2,
    ).save_pretrained(path)
    SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=text_width,
            intermediate_size=2 * text_width,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=text_width // 4,
            dtype="float32",
        ),
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        scale_factor=2,
        image_token_id=SPECIAL_TOKENS.index("<image>"),
    ).save_pretrained(path)
    return path
