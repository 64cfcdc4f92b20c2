"""Building LeRobot ``Transition``s that carry what the πRL update needs in ``complementary_info``, and
the packed form an actor sends them in.

An actor step yields one transition per env. Sent as a list of per-env ``Transition``s (LeRobot's own
format), a message of 20 envs holds ~100 small tensors, and the learner's ``torch.load(weights_only=True)``
pays per tensor: decoding was the learner's largest cost after the update itself. The actor therefore sends
one **packed** ``Transition`` per step (:func:`chunk_message`): the same fields, each batched over the envs
along a leading dim, with ``complementary_info[PACKED]`` = the env count; the learner splits it back
(:func:`unpack_transitions`) into exactly the transitions :func:`chunk_transitions` builds. Messages of
per-env transitions (LeRobot's format) still decode as they are.
"""

from __future__ import annotations

import torch
from lerobot.transport.utils import bytes_to_transitions
from lerobot.utils.transition import Transition
from torch import Tensor

from lerobot_pirl import transition_keys as keys
from lerobot_pirl.flow.sampler import ChainSample

# complementary_info keys batched over the envs in a packed transition, with the Python type each env's
# value takes (None: a tensor, kept as it is); the others are shared by the envs (version, actor id).
_PER_ENV_INFO = {
    keys.LOGPROB: None,
    keys.CHAIN: None,
    keys.DENOISE_INDEX: int,
    keys.ENV_ID: int,
    keys.EPISODE_ID: int,
    keys.CHUNK_INDEX: int,
    keys.EPISODE_CHUNK: int,
    keys.SUCCESS: float,
    keys.INTERVENTION: bool,
    keys.STEPS: int,
}


def chunk_message(
    state: dict[str, Tensor],
    next_state: dict[str, Tensor],
    env_actions: Tensor,
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    sample: ChainSample,
    *,
    policy_version: int,
    actor_id: int,
    env_ids: Tensor,
    episode_ids: Tensor,
    chunk_indices: Tensor,
    episode_chunks: Tensor,
    success: Tensor,
    intervention: Tensor | None = None,
    steps: Tensor | None = None,
) -> Transition:
    """The packed transition of one executed chunk of every env (all inputs batched over the envs): what
    :func:`chunk_transitions` returns, as one ``Transition`` whose fields keep the env dim.

    ``state`` / ``next_state`` are raw observations (the learner normalises them exactly like the actor).
    ``next_state`` must be the final observation of an episode that ended inside the chunk, not the reset
    observation. ``intervention`` flags chunks in which a human teleoperated (under LeRobot's
    ``is_intervention`` key, as its actor does); ``env_actions`` are then the actions that really ran, the
    first ``steps`` of them (the env steps each chunk ran).
    """
    n = env_actions.shape[0]
    info = {
        keys.PACKED: n,
        keys.LOGPROB: sample.logprob.detach().float().cpu(),
        keys.CHAIN: sample.chain.detach().float().cpu(),
        keys.DENOISE_INDEX: sample.denoise_index.detach().cpu(),
        keys.POLICY_VERSION: int(policy_version),
        keys.ACTOR_ID: int(actor_id),
        keys.ENV_ID: env_ids.detach().cpu(),
        keys.EPISODE_ID: episode_ids.detach().cpu(),
        keys.CHUNK_INDEX: chunk_indices.detach().cpu(),
        keys.EPISODE_CHUNK: episode_chunks.detach().cpu(),
        keys.SUCCESS: success.detach().cpu(),
        keys.INTERVENTION: intervention.detach().cpu()
        if intervention is not None
        else torch.zeros(n, dtype=torch.bool),
    }
    if steps is not None:
        info[keys.STEPS] = steps.detach().cpu()
    return Transition(
        state=_batched(state),
        action=env_actions.detach().cpu(),
        reward=rewards.detach().cpu(),
        next_state=_batched(next_state),
        done=terminated.detach().cpu(),
        truncated=truncated.detach().cpu(),
        complementary_info=info,
    )


def chunk_transitions(*args, **kwargs) -> list[Transition]:
    """One transition per env for one executed chunk (the arguments of :func:`chunk_message`); each keeps
    a batch dim of 1 on its observations, as LeRobot's actor does."""
    return unpack_transitions([chunk_message(*args, **kwargs)])


def unpack_transitions(message: list) -> list:
    """The transitions of a decoded message: each packed entry split into its per-env transitions, any other
    entry (LeRobot's per-transition format) as it is. A packed entry whose fields do not all hold its env
    count raises ``ValueError`` naming the field."""
    out = []
    for entry in message:
        info = entry.get("complementary_info") if isinstance(entry, dict) else None
        if isinstance(info, dict) and keys.PACKED in info:
            out += _split(entry, info)
        else:
            out.append(entry)
    return out


def decode_transitions(payload: bytes) -> list:
    """A transition message off the wire (LeRobot's ``bytes_to_transitions``: ``torch.load`` with
    ``weights_only=True``), packed entries split (:func:`unpack_transitions`)."""
    message = bytes_to_transitions(payload)
    return unpack_transitions(message if isinstance(message, list) else [message])


def _split(entry: dict, info: dict) -> list[Transition]:
    n = info[keys.PACKED]
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"packed transition: {keys.PACKED} must be a positive int, got {n!r}")

    def batched(name: str, value):
        fits = (isinstance(value, list) and len(value) == n) or (
            isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n
        )
        if not fits:
            raise ValueError(f"packed transition: {name} must hold {n} entries, one per env")
        return value

    fields = {name: batched(name, entry.get(name)) for name in ("action", "reward", "done", "truncated")}
    states = {
        name: {k: batched(f"{name}.{k}", v) for k, v in (entry.get(name) or {}).items()}
        for name in ("state", "next_state")
    }
    per_env = {k: batched(f"complementary_info.{k}", info[k]) for k in _PER_ENV_INFO if k in info}
    shared = {k: v for k, v in info.items() if k not in _PER_ENV_INFO and k != keys.PACKED}
    out = []
    for i in range(n):
        env_info = {
            k: v[i] if _PER_ENV_INFO[k] is None else _PER_ENV_INFO[k](v[i]) for k, v in per_env.items()
        }
        out.append(
            Transition(
                state=_one(states["state"], i),
                action=fields["action"][i],
                reward=float(fields["reward"][i]),
                next_state=_one(states["next_state"], i),
                done=bool(fields["done"][i]),
                truncated=bool(fields["truncated"][i]),
                complementary_info={**shared, **env_info},
            )
        )
    return out


def _batched(obs: dict) -> dict:
    """A batched observation on the CPU (tensors detached; lists of task strings as they are)."""
    return {k: v.detach().cpu() if isinstance(v, Tensor) else list(v) for k, v in obs.items()}


def _one(obs: dict, i: int) -> dict:
    """Env ``i`` of a batched observation: tensors keep a batch dim of 1, lists (task strings) too."""
    return {k: v[i : i + 1] if isinstance(v, Tensor) else list(v[i : i + 1]) for k, v in obs.items()}
