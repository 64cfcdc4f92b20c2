"""The ``complementary_info`` keys of a πRL transition: what an actor sends next to LeRobot's
``Transition`` fields and what the learner reads. Actor side: ``runtime/transitions.py``; learner side:
``algorithms/pi_rl/rollout.py``."""

from __future__ import annotations

LOGPROB = "logprob"  # behaviour log-prob, float32: [] (chunk level) or [H, Dr] (token level)
CHAIN = "chain"  # stored chain values, float32 [L, T, D]
DENOISE_INDEX = "denoise_index"  # the hybrid chain's stochastic step, or -1 when every step is stochastic
POLICY_VERSION = "policy_version"  # version of the weights that sampled the chunk
ACTOR_ID = "actor_id"  # random id of the actor process
ENV_ID = "env_id"  # index of the env in the actor's vector env
EPISODE_ID = "episode_id"  # per-env episode counter
CHUNK_INDEX = "chunk_index"  # per-env counter of chunks (consecutive within a stream)
EPISODE_CHUNK = "episode_chunk"  # index of the chunk within its episode (0 = the episode's first chunk)
SUCCESS = "success"  # 1.0 if the task was solved inside the chunk
# True if a human teleoperated during the chunk (LeRobot's TeleopEvents.IS_INTERVENTION key): the executed
# actions are not the sampled chain's, so the chunk gives the policy no credit (zero advantage).
INTERVENTION = "is_intervention"
STEPS = "steps"  # env steps the chunk ran (fewer than its actions when the episode ended inside it)
# A packed message's entry: one Transition holding an actor step's transitions of all its envs along a
# leading dim of this many (runtime/transitions.py: one tensor per field instead of one per env and field).
PACKED = "packed_transitions"
TASK = "task"  # observation key of the env's task strings (a VLA's prompt), carried next to the features

REQUIRED_INFO_KEYS = (
    LOGPROB,
    CHAIN,
    DENOISE_INDEX,
    POLICY_VERSION,
    ACTOR_ID,
    ENV_ID,
    EPISODE_ID,
    CHUNK_INDEX,
    EPISODE_CHUNK,
)
OPTIONAL_SCALAR_KEYS = (SUCCESS, INTERVENTION, STEPS)
