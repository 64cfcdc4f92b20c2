"""On-policy rollout assembly from LeRobot ``Transition``s.

Actors send one ``Transition`` per env per executed chunk. What PPO needs rides in
``complementary_info`` under the keys of :mod:`lerobot_pirl.transition_keys`. The learner validates every transition on arrival
(a malformed one is rejected with a logged reason and counted, never stored), keeps them in arrival
order, and, when enough usable ones are in, hands out a :class:`TransitionBatch`: the stacked
transitions plus their layout as env-stream columns (time-ordered, split wherever a stream is not
contiguous) so that GAE never crosses streams.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from lerobot_pirl.transition_keys import (
    ACTOR_ID,
    CHAIN,
    CHUNK_INDEX,
    DENOISE_INDEX,
    ENV_ID,
    EPISODE_CHUNK,
    EPISODE_ID,
    INTERVENTION,
    LOGPROB,
    OPTIONAL_SCALAR_KEYS,
    POLICY_VERSION,
    REQUIRED_INFO_KEYS,
    SUCCESS,
    TASK,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransitionSpec:
    """Shapes a valid transition must have (per transition, without the batch dim)."""

    state_shapes: dict[str, tuple[int, ...]]
    chain_shape: tuple[int, ...]
    logprob_shape: tuple[int, ...]
    denoise_range: tuple[int, int]  # valid denoise_index values: [low, high)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x)


def _obs_problem(obs, spec: TransitionSpec, name: str) -> str | None:
    if not isinstance(obs, Mapping):
        return f"{name} is not a dict"
    for key, shape in spec.state_shapes.items():
        if key not in obs:
            return f"{name} lacks '{key}'"
        t = _as_tensor(obs[key])
        if tuple(t.shape) not in (shape, (1, *shape)):
            return f"{name}['{key}'] has shape {tuple(t.shape)}, expected {shape}"
        if t.is_floating_point() and not torch.isfinite(t).all():
            return f"{name}['{key}'] is not finite"
    return None


def transition_problem(tr: Mapping, spec: TransitionSpec) -> str | None:
    """Why ``tr`` cannot be used (a short reason), or ``None`` when it is a valid πRL transition."""
    for key in ("state", "action", "reward", "next_state", "done", "truncated", "complementary_info"):
        if key not in tr:
            return f"missing field '{key}'"
    info = tr["complementary_info"]
    if not isinstance(info, Mapping):
        return "complementary_info is not a dict"
    missing = [k for k in REQUIRED_INFO_KEYS if k not in info]
    if missing:
        return f"complementary_info lacks {missing}"
    reward = _as_tensor(tr["reward"])
    if reward.numel() != 1 or not math.isfinite(float(reward)):
        return f"reward is not a finite scalar ({reward.flatten()[:3].tolist()})"
    for name in ("state", "next_state"):
        problem = _obs_problem(tr[name], spec, name)
        if problem:
            return problem
    chain = _as_tensor(info[CHAIN])
    if tuple(chain.shape) != spec.chain_shape:
        return f"chain has shape {tuple(chain.shape)}, expected {spec.chain_shape}"
    if not torch.isfinite(chain).all():
        return "chain is not finite"
    logprob = _as_tensor(info[LOGPROB])
    if tuple(logprob.shape) != spec.logprob_shape:
        return f"logprob has shape {tuple(logprob.shape)}, expected {spec.logprob_shape}"
    if not torch.isfinite(logprob).all():
        return "logprob is not finite"
    k = int(_as_tensor(info[DENOISE_INDEX]))
    if not spec.denoise_range[0] <= k < spec.denoise_range[1]:
        return f"denoise_index {k} is outside {list(range(*spec.denoise_range))}"
    for key in (ENV_ID, EPISODE_ID, CHUNK_INDEX, EPISODE_CHUNK):
        if _as_tensor(info[key]).numel() != 1:
            return f"{key} is not a scalar"
    for key in OPTIONAL_SCALAR_KEYS:
        if key in info:
            flag = _as_tensor(info[key])
            if flag.numel() != 1 or not math.isfinite(float(flag)):
                return f"{key} is not a finite scalar"
    return None


@dataclass
class TransitionBatch:
    """Stacked transitions plus their layout as contiguous env-stream columns."""

    state: dict[str, Tensor]  # raw observations [N, ...]
    next_state: dict[str, Tensor]  # raw next observations [N, ...] (final observation at episode end)
    reward: Tensor  # [N]
    terminated: Tensor  # [N] bool
    truncated: Tensor  # [N] bool
    chain: Tensor  # [N, L, T, D]
    denoise_index: Tensor  # [N] int64
    logprob: Tensor  # [N] or [N, H, Dr]
    version: Tensor  # [N] int64
    success: Tensor  # [N] float
    actor_id: Tensor  # [N] int64
    env_id: Tensor  # [N] int64: the env in its actor's vector env
    episode_id: Tensor  # [N] int64: the env's episode counter
    episode_chunk: Tensor  # [N] int64: the chunk's index within its episode
    intervention: Tensor  # [N] bool: a human teleoperated during the chunk
    columns: Tensor  # [T_max, E] int64 indices into the batch, -1 = padding
    gap_after: Tensor  # [N] bool: the stream continues but its next transition is not in this batch

    def __len__(self) -> int:
        return int(self.reward.shape[0])


def _ints(infos: list[Mapping], key: str) -> Tensor:
    """An integer scalar of every transition's ``complementary_info``, as ``[N]`` int64."""
    return torch.tensor([int(_as_tensor(i[key])) for i in infos], dtype=torch.long)


def _stack_obs(observations: list[Mapping], keys: Iterable[str]) -> dict:
    """Stack the feature tensors (and the task strings, when the observations carry them)."""
    out: dict = {}
    for key in keys:
        parts = [_as_tensor(o[key]) for o in observations]
        shape = parts[0].shape if parts[0].ndim == 0 or parts[0].shape[0] != 1 else parts[0].shape[1:]
        out[key] = torch.stack([p.reshape(shape) for p in parts]).float()
    if all(TASK in o for o in observations):
        out[TASK] = [str(o[TASK][0] if isinstance(o[TASK], list | tuple) else o[TASK]) for o in observations]
    return out


def stream_columns(items: list[Mapping]) -> tuple[Tensor, Tensor]:
    """Lay transitions out as time-ordered columns, one per contiguous (actor, env) stream segment.

    A segment ends when the next transition of the same stream is missing (its chunk index does not
    follow on): the last transition of a segment is flagged ``gap_after`` unless its episode ended.
    """
    streams: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, tr in enumerate(items):
        info = tr["complementary_info"]
        streams[(int(info[ACTOR_ID]), int(info[ENV_ID]))].append(i)
    segments: list[list[int]] = []
    gap_after = torch.zeros(len(items), dtype=torch.bool)
    for idxs in streams.values():
        idxs.sort(key=lambda i: int(items[i]["complementary_info"][CHUNK_INDEX]))
        current = [idxs[0]]
        for prev, nxt in itertools.pairwise(idxs):
            contiguous = (
                int(items[nxt]["complementary_info"][CHUNK_INDEX])
                == int(items[prev]["complementary_info"][CHUNK_INDEX]) + 1
            )
            if contiguous:
                current.append(nxt)
            else:
                segments.append(current)
                current = [nxt]
        segments.append(current)
    for seg in segments:
        gap_after[seg[-1]] = True  # the stream's next transition is not in this batch
    t_max = max(len(s) for s in segments)
    columns = torch.full((t_max, len(segments)), -1, dtype=torch.long)
    for e, seg in enumerate(segments):
        columns[: len(seg), e] = torch.tensor(seg, dtype=torch.long)
    return columns, gap_after


class RolloutBuffer:
    """Validated πRL transitions in arrival order, handed out as on-policy batches."""

    def __init__(self, spec: TransitionSpec):
        self.spec = spec
        self._items: list[Mapping] = []
        self.rejected: Counter[str] = Counter()
        self.dropped_stale = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, transitions: Iterable[Mapping], on_kept: Callable[[Mapping], None] | None = None) -> int:
        """Store the valid transitions (and hand each to ``on_kept``); reject (log and count) the others.
        Returns how many were kept."""
        kept = 0
        for tr in transitions:
            try:
                problem = transition_problem(tr, self.spec)
            except Exception as e:  # a transition must never crash the learner
                problem = f"unreadable transition ({type(e).__name__}: {e})"
            if problem is not None:
                self.rejected[problem] += 1
                logger.warning("[LEARNER] rejected a transition: %s", problem)
                continue
            self._items.append(tr)
            kept += 1
            if on_kept is not None:
                on_kept(tr)
        return kept

    def _fresh(self, version: int, max_lag: int) -> list[bool]:
        """Sampled by one of the last ``max_lag`` versions; a version the learner has not published yet
        (a confused or hostile peer) is never usable."""
        return [0 <= version - int(tr["complementary_info"][POLICY_VERSION]) <= max_lag for tr in self._items]

    def num_usable(self, version: int, max_lag: int) -> int:
        return sum(self._fresh(version, max_lag))

    def take(
        self, version: int, max_lag: int, limit: int | None = None
    ) -> tuple[TransitionBatch | None, int]:
        """The usable transitions as a batch (the buffer is emptied); also returns how many were dropped.

        With ``limit``, at most that many are used, the freshest policy versions first (an actor that
        outpaces the learner must not make rollouts, and update times, grow without bound).
        """
        fresh = self._fresh(version, max_lag)
        items = [tr for tr, ok in zip(self._items, fresh, strict=True) if ok]
        if limit is not None and len(items) > limit:
            newest_first = sorted(
                range(len(items)), key=lambda i: -int(items[i]["complementary_info"][POLICY_VERSION])
            )
            keep = set(newest_first[:limit])
            items = [tr for i, tr in enumerate(items) if i in keep]
        dropped = len(fresh) - len(items)
        self.dropped_stale += dropped
        self._items = []
        if not items:
            return None, dropped
        return self._stack(items), dropped

    def _stack(self, items: list[Mapping]) -> TransitionBatch:
        infos = [tr["complementary_info"] for tr in items]
        columns, gap_after = stream_columns(items)
        terminated = torch.tensor([bool(_as_tensor(tr["done"])) for tr in items])
        truncated = torch.tensor([bool(_as_tensor(tr["truncated"])) for tr in items]) & ~terminated
        return TransitionBatch(
            state=_stack_obs([tr["state"] for tr in items], self.spec.state_shapes),
            next_state=_stack_obs([tr["next_state"] for tr in items], self.spec.state_shapes),
            reward=torch.tensor([float(_as_tensor(tr["reward"])) for tr in items], dtype=torch.float32),
            terminated=terminated,
            truncated=truncated,
            chain=torch.stack([_as_tensor(i[CHAIN]).float() for i in infos]),
            denoise_index=_ints(infos, DENOISE_INDEX),
            logprob=torch.stack([_as_tensor(i[LOGPROB]).float() for i in infos]),
            version=_ints(infos, POLICY_VERSION),
            success=torch.tensor([float(_as_tensor(i.get(SUCCESS, 0.0))) for i in infos]),
            actor_id=_ints(infos, ACTOR_ID),
            env_id=_ints(infos, ENV_ID),
            episode_id=_ints(infos, EPISODE_ID),
            episode_chunk=_ints(infos, EPISODE_CHUNK),
            intervention=torch.tensor(
                [bool(_as_tensor(i.get(INTERVENTION, False))) for i in infos], dtype=torch.bool
            ),
            columns=columns,
            gap_after=gap_after & ~(terminated | truncated),
        )
