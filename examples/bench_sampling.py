"""Sampling cost of πRL vs plain ODE sampling for the flow_mlp policy (issue 3's benchmark).

    python examples/bench_sampling.py [--threads 1] [--rounds 120] [--calls 20] [--batches 1 64 256]

Prints, for batch 1, 64 and 256 (the learner's minibatch size in the recipes), ratios to plain deterministic
ODE sampling (the base policy's own ``predict_action_chunk``, i.e. LeRobot's Euler loop) of:

- ``own``: this package's deterministic sampler (what ``pi_rl`` deploys);
- ``sde``, ``sde_b``: an actor's stochastic sampling with the behaviour log-prob, Flow-SDE hybrid with a
  per-sample (default) and a per-batch step k* (``with_value=False``: actors do not run the critic);
- ``noise``: Flow-Noise (all steps stochastic) with the default noise head, RLinf's ``[128, 64]`` (sized
  for 1024-wide VLA tokens), and ``noise_h32`` with a one-layer ``[32]`` head (the width of flow_mlp's action
  tokens); ``head``: the default head alone, K times, over the ODE (the floor of Flow-Noise's overhead);
- ``rescore/budget``: re-scoring a stored hybrid Flow-SDE batch as the learner does (autograd on, value
  head included) over the budget "the encoding and the critic, plus 1/K of re-scoring the whole chain"
  (``sde_steps=all``), and ``rescore/whole``: the same over re-scoring the whole chain.

The machine is shared and its speed drifts, so every round times a block of calls of each variant in a
random order, and each ratio is the median over rounds of the per-round ratio (same round, same load).
Targets: sde <= 1.10, noise <= 1.25, rescore/budget <= 1.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_pirl.flow.config import FlowSamplerConfig, NoiseHeadConfig
from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy

STATE_DIM, ACTION_DIM, CHUNK = 39, 4, 10


def build(
    noise_method: str,
    k: int,
    draw: str = "per_sample",
    sde_steps: str | None = None,
    noise_head_dims: list[int] | None = None,
) -> PiRLPolicy:
    torch.manual_seed(0)
    base = FlowMLPConfig(
        device="cpu",
        num_inference_steps=k,
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
        push_to_hub=False,
    )
    cfg = PiRLConfig(
        device="cpu",
        base=base,
        push_to_hub=False,
        sampler=FlowSamplerConfig(
            noise_method=noise_method, num_denoise_steps=k, hybrid_step_draw=draw, sde_steps=sde_steps
        ),
    )
    if noise_head_dims is not None:
        cfg.noise_head = NoiseHeadConfig(hidden_dims=noise_head_dims)
    return PiRLPolicy(cfg).eval()


def interleaved(fns: dict, rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one block of ``calls`` per function and round (random order)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(calls):
            fn()
    for _ in range(rounds):
        order = list(fns.items())
        random.shuffle(order)
        for name, fn in order:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def measure(bsz: int, k: int, rounds: int, calls: int) -> dict[str, float]:
    sde, sde_b = build("flow_sde", k), build("flow_sde", k, draw="per_batch")
    noise, noise_h32 = build("flow_noise", k), build("flow_noise", k, noise_head_dims=[32])
    joint = build("flow_sde", k, sde_steps="all")
    obs = {"observation.state": torch.randn(bsz, STATE_DIM)}
    with torch.no_grad():
        hidden = sde.adapter.velocity(
            sde.adapter.encode(obs), torch.randn(bsz, CHUNK, ACTION_DIM), torch.ones(bsz)
        )[1]
        hyb, whole = sde.sample_chain(obs), joint.sample_chain(obs)
    sampling = {
        "ode": lambda: sde.base.predict_action_chunk(obs),
        "own": lambda: sde.sampler.sample_ode(sde.adapter, obs),
        "sde": lambda: sde.sample_chain(obs, with_value=False),
        "sde_b": lambda: sde_b.sample_chain(obs, with_value=False),
        "noise": lambda: noise.sample_chain(obs, with_value=False),
        "noise_h32": lambda: noise_h32.sample_chain(obs, with_value=False),
        "head": lambda: [noise.noise_head(hidden) for _ in range(k)],
    }
    with torch.no_grad():
        t = interleaved(sampling, rounds, calls)
    # Re-scoring as the learner runs it (autograd on; the backward pass is not timed).
    rescoring = {
        "hyb": lambda: sde.score_chain(obs, hyb.chain, hyb.denoise_index),
        "whole": lambda: joint.score_chain(obs, whole.chain, whole.denoise_index),
        "fixed": lambda: sde.value_head(sde.adapter.encode(obs).features, None),
    }
    r = interleaved(rescoring, rounds, calls)
    budget = [f + (w - f) / k for f, w in zip(r["fixed"], r["whole"], strict=True)]
    row = {"ode_ms": statistics.median(t["ode"]) * 1e3}
    row.update({name: median_ratio(t[name], t["ode"]) for name in sampling if name != "ode"})
    row["rescore/budget"] = median_ratio(r["hyb"], budget)
    row["rescore/whole"] = median_ratio(r["hyb"], r["whole"])
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=120)
    p.add_argument("--calls", type=int, default=20, help="calls per timed block")
    p.add_argument("--k", type=int, default=4, help="denoising steps")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    cols = ["own", "sde", "sde_b", "noise", "noise_h32", "head", "rescore/budget", "rescore/whole"]
    print(
        f"flow_mlp ({STATE_DIM} -> {CHUNK} x {ACTION_DIM}, hidden 256), K={args.k}, torch threads={args.threads}"
    )
    print(f"{'batch':>5} {'ODE ms':>7} " + " ".join(f"{c:>14}" for c in cols))
    for bsz in args.batches:
        row = measure(bsz, args.k, args.rounds, args.calls)
        print(f"{bsz:>5} {row['ode_ms']:>7.3f} " + " ".join(f"{row[c]:>14.2f}" for c in cols))


if __name__ == "__main__":
    main()
