"""Stepping a vector env's sub-envs on several CPU cores, one action chunk at a time, exactly as in one
process.

A :class:`ParallelChunkStepper` splits ``N`` envs into ``W`` contiguous groups. Each group lives in its
own worker process (``spawn``: the actor already runs gRPC and torch threads, which must not be forked),
where a :class:`~lerobot_pirl.runtime.vector.ChunkStepper` steps it per env. A chunk is sent to every
worker at once and the groups step in parallel; results come back in env order. Because each sub-env
keeps its own seeds and every env still steps its chunk alone (an episode that ends at step ``h`` ends
only that env's transition), the result is the same, env for env, as one in-process ``ChunkStepper`` on
the same envs; only the wall time changes.

gymnasium's ``AsyncVectorEnv`` is the other way to use several cores, but it steps all envs in lock-step,
so one env's episode end cuts every env's chunk short.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Callable, Sequence

import numpy as np
from gymnasium.vector.utils import CloudpickleWrapper

from lerobot_pirl.runtime.vector import ChunkResult, ChunkStepper, episode_step_limit

# Seconds a worker outlives a SIGTERM / SIGHUP while waiting for its parent's ``close`` (see _defer_stop).
TERM_GRACE_S = 20.0

# ChunkResult fields that are per-env arrays (concatenated over groups in env order).
_ARRAY_FIELDS = ("rewards", "steps", "terminated", "truncated", "success", "episode_success")


def _concat_obs(parts: list[dict]) -> dict:
    return {
        k: (
            _concat_obs([p[k] for p in parts])
            if isinstance(v, dict)
            else np.concatenate([p[k] for p in parts])
        )
        for k, v in parts[0].items()
    }


def _concat_results(parts: list[ChunkResult]) -> ChunkResult:
    arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAY_FIELDS}
    next_obs = _concat_obs([p.next_obs for p in parts])
    last_obs = _concat_obs([p.last_obs for p in parts])
    return ChunkResult(next_obs=next_obs, last_obs=last_obs, **arrays)


def _defer_stop(grace_s: float) -> None:
    """Make a worker outlive SIGTERM / SIGHUP by up to ``grace_s`` seconds. Those signals reach the workers
    together with their parent when a whole process group is stopped (``kill -- -PGID``, a cluster's job
    stop or pre-emption); the parent stops gracefully (it finishes its step, checkpoints, then closes the
    workers), which needs the workers alive until its ``close``. A worker whose parent never closes it
    leaves ``grace_s`` after the signal, with the signal's exit status."""

    def arm(signum, frame):  # a second signal does not put the deadline off
        signal.signal(signal.SIGALRM, lambda *_: os._exit(128 + signum))
        signal.alarm(signal.alarm(0) or max(1, math.ceil(grace_s)))

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, arm)


def _serve(conn, make_group: CloudpickleWrapper, grace_s: float = TERM_GRACE_S) -> None:
    """A worker: build the group's vector env, then answer commands until ``close`` (or the parent leaves)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the workers stop
    _defer_stop(grace_s)
    stepper = None
    try:
        vec = make_group.fn()
        stepper = ChunkStepper(vec, max_episode_steps=episode_step_limit(vec))
        conn.send(("ok", vec.num_envs))
        last: ChunkResult | None = None
        while True:
            command, arg = conn.recv()
            if command == "close":
                break
            try:
                if command == "reset":
                    out = stepper.reset(seed=arg)
                elif command == "step":
                    last = out = stepper.step_chunk(arg)
                elif command == "reset_done":
                    out = stepper.reset_done(last)
                elif command == "call":
                    out = vec.call(arg)
                elif command == "set_attr":
                    out = vec.set_attr(*arg)
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", out))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away
    except Exception:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        if stepper is not None:
            stepper.close()
        conn.close()


class ParallelChunkStepper:
    """``ChunkStepper``'s interface over env groups stepped in worker processes (``reset``, ``step_chunk``,
    ``reset_done``, ``call``, ``set_attr``, ``close``). ``make_groups`` holds one picklable callable per
    worker, each building that group's ``SyncVectorEnv``; the envs are numbered group after group. A worker
    ignores SIGINT and outlives SIGTERM / SIGHUP by up to ``term_grace_s`` seconds: the parent decides when it
    stops."""

    def __init__(self, make_groups: Sequence[Callable[[], object]], term_grace_s: float = TERM_GRACE_S):
        if not make_groups:
            raise ValueError("ParallelChunkStepper needs at least one env group")
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        for i, make in enumerate(make_groups):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_serve,
                args=(child, CloudpickleWrapper(make), term_grace_s),
                name=f"env-group-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.sizes = self._gather()
        self.num_envs = int(sum(self.sizes))
        self._bounds = np.cumsum([0, *self.sizes])

    def _gather(self) -> list:
        out = []
        for i, conn in enumerate(self._conns):
            try:
                status, value = conn.recv()
            except EOFError:
                code = self._procs[i].exitcode
                raise RuntimeError(f"env group {i}: its worker process exited (code {code})") from None
            if status != "ok":
                raise RuntimeError(f"env group {i} failed in its worker process:\n{value}")
            out.append(value)
        return out

    def _all(self, command: str, args: list | None = None) -> list:
        for i, conn in enumerate(self._conns):
            conn.send((command, None if args is None else args[i]))
        return self._gather()

    def _split(self, values) -> list:
        return [values[a:b] for a, b in zip(self._bounds[:-1], self._bounds[1:], strict=True)]

    def call(self, name: str) -> tuple:
        """An attribute (or method result) of every sub-env, in env order (gymnasium's ``VectorEnv.call``)."""
        return tuple(v for part in self._all("call", [name] * len(self._conns)) for v in part)

    def set_attr(self, name: str, values: list) -> None:
        """Set attribute ``name`` of sub-env ``i`` to ``values[i]`` (gymnasium's ``VectorEnv.set_attr``)."""
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr: {len(values)} values for {self.num_envs} envs")
        self._all("set_attr", [(name, list(part)) for part in self._split(list(values))])

    def reset(self, seed: int | list[int] | None = None) -> dict[str, np.ndarray]:
        if seed is None:
            seeds = [None] * len(self._conns)
        else:
            per_env = seed if isinstance(seed, list) else [seed + i for i in range(self.num_envs)]
            if len(per_env) != self.num_envs:
                raise ValueError(f"reset: {len(per_env)} seeds for {self.num_envs} envs")
            seeds = self._split(per_env)
        return _concat_obs(self._all("reset", seeds))

    def step_chunk(self, actions: np.ndarray) -> ChunkResult:
        if len(actions) != self.num_envs:
            raise ValueError(f"step_chunk: actions for {len(actions)} envs, expected {self.num_envs}")
        return _concat_results(self._all("step", self._split(np.asarray(actions))))

    def reset_done(self, result: ChunkResult) -> dict[str, np.ndarray]:
        """The observations the next chunk starts from; each worker resets the envs its last chunk ended
        (``result`` is that chunk's combined result)."""
        return _concat_obs(self._all("reset_done"))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []


def chunk_stepper(vec, on_step: Callable[[int], None] | None = None) -> ChunkStepper | ParallelChunkStepper:
    """What steps a vector env chunk by chunk: a :class:`ParallelChunkStepper` is one already (its workers
    step their groups); any other vector env gets a :class:`ChunkStepper` that ends episodes at the envs'
    own step limit (``on_step``: called with an env's index after each of its steps)."""
    if isinstance(vec, ParallelChunkStepper):
        return vec
    return ChunkStepper(vec, max_episode_steps=episode_step_limit(vec), on_step=on_step)
