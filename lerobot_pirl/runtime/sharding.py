"""FSDP for the πRL learner: the policy's parameters, gradients and Adam state sharded over the learner's
processes with PyTorch's FSDP2 (``fully_shard``), applied by accelerate's own ``fsdp2_prepare_model`` with the
plugin of ``accelerate launch --use_fsdp --fsdp_version 2`` (or an accelerate config file).

Sharded, no process holds the whole model between forwards: every forward (the re-scoring of the update, the
values of a rollout) and every read of the whole weights (the actors' weights, a checkpoint) is a collective
that all processes run together, in the same order. Rank 0 still alone serves the actors and writes files;
it tells the other processes which collective comes next (see ``lerobot_pirl.learner``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from accelerate import Accelerator

# The policy calls that run the sharded model: the update's re-scoring (``forward``) and the rollout's values.
FORWARD_METHODS = ("chain_value", "value_of")


def shards_parameters(accelerator: Accelerator | None) -> bool:
    """Whether accelerate was launched with FSDP (``--use_fsdp``, or ``distributed_type: FSDP``)."""
    if accelerator is None:
        return False
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def check_sharding(accelerator: Accelerator, hybrid: bool) -> None:
    """Refuse the FSDP settings the learner does not run, naming the setting."""
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"accelerate: fsdp_version {plugin.fsdp_version}: the πRL learner shards with FSDP2 (its per-group "
            "optimisers hold the original parameters); launch with --fsdp_version 2"
        )
    if plugin.activation_checkpointing:
        raise ValueError(
            "accelerate: fsdp_activation_checkpointing is not supported by the πRL learner; use the base "
            "policy's own gradient_checkpointing (pi0 / pi05) instead"
        )
    if hybrid:
        raise ValueError(
            "algorithm.offline_loss_coef > 0 (hybrid) is not supported under FSDP yet (the offline loss's "
            "gradient is taken outside the sharded forward); run hybrid updates with DDP"
        )


def shard(accelerator: Accelerator, scorer: nn.Module) -> nn.Module:
    """``scorer`` (a ``ChainScorer`` around the policy) sharded by accelerate's FSDP2 preparation (auto-wrap
    policy, mixed precision, CPU offload from its plugin), with the rollout's value calls made FSDP forwards
    too, so they gather the parameters they read."""
    from accelerate.utils import fsdp2_prepare_model
    from torch.distributed.fsdp import register_fsdp_forward_method

    sharded = fsdp2_prepare_model(accelerator, scorer)
    for name in FORWARD_METHODS:
        register_fsdp_forward_method(sharded, name)
    return sharded


def full(value: Any) -> Any:
    """A sharded tensor gathered whole (a collective: every process calls it in the same order); anything
    else as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict with every sharded tensor gathered whole, detached, on the CPU (collective). A gathered
    tensor is copied out of the gather's padded buffer (safetensors writes only tensors that own their
    storage)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for key, value in state.items():
        if isinstance(value, DTensor):
            value = full(value).detach().clone()
        out[key] = value.detach().cpu() if isinstance(value, Tensor) else value
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimiser's ``state_dict()`` with its sharded moments gathered whole (collective): the layout a
    one-process optimiser over the unsharded parameters has, so any process count can resume from it."""
    state = optimizer.state_dict()
    return {
        "state": {i: full_state(s) for i, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }


def optimizer_state_by_name(
    optimizers: dict[str, torch.optim.Optimizer], named: dict[int, str]
) -> dict[str, dict[str, dict[str, Tensor]]]:
    """Each optimiser's per-parameter state keyed by parameter name (``named``: id(param) -> name), so it can
    follow the parameters through sharding, which replaces them."""
    return {
        group: {named[id(p)]: dict(s) for p, s in opt.state.items() if id(p) in named}
        for group, opt in optimizers.items()
    }


def load_sharded_optimizer_state(
    optimizers: dict[str, torch.optim.Optimizer],
    by_name: dict[str, dict[str, dict[str, Tensor]]],
    params: dict[str, nn.Parameter],
) -> None:
    """Put whole per-parameter states (from :func:`optimizer_state_by_name`) into optimisers over sharded
    ``params``: each moment is cut like its parameter (every process holds the same whole moments, so no
    data moves between processes)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group, states in by_name.items():
        opt = optimizers[group]
        for name, state in states.items():
            p = params[name]
            moved = {}
            for key, value in state.items():
                if isinstance(p, DTensor) and isinstance(value, Tensor) and value.shape == p.shape:
                    value = distribute_tensor(
                        value.to(p.to_local().device), p.device_mesh, p.placements, src_data_rank=None
                    )
                moved[key] = value
            opt.state[p] = moved
