"""Adapter of LeRobot's ``pi05`` (PaliGemma VLM + Gemma action expert with adaRMS time conditioning).

Same structure as the pi0 adapter (see ``pi0.py``); what differs:

- The state is not a model input: LeRobot's pi05 pre-processor discretises it into the prompt, so it
  reaches the model through the language tokens. ``encode`` is the prefix half of
  ``PI05Pytorch.sample_actions``; ``velocity`` is ``PI05Pytorch.denoise_step(prefix_pad_masks,
  past_key_values, x, tau)`` and its hidden is the expert output after the adaRMS-modulated final norm.
- Value head: ``"prefix"`` by default (πRL's pi05 placement): the frozen VLM's prefix output averaged
  over the real image tokens (present cameras) and the non-padding language tokens (which include the
  state text). ``detach_critic_input`` is moot with a frozen VLM: the prefix carries no graph.
- Parameters: the expert is ``gemma_expert`` (without ``lm_head``), ``action_in_proj``,
  ``action_out_proj``, ``time_mlp_in``, ``time_mlp_out``; the backbone is the PaliGemma VLM.
- Gradient checkpointing, dtypes and refused settings: as for pi0.
"""

from __future__ import annotations

from torch import Tensor

from lerobot_pirl.flow.adapters.base import register_adapter
from lerobot_pirl.flow.adapters.pi0 import PI0Adapter
from lerobot_pirl.flow.adapters.vla import VLAContext


@register_adapter("pi05")
class PI05Adapter(PI0Adapter):
    default_value_placement = "prefix"
    projection_names = ("action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out")
    uses_state_token = False
    pads_state = False

    def _denoise(self, context: VLAContext, x: Tensor, tau: Tensor) -> Tensor:
        return self.policy.model.denoise_step(
            prefix_pad_masks=context.prefix_pad_masks,
            past_key_values=context.past_key_values,
            x_t=x,
            timestep=tau,
        )
