"""Adapter of LeRobot's ``pi0`` (PaliGemma VLM + Gemma action expert).

- ``encode``: the prefix half of ``PI0Pytorch.sample_actions`` — LeRobot's ``_preprocess_images`` (resize
  with pad, [-1, 1], missing cameras masked), ``embed_prefix`` (SigLIP + language embeddings), the
  eager-attention prefix forward of ``paligemma_with_expert`` with ``use_cache=True`` — plus the padded
  state (``prepare_state``), which pi0 feeds to the expert as a suffix token. The cache is computed once
  per observation and re-used by every velocity call (``denoise_step`` clones it internally).
- ``velocity``: ``PI0Pytorch.denoise_step(state, prefix_pad_masks, past_key_values, x, tau)``; the hidden
  is the expert output of the ``chunk_size`` action tokens (state token dropped) after the final norm.
  The deterministic ODE through this adapter reproduces ``sample_actions`` for the same noise bit for bit.
- Shapes: the chain runs in the padded ``max_action_dim`` space on all ``chunk_size`` actions; only the
  real action dims (``output_features['action']``) of the executed ``action_chunk`` enter log-probs.
- Value head: ``"expert"`` by default (πRL's pi0 placement): the action-expert output averaged over the
  action tokens and over the denoising steps. ``Prefix.features`` (for ``placement="prefix"``) is the
  mean VLM output over the real image and language tokens.
- Parameters: the expert is ``gemma_expert`` (without its unused ``lm_head``) and the projections
  ``action_in_proj``, ``action_out_proj``, ``state_proj``, ``action_time_mlp_in/out``; the backbone is the
  PaliGemma VLM — exactly what LeRobot's ``train_expert_only`` freezes (plus the unused ``lm_head``).
- Gradient checkpointing: the base config's ``gradient_checkpointing=true`` is accepted. With a frozen
  VLM the prefix runs in eval mode without autograd, so the flag cannot turn the KV cache off. LeRobot
  checkpoints only its joint training forward (used by the demo regulariser ``PiRLPolicy.forward``) and
  the small suffix projections; the cached ``denoise_step`` path that PPO differentiates is not
  checkpointed (its activations are the expert's, over ``chunk_size + 1`` tokens per sample, which is
  what bounds the micro-batch). A trainable VLM with checkpointing in train mode has no cache and is
  refused with a clear error.
- dtype: ``dtype="bfloat16"`` runs the VLM/expert in bf16 as LeRobot does; ``x``, ``tau``, the velocity,
  the hidden and every log-prob stay float32 (LeRobot's action projections are float32).
- Refused: an enabled ``rtc_config`` and ``n_obs_steps != 1`` (``ValueError`` naming the field).
"""

from __future__ import annotations

from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from torch import Tensor, nn

from lerobot_pirl.flow.adapters.base import register_adapter
from lerobot_pirl.flow.adapters.vla import VLAAdapter, VLAContext, masked_mean


@register_adapter("pi0")
class PI0Adapter(VLAAdapter):
    default_value_placement = "expert"
    # Expert-side projections of the model (pi05 has time_mlp_* and no state_proj).
    projection_names: tuple[str, ...] = (
        "action_in_proj",
        "action_out_proj",
        "state_proj",
        "action_time_mlp_in",
        "action_time_mlp_out",
    )
    uses_state_token = True

    @property
    def prefix_dim(self) -> int:
        return self.policy.model.paligemma_with_expert.paligemma.config.text_config.hidden_size

    def _backbone_module(self) -> nn.Module:
        return self.policy.model.paligemma_with_expert.paligemma

    def _expert_modules(self) -> list[nn.Module]:
        model = self.policy.model
        return [model.paligemma_with_expert.gemma_expert] + [getattr(model, n) for n in self.projection_names]

    def _encode(self, batch: dict[str, Tensor]) -> tuple[VLAContext, Tensor]:
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

        policy, model = self.policy, self.policy.model
        images, img_masks = policy._preprocess_images(batch)
        embs, pad_masks, att_masks = model.embed_prefix(
            images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        )
        attention = prepare_attention_masks_4d(make_att_2d_masks(pad_masks, att_masks))
        positions = pad_masks.cumsum(dim=1) - 1
        vlm_with_expert = model.paligemma_with_expert
        # As sample_actions does before its prefix forward (it fixes the attention kernel, hence the numerics).
        vlm_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
        (prefix_out, _), cache = vlm_with_expert.forward(
            attention_mask=attention,
            position_ids=positions,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
        )
        state = policy.prepare_state(batch) if self.uses_state_token else None
        context = VLAContext(past_key_values=cache, prefix_pad_masks=pad_masks, state=state)
        # Real image tokens (present cameras) and non-padding language tokens.
        return context, masked_mean(prefix_out, pad_masks)

    def _denoise(self, context: VLAContext, x: Tensor, tau: Tensor) -> Tensor:
        return self.policy.model.denoise_step(
            state=context.state,
            prefix_pad_masks=context.prefix_pad_masks,
            past_key_values=context.past_key_values,
            x_t=x,
            timestep=tau,
        )
