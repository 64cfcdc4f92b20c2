"""The simulator's own speed limit: env steps per second of the training vector env stepping uniform
random action chunks, with no policy, no transport and no learner. Training env steps per second
divided by this rate is how much of the simulator a training run uses.

``python -m lerobot_pirl.bench.throughput --task push-v3 --workers 1 2``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from lerobot_pirl.runtime.parallel import chunk_stepper


def raw_env_rate(env_cfg, seconds: float = 10.0, chunk: int = 5, seed: int = 0, windows: int = 5) -> float:
    """Env steps per second of ``env_cfg``'s training envs (its ``num_envs`` and ``env_workers``) stepping
    random ``chunk``-step chunks for about ``seconds`` (after one warm-up chunk), ended episodes reset as
    the actor resets them: the median rate of ``windows`` equal windows, so a short stall of the machine
    does not set the figure."""
    if windows < 1 or seconds <= 0:
        raise ValueError(f"windows must be >= 1 and seconds > 0, got {windows} and {seconds}")
    vec = env_cfg.create_envs()[env_cfg.type][0]
    stepper = chunk_stepper(vec)
    rng = np.random.default_rng(seed)
    try:
        stepper.reset()
        n = stepper.num_envs

        def one_chunk() -> int:
            actions = rng.uniform(-1.0, 1.0, (n, chunk, 4)).astype(np.float32)
            result = stepper.step_chunk(actions)
            stepper.reset_done(result)
            return int(result.steps.sum())

        one_chunk()
        rates = []
        for _ in range(windows):
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / windows:
                steps += one_chunk()
            rates.append(steps / (time.perf_counter() - start))
        return float(np.median(rates))
    finally:
        stepper.close()


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    p = argparse.ArgumentParser(description="raw MetaWorld env steps per second (random actions, no policy)")
    p.add_argument("--task", default="push-v3")
    p.add_argument("--num_envs", type=int, default=16)
    p.add_argument("--episode_length", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="*", default=[1, os.cpu_count() or 1])
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    print(f"| env workers | env steps/s ({args.task}, {args.num_envs} envs, {os.cpu_count()} cores) |")
    print("|---|---|")
    for workers in args.workers:
        cfg = MetaWorldStateEnvConfig(
            task=args.task, num_envs=args.num_envs, episode_length=args.episode_length, env_workers=workers
        )
        print(f"| {workers} | {raw_env_rate(cfg, args.seconds):.0f} |", flush=True)


if __name__ == "__main__":
    main()
