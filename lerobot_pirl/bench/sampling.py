"""Sampling cost of πRL vs plain ODE sampling, on flow_mlp or on pi0's expert (``make bench-sampling``).

    python -m lerobot_pirl.bench.sampling [--threads 1] [--rounds 120] [--calls 20] [--batches 1 64 256]
    python -m lerobot_pirl.bench.sampling --model pi0 [--pi0_layers 2] [--rounds 10] [--calls 2] [--batches 1]

Prints, per batch size, ratios to plain deterministic ODE sampling (the base policy's own
``predict_action_chunk``: LeRobot's Euler loop) of:

- ``own``: this package's deterministic sampler (what ``pi_rl`` deploys);
- ``sde``, ``sde_b``: an actor's stochastic sampling with the behaviour log-prob, Flow-SDE hybrid with a
  per-sample (default) and a per-batch step k* (``with_value=False``: actors do not run the critic);
- ``noise``: Flow-Noise (all steps stochastic) with the noise head of the model's Flow-Noise recipe (flow_mlp:
  ``recipes/metaworld_flow_mlp_flow_noise.json``, a one-layer head of its 32-wide tokens; pi0:
  ``recipes/libero_pi0_flow_noise.json``, RLinf's), and ``noise_rlinf`` with RLinf's ``[128, 64]`` head (the
  config default, sized for 1024-wide VLA tokens); ``head``: the recipe's head alone, K times, over the ODE
  (the floor of Flow-Noise's overhead);
- ``rescore/budget``: re-scoring a stored hybrid Flow-SDE batch as the learner does (autograd on, value
  head included) over the budget "the encoding and the critic, plus 1/K of re-scoring the whole chain"
  (``sde_steps=all``), and ``rescore/whole``: the same over re-scoring the whole chain.

``--model flow_mlp`` (default): the small CPU policy (39-dim state -> 10 x 4 chunk, 32-wide action tokens).
``--model pi0``: LeRobot's own ``PI0Policy`` with the action expert of pi0's real geometry (Gemma 300M:
width 1024, MLP 4096, 8 query heads of 256, 1 kv head; a 50 x 32 chunk, 5 x 7 executed) at ``--pi0_layers``
of its 18 layers, on a tiny VLM prefix (a 1-layer SigLIP on a 16 x 16 image, 256-wide Gemma layers, 6
language tokens; built with the tests' offline PaliGemma swap from a source checkout, nothing is downloaded). With fewer layers
and a smaller prefix than the real model, the fixed costs of sampling weigh more here than they would
there: the ratios are upper bounds for pi0.

The machine is shared and its speed drifts, so every round times a block of calls of each variant in a
random order, and each ratio is the median over rounds of the per-round ratio (same round, same load).
Targets: sde <= 1.10, noise <= 1.25, rescore/budget <= 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from lerobot_pirl.flow.config import FlowSamplerConfig, NoiseHeadConfig
from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
RLINF_NOISE_HEAD = NoiseHeadConfig().hidden_dims  # the config default: RLinf's [128, 64]
STATE_DIM, ACTION_DIM = 39, 4  # flow_mlp: MetaWorld's state and action sizes
# pi0's real Gemma 300M action expert; the VLM slot only needs the same depth, kv heads and head_dim.
PI0_EXPERT = dict(width=1024, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
PI0_VLM = dict(width=256, mlp_dim=512, num_heads=8, num_kv_heads=1, head_dim=256)


def recipe_noise_head(recipe: str) -> list[int]:
    """The noise head's hidden widths in a Flow-Noise recipe of ``recipes/``: what a run with it trains."""
    return json.loads((RECIPES / recipe).read_text())["policy"]["noise_head"]["hidden_dims"]


def flow_mlp_model(k: int):
    """The base config, an observation batch maker, a build context and the recipe's noise head."""
    base = FlowMLPConfig(
        device="cpu",
        num_inference_steps=k,
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
        push_to_hub=False,
    )
    make_obs = lambda bsz: {"observation.state": torch.randn(bsz, STATE_DIM)}  # noqa: E731
    return base, make_obs, contextlib.nullcontext(), recipe_noise_head("metaworld_flow_mlp_flow_noise.json")


def pi0_model(k: int, layers: int):
    """pi0 with its real action-expert geometry at ``layers`` layers on a tiny VLM (see the docstring)."""
    sys.path.insert(0, str(REPO))  # a source checkout: tests/ holds the offline tiny-VLM builders
    from lerobot.utils.constants import ACTION, OBS_STATE

    from tests.vla_helpers import IMAGE_KEY, IMAGE_SIZE, tiny_paligemma, tiny_pi_config, vla_batch

    dims = {"gemma_2b": dict(PI0_VLM, depth=layers), "gemma_300m": dict(PI0_EXPERT, depth=layers)}
    state_dim, action_dim = 5, 7  # vla_batch's state; LIBERO's action
    base = tiny_pi_config(
        "pi0",
        num_inference_steps=k,
        chunk_size=50,
        n_action_steps=5,
        max_state_dim=32,
        max_action_dim=32,
        input_features={
            IMAGE_KEY: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,)),
        },
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
    )
    return base, vla_batch, tiny_paligemma(dims), recipe_noise_head("libero_pi0_flow_noise.json")


def build(
    base,
    noise_method: str,
    k: int,
    draw: str = "per_sample",
    sde_steps: str | None = None,
    noise_head_dims: list[int] | None = None,
) -> PiRLPolicy:
    torch.manual_seed(0)
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


def measure(model, bsz: int, k: int, rounds: int, calls: int) -> dict[str, float]:
    base, make_obs, _, head_dims = model
    sde, sde_b = build(base, "flow_sde", k), build(base, "flow_sde", k, draw="per_batch")
    noise = build(base, "flow_noise", k, noise_head_dims=head_dims)
    noise_rlinf = build(base, "flow_noise", k, noise_head_dims=RLINF_NOISE_HEAD)
    joint = build(base, "flow_sde", k, sde_steps="all")
    obs = make_obs(bsz)
    with torch.no_grad():
        hyb, whole = sde.sample_chain(obs), joint.sample_chain(obs)
        hidden = sde.adapter.velocity(sde.adapter.encode(obs), hyb.chain[:, 0], torch.ones(bsz))[1]
    # The critic's input when it reads action tokens (pi0's default placement), as the learner pools it.
    expert = hidden.mean(1) if sde.value_placement == "expert" else None
    sampling = {
        "ode": lambda: sde.base.predict_action_chunk(obs),
        "own": lambda: sde.sampler.sample_ode(sde.adapter, obs),
        "sde": lambda: sde.sample_chain(obs, with_value=False),
        "sde_b": lambda: sde_b.sample_chain(obs, with_value=False),
        "noise": lambda: noise.sample_chain(obs, with_value=False),
        "noise_rlinf": lambda: noise_rlinf.sample_chain(obs, with_value=False),
        "head": lambda: [noise.noise_head(hidden) for _ in range(k)],
    }
    with torch.no_grad():
        t = interleaved(sampling, rounds, calls)
    # Re-scoring as the learner runs it (autograd on; the backward pass is not timed).
    rescoring = {
        "hyb": lambda: sde.score_chain(obs, hyb.chain, hyb.denoise_index),
        "whole": lambda: joint.score_chain(obs, whole.chain, whole.denoise_index),
        "fixed": lambda: sde.value_head(sde.adapter.encode(obs).features, expert),
    }
    r = interleaved(rescoring, rounds, calls)
    budget = [f + (w - f) / k for f, w in zip(r["fixed"], r["whole"], strict=True)]
    row = {"ode_ms": statistics.median(t["ode"]) * 1e3}
    row.update({name: median_ratio(t[name], t["ode"]) for name in sampling if name != "ode"})
    row["rescore/budget"] = median_ratio(r["hyb"], budget)
    row["rescore/whole"] = median_ratio(r["hyb"], r["whole"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=120)
    p.add_argument("--calls", type=int, default=20, help="calls per timed block")
    p.add_argument("--k", type=int, default=4, help="denoising steps")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--model", choices=["flow_mlp", "pi0"], default="flow_mlp")
    p.add_argument("--pi0_layers", type=int, default=2, help="expert (and VLM) layers of --model pi0")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    if args.model == "pi0":
        model = pi0_model(args.k, args.pi0_layers)
        title = f"pi0 expert geometry (width 1024, MLP 4096), {args.pi0_layers} of 18 layers, 50 x 32 chunk"
    else:
        model = flow_mlp_model(args.k)
        title = f"flow_mlp ({STATE_DIM} -> 10 x {ACTION_DIM}, hidden 256)"
    cols = ["own", "sde", "sde_b", "noise", "noise_rlinf", "head", "rescore/budget", "rescore/whole"]
    print(f"{title}, K={args.k}, torch threads={args.threads}, recipe noise head {model[3]}")
    print(f"{'batch':>5} {'ODE ms':>8} " + " ".join(f"{c:>14}" for c in cols))
    with model[2]:  # pi0: the tiny VLM swap, while the policies are built
        for bsz in args.batches:
            row = measure(model, bsz, args.k, args.rounds, args.calls)
            print(f"{bsz:>5} {row['ode_ms']:>8.2f} " + " ".join(f"{row[c]:>14.2f}" for c in cols))


if __name__ == "__main__":
    main()
