"""Sampling cost of πRL vs plain ODE sampling for the flow_mlp policy (issue 3's benchmark).

    python examples/bench_sampling.py [--threads 1] [--repeats 200]

Prints, for batch 1 and 64, the time of: plain deterministic ODE sampling (the base policy's own
``predict_action_chunk``), stochastic sampling with the behaviour log-prob as an actor runs it (Flow-SDE
hybrid with a per-sample and a per-batch step k*, Flow-Noise joint; ``with_value=False``), the cost of the
Flow-Noise head alone (K evaluations: the floor of Flow-Noise's overhead) and re-scoring a stored hybrid chain
(what the learner pays per sample, value head included; also against re-scoring a whole Flow-SDE chain,
``sde_steps=all``), as ratios measured in one run. Targets: Flow-SDE hybrid <= 1.10x ODE,
Flow-Noise <= 1.25x ODE, hybrid re-scoring <= the encoding plus 1/K of the chain's velocity evaluations
(last column: measured / that budget).
"""

from __future__ import annotations

import argparse
import time

import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy


def build(noise_method: str, k: int, draw: str = "per_sample", sde_steps: str | None = None) -> PiRLPolicy:
    torch.manual_seed(0)
    base = FlowMLPConfig(
        device="cpu",
        num_inference_steps=k,
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(39,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))},
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
    return PiRLPolicy(cfg).eval()


def timeit(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    best = float("inf")
    for _ in range(5):  # best of 5 blocks: robust to other load on the machine
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--k", type=int, default=4, help="denoising steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sde, noise = build("flow_sde", args.k), build("flow_noise", args.k)
    sde_batch = build("flow_sde", args.k, draw="per_batch")
    sde_joint = build("flow_sde", args.k, sde_steps="all")  # re-scoring it re-runs the whole chain
    print(f"flow_mlp (39 -> 4 x chunk 10, hidden 256), K={args.k}, torch threads={args.threads}")
    print(
        f"{'batch':>5} {'ODE ms':>7} {'SDE/ODE':>8} {'SDE(batch k*)/ODE':>17} {'Noise/ODE':>9} "
        f"{'head share':>10} {'rescore/ODE':>11} {'rescore/budget':>14} {'rescore/whole-chain':>19}"
    )
    for bsz in (1, 64):
        obs = {"observation.state": torch.randn(bsz, 39)}
        with torch.no_grad():
            t_ode = timeit(lambda o=obs: sde.base.predict_action_chunk(o), args.repeats)
            t_sde = timeit(lambda o=obs: sde.sample_chain(o, with_value=False), args.repeats)
            t_sde_b = timeit(lambda o=obs: sde_batch.sample_chain(o, with_value=False), args.repeats)
            t_noise = timeit(lambda o=obs: noise.sample_chain(o, with_value=False), args.repeats)
            # The Flow-Noise head alone, K times on the action-token features: the floor of its overhead.
            _, hidden = noise.adapter.velocity(
                noise.adapter.encode(obs), torch.randn(bsz, 10, 4), torch.ones(bsz)
            )
            t_head = timeit(lambda h=hidden: noise.noise_head(h), args.repeats) * args.k
            t_enc = timeit(lambda o=obs: sde.adapter.encode(o), args.repeats)
            out = sde.sample_chain(obs)
            t_score = timeit(lambda o=obs, c=out: sde.score_chain(o, c.chain, c.denoise_index), args.repeats)
            out_j = sde_joint.sample_chain(obs)
            t_joint = timeit(
                lambda o=obs, c=out_j: sde_joint.score_chain(o, c.chain, c.denoise_index), args.repeats
            )
        budget = t_enc + (t_ode - t_enc) / args.k  # encoding + one of the K velocity evaluations
        print(
            f"{bsz:>5} {t_ode * 1e3:>7.3f} {t_sde / t_ode:>8.2f} {t_sde_b / t_ode:>17.2f} "
            f"{t_noise / t_ode:>9.2f} {t_head / t_ode:>10.2f} {t_score / t_ode:>11.2f} {t_score / budget:>14.2f} "
            f"{t_score / t_joint:>19.2f}"
        )


if __name__ == "__main__":
    main()
