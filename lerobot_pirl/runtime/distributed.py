"""The learner's processes under ``accelerate launch`` / ``torchrun``: who is who, and the few collectives
the πRL update needs.

Rank 0 (the main process) serves the actors, assembles and prepares every rollout and broadcasts it; every
rank then takes its share of each global minibatch, and DDP (through ``accelerate``) averages the
gradients. Decisions that end or shape an update (target-KL early stop, the ratio guard) are taken from
diagnostics combined over all ranks, so every rank runs the same minibatches.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

# How long a non-main rank may wait for the next rollout (actors on a real robot can take hours); a
# crashed rank ends the others through the launcher, not through this timeout.
ROLLOUT_WAIT = timedelta(hours=24)


def make_accelerator(device: str) -> Accelerator:
    """The learner's ``Accelerator``, configured as ``lerobot-train`` configures its own: the process
    group, device and mixed precision come from ``accelerate launch`` (flags or config file) or
    ``torchrun``; ``device == "cpu"`` forces CPU (gloo). Unused parameters are allowed (the critic-only
    warm-up and GRPO leave some parameters out of the loss)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    accelerator = Accelerator(
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True),
            InitProcessGroupKwargs(timeout=ROLLOUT_WAIT),
        ],
        cpu=device == "cpu",
    )
    if accelerator.distributed_type.value == "MULTI_CPU" and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        use_fsdp_on_cpu(accelerator)
    if accelerator.mixed_precision == "fp16":
        raise ValueError(
            "mixed_precision: fp16 needs a loss scaler per optimiser group, which pi_rl does not keep; "
            "launch with --mixed_precision bf16 (or no)"
        )
    return accelerator


def use_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Shard on CPU processes too: accelerate turns ``--use_fsdp`` (``ACCELERATE_USE_FSDP``) into FSDP on
    accelerators only, but FSDP2 runs on gloo; its plugin is read from the same ``FSDP_*`` settings. (Used by
    the tests, which run the sharded learner on CPU.)"""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP


class ChainScorer(nn.Module):
    """The policy's chain re-scoring as a module ``forward``, the call DDP / FSDP wrap to synchronise the
    gradients of every parameter it reaches; under FSDP also the rollout's value calls."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, obs: dict[str, torch.Tensor], chain: torch.Tensor, denoise_index: torch.Tensor):
        return self.policy.score_chain(obs, chain, denoise_index)

    # The rollout's value calls (FSDP forwards too when sharded: see ``lerobot_pirl.runtime.sharding``).
    def chain_value(self, obs: dict[str, torch.Tensor], chain: torch.Tensor, denoise_index: torch.Tensor):
        return self.policy.chain_value(obs, chain, denoise_index)

    def value_of(self, obs: dict[str, torch.Tensor]):
        return self.policy.value_of(obs)


def combine_diagnostics(rows: torch.Tensor, keys: list[str], counts: torch.Tensor) -> dict[str, float]:
    """One minibatch's diagnostics from every rank (``rows[r, j]``: rank r's ``keys[j]``, over
    ``counts[r]`` samples) combined as one process would have computed them on the whole minibatch:
    extremes for ``ratio_min`` / ``ratio_max`` / ``ratio_guard_max_dev`` (NaN where no rank had on-policy
    data), sample-weighted means for the rest."""
    out: dict[str, float] = {}
    weights = counts / counts.sum()
    for j, key in enumerate(keys):
        col = rows[:, j]
        if key == "ratio_min":
            out[key] = float(col.min())
        elif key == "ratio_max":
            out[key] = float(col.max())
        elif key == "ratio_guard_max_dev":
            seen = col[~torch.isnan(col)]
            out[key] = float(seen.max()) if seen.numel() else float("nan")
        else:
            out[key] = float((col.nan_to_num(0.0) * weights).sum())
    return out


class RankGroup:
    """This learner process among the update's processes (a single process when not launched
    distributed: every collective is then the identity)."""

    def __init__(self, accelerator: Accelerator | None = None):
        self.accelerator = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of rank 0, on every rank (CPU tensors travel inside pickled objects)."""
        if not self.distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group (every rank, after the last collective): a group left to the interpreter's
        exit can abort the process ("terminate called without an active exception"). Drop the DDP wrapper
        first (its reducer holds the group): :meth:`PiRLAlgorithm.leave_ranks` does both."""
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.barrier()  # no process tears its connections down while another still uses them
            torch.distributed.destroy_process_group()

    def mean_gradients(
        self, params: list[torch.nn.Parameter], grads: tuple[torch.Tensor | None, ...]
    ) -> list[torch.Tensor | None]:
        """Gradients computed outside the engine's wrapper (the hybrid mode's offline loss), averaged over
        all ranks in one collective. A parameter a rank's loss did not reach counts there as a zero
        gradient; one that no rank's loss reached stays without a gradient (None), as in one process."""
        if not self.distributed:
            return list(grads)
        local = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        reached = torch.tensor([float(g is not None) for g in grads], device=local[0].device)
        flat = torch.cat([*(g.reshape(-1).to(reached.dtype) for g in local), reached])
        flat = self.accelerator.reduce(flat, reduction="mean")
        parts = torch.split(flat, [g.numel() for g in local] + [len(local)])
        return [
            part.view_as(g).to(g.dtype) if seen > 0 else None
            for part, g, seen in zip(parts[:-1], local, parts[-1].tolist(), strict=True)
        ]

    def combine(self, step: dict[str, float], count: int) -> dict[str, float]:
        """A minibatch's diagnostics over all ranks (see :func:`combine_diagnostics`)."""
        if not self.distributed:
            return step
        keys = list(step)
        local = torch.tensor([float(count), *(float(step[k]) for k in keys)], dtype=torch.float64)
        rows = self.accelerator.gather(local.to(self.accelerator.device)).cpu().reshape(self.world, -1)
        return combine_diagnostics(rows[:, 1:], keys, rows[:, 0])


def launched_distributed() -> bool:
    """Started by ``accelerate launch`` or ``torchrun`` (which set the process group's environment), as
    opposed to a plain ``python -m``: only then does the learner build an ``Accelerator``."""
    return "WORLD_SIZE" in os.environ or "ACCELERATE_MIXED_PRECISION" in os.environ
