"""Building LeRobot ``Transition``s that carry what the πRL update needs in ``complementary_info``."""

from __future__ import annotations

from lerobot.utils.transition import Transition
from torch import Tensor

from lerobot_pirl import transition_keys as keys
from lerobot_pirl.flow.sampler import ChainSample


def chunk_transitions(
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
) -> list[Transition]:
    """One transition per env for one executed chunk (all inputs batched over the envs, on CPU).

    ``state`` / ``next_state`` are raw observations (the learner normalises them exactly like the actor);
    each transition keeps a batch dim of 1 on them, as LeRobot's actor does. ``next_state`` must be the
    final observation of an episode that ended inside the chunk, not the reset observation.
    ``intervention`` flags chunks in which a human teleoperated (under LeRobot's ``is_intervention``
    key, as its actor does); ``env_actions`` are then the actions that really ran, the first ``steps``
    of them (the env steps each chunk ran).
    """
    transitions = []
    for i in range(env_actions.shape[0]):
        info = {
            keys.LOGPROB: sample.logprob[i].detach().float().cpu(),
            keys.CHAIN: sample.chain[i].detach().float().cpu(),
            keys.DENOISE_INDEX: int(sample.denoise_index[i]),
            keys.POLICY_VERSION: int(policy_version),
            keys.ACTOR_ID: int(actor_id),
            keys.ENV_ID: int(env_ids[i]),
            keys.EPISODE_ID: int(episode_ids[i]),
            keys.CHUNK_INDEX: int(chunk_indices[i]),
            keys.EPISODE_CHUNK: int(episode_chunks[i]),
            keys.SUCCESS: float(success[i]),
            keys.INTERVENTION: bool(intervention[i]) if intervention is not None else False,
        }
        if steps is not None:
            info[keys.STEPS] = int(steps[i])
        transitions.append(
            Transition(
                state=_one(state, i),
                action=env_actions[i].detach().cpu(),
                reward=float(rewards[i]),
                next_state=_one(next_state, i),
                done=bool(terminated[i]),
                truncated=bool(truncated[i]),
                complementary_info=info,
            )
        )
    return transitions


def _one(obs: dict, i: int) -> dict:
    """Env ``i`` of a batched observation: tensors keep a batch dim of 1, lists (task strings) too."""
    return {
        k: v[i : i + 1].detach().cpu() if isinstance(v, Tensor) else list(v[i : i + 1])
        for k, v in obs.items()
    }
