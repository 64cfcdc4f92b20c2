"""Adapter of LeRobot's ``smolvla`` (SmolVLM backbone + a narrower action expert).

- ``encode``: the prefix half of ``VLAFlowMatching.sample_actions`` — LeRobot's ``prepare_images`` and
  ``prepare_state``, ``embed_prefix`` (images, language and one state token, which image and language
  tokens do not attend to), the prefix forward of ``vlm_with_expert`` that fills the KV cache.
- ``velocity``: ``VLAFlowMatching.denoise_step(prefix_pad_masks, past_key_values, x, tau)``. That method
  appends the suffix K/V to the cache it is given and crops them off afterwards, i.e. it mutates the
  cache; every call gets its own copy (LeRobot's ``clone_past_key_values``), so the encoded prefix
  stays valid for any number of calls, with autograd, and after an exception. The values are the same,
  so the deterministic ODE reproduces ``sample_actions`` / ``predict_action_chunk(noise=...)`` bit for bit.
- Denoising steps: smolvla reads ``num_steps`` (not ``num_inference_steps``); the export writes the
  trained ``num_denoise_steps`` there and the executed ``action_chunk`` into ``n_action_steps``.
- Value head: ``"prefix"`` by default (our choice; the paper has no smolvla setting). The features are
  ``[mean VLM output over the real image and language tokens, VLM output of the state token]``
  (width ``2 x`` the VLM width). In smolvla the state is a prefix token that attends to the images and
  the instruction, so its output is the backbone's only state-aware summary; pooling it into the mean
  would dilute it among ~200 image/language tokens, hence the concatenation. The VLM is frozen, so the
  critic is a cheap head on features the actor computes anyway (no extra denoising passes, unlike the
  "expert" placement).
- Parameters: the expert is ``lm_expert`` plus ``action_in_proj``, ``action_out_proj``,
  ``action_time_mlp_in/out``; the backbone is the SmolVLM **and ``state_proj``**. LeRobot's
  ``train_expert_only`` freezes the VLM only and trains ``state_proj`` (``train_state_proj=true``), but
  ``state_proj`` feeds the prefix cache: training it would need a backward pass through the whole VLM
  prefix in every PPO minibatch. pi_rl's ``train_expert_only=true`` therefore freezes it too; with
  ``train_expert_only=false`` the prefix runs with autograd and it trains as in LeRobot.
- Gradient checkpointing: smolvla has none in LeRobot (its joint forward is a custom layer loop);
  nothing to enable. Memory is bounded by the micro-batch.
- dtype: a VLM loaded with ``load_vlm_weights=true`` is bf16 (LeRobot's choice), the rest follows the
  configs; LeRobot's custom layers cast to each projection's dtype and the action projections are
  float32, so ``x``, the velocity, the hidden and the log-probs are float32.
- Refused (``ValueError`` naming the field): ``adapt_to_pi_aloha`` (it rewrites the state in the batch in
  place and re-encodes actions after sampling), ``use_cache=false`` (LeRobot's cached denoising needs
  the prefix cache), an enabled ``rtc_config``, ``n_obs_steps != 1``.
"""

from __future__ import annotations

import torch
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS
from torch import Tensor, nn

from lerobot_pirl.flow.adapters.base import register_adapter
from lerobot_pirl.flow.adapters.vla import VLAAdapter, VLAContext, masked_mean


@register_adapter("smolvla")
class SmolVLAAdapter(VLAAdapter):
    default_value_placement = "prefix"
    projection_names = ("action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")

    def _check_config(self, cfg) -> None:
        if cfg.adapt_to_pi_aloha:
            raise ValueError(
                "adapt_to_pi_aloha: the Aloha state/action conversion mutates the batch and re-encodes "
                "sampled actions, which pi_rl's chain log-likelihood cannot follow; set it to false"
            )
        if not cfg.use_cache:
            raise ValueError(
                "use_cache: pi_rl re-uses the prefix KV cache across denoising steps; set it to true"
            )

    @property
    def prefix_dim(self) -> int:
        return 2 * self.policy.model.vlm_with_expert.config.text_config.hidden_size

    def _backbone_module(self) -> nn.Module:
        return self.policy.model.vlm_with_expert.vlm

    def _expert_modules(self) -> list[nn.Module]:
        model = self.policy.model
        return [model.vlm_with_expert.lm_expert] + [getattr(model, n) for n in self.projection_names]

    def export_overrides(self, num_denoise_steps: int, action_chunk: int) -> dict[str, int]:
        return {"num_steps": num_denoise_steps, "n_action_steps": action_chunk}

    def _encode(self, batch: dict[str, Tensor]) -> tuple[VLAContext, Tensor]:
        from lerobot.policies.common.vla_utils import make_att_2d_masks

        policy, model = self.policy, self.policy.model
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch)
        embs, pad_masks, att_masks = model.embed_prefix(
            images,
            img_masks,
            batch[OBS_LANGUAGE_TOKENS],
            batch[OBS_LANGUAGE_ATTENTION_MASK],
            state=state,
        )
        (prefix_out, _), cache = model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=pad_masks.cumsum(dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=model.config.use_cache,
        )
        # att_masks is 1 exactly on the state token; padding (prefix_length) has pad_masks 0.
        state_token = att_masks.bool() & pad_masks
        observation_tokens = ~att_masks.bool() & pad_masks
        features = [masked_mean(prefix_out, observation_tokens), masked_mean(prefix_out, state_token)]
        context = VLAContext(past_key_values=cache, prefix_pad_masks=pad_masks)
        return context, torch.cat(features, dim=-1)

    def _denoise(self, context: VLAContext, x: Tensor, tau: Tensor) -> Tensor:
        from lerobot.policies.common.vla_utils import clone_past_key_values

        return self.policy.model.denoise_step(
            prefix_pad_masks=context.prefix_pad_masks,
            past_key_values=clone_past_key_values(context.past_key_values),
            x_t=x,
            timestep=tau,
        )
