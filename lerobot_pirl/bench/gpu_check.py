"""One-GPU check of the VLA recipes (``bash scripts/gpu_check.sh``; ``--dry-run``: tiny models on the CPU).

For pi0 and pi05 at their real sizes (LeRobot's own ``PI0Policy`` / ``PI05Policy`` with default configs,
random weights, bf16, nothing downloaded: the processors are bypassed, language tokens are random ids) and
for each setting of the LIBERO recipes (Flow-SDE, Flow-Noise, Flow-SDE with LeRobot's
``gradient_checkpointing``, Flow-SDE with LoRA through LeRobot's PEFT wrapping on its default targets), it
measures:

- the sampling cost of an actor's stochastic chain (the recipe's sampler, no critic) over LeRobot's own
  deterministic ``predict_action_chunk``, at ``--sample_batch`` envs;
- one πRL update (one epoch, one minibatch of the recipe's ``minibatch_size``): seconds and peak GPU memory.

It prints one table. ``--dry-run`` builds the tests' tiny offline models instead (from a source checkout) and
runs every step on the CPU, as the test suite does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from lerobot.configs.default import PeftConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import PiRLAlgorithm, Rollout, RolloutSource
from lerobot_pirl.flow.config import FlowSamplerConfig, NoiseHeadConfig, ValueHeadConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig, encode_base_config
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("pi0", "pi05")
# (recipe method, LeRobot gradient checkpointing, LoRA) per row.
SETTINGS = (
    ("flow_sde", False, False),
    ("flow_noise", False, False),
    ("flow_sde", True, False),
    ("flow_sde", False, True),
)
# LoRA rank of the LoRA row (LeRobot's default targets: the expert's attention q / v and the action projections).
LORA_RANK = 16
LIBERO_CAMERAS = ("observation.images.image", "observation.images.image2")
LIBERO_STATE, LIBERO_ACTION = 8, 7


def recipe(family: str, method: str) -> dict:
    return json.loads((REPO / "recipes" / f"libero_{family}_{method}.json").read_text())


def real_base_config(family: str, device: str, checkpointing: bool):
    """LeRobot's default (real-size) config of a family with LIBERO's two cameras, state and action."""
    from lerobot.configs import PreTrainedConfig

    inputs = {cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 224, 224)) for cam in LIBERO_CAMERAS}
    inputs[OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(LIBERO_STATE,))
    return PreTrainedConfig.get_choice_class(family)(
        device=device,
        dtype="bfloat16",
        gradient_checkpointing=checkpointing,
        input_features=inputs,
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(LIBERO_ACTION,))},
        push_to_hub=False,
    )


def tiny_base_config(family: str, checkpointing: bool):
    """The tests' tiny offline config (a source checkout's ``tests/vla_helpers.py``)."""
    sys.path.insert(0, str(REPO))
    from tests.vla_helpers import tiny_pi_config

    return tiny_pi_config(family, gradient_checkpointing=checkpointing, chunk_size=10, n_action_steps=5)


def base_config(family: str, device: str, checkpointing: bool, tiny: bool):
    """The base config of a row (real size, or the tests' tiny one) and the vocabulary its random language
    tokens are drawn from."""
    if tiny:
        return tiny_base_config(family, checkpointing), 60
    return real_base_config(family, device, checkpointing), 1000


def tiny_models(tiny: bool):
    """The context the tiny configs build in (the tests' tiny PaliGemma from a source checkout), or none."""
    if not tiny:
        return contextlib.nullcontext()
    sys.path.insert(0, str(REPO))
    from tests.vla_helpers import tiny_paligemma

    return tiny_paligemma()


def observation(base_cfg, batch: int, device: str, vocab: int) -> dict[str, torch.Tensor]:
    """A preprocessed observation batch: images in [0, 1], a normalised state, random language tokens."""
    obs: dict[str, torch.Tensor] = {}
    for key, ft in base_cfg.input_features.items():
        fn = torch.rand if ft.type is FeatureType.VISUAL else torch.randn
        obs[key] = fn(batch, *ft.shape, device=device)
    n = base_cfg.tokenizer_max_length
    obs[OBS_LANGUAGE_TOKENS] = torch.randint(1, vocab, (batch, n), device=device)
    obs[OBS_LANGUAGE_ATTENTION_MASK] = torch.ones(batch, n, dtype=torch.bool, device=device)
    return obs


def build(family: str, method: str, base_cfg, device: str, lora: bool = False) -> tuple[PiRLPolicy, int]:
    """The recipe's pi_rl policy on ``base_cfg`` (with LoRA adapters) and the recipe's minibatch size."""
    raw = recipe(family, method)
    pol = raw["policy"]
    if lora:  # LeRobot's PEFT wrapping asks where the pretrained weights came from: here, nowhere
        base_cfg.pretrained_path = Path("random-init")
    cfg = PiRLConfig(
        peft=PeftConfig(r=LORA_RANK) if lora else None,
        device=device,
        base=encode_base_config(base_cfg),
        push_to_hub=False,
        train_expert_only=pol["train_expert_only"],
        sampler=FlowSamplerConfig(**pol["sampler"]),
        value_head=ValueHeadConfig(**pol["value_head"]),
        **({"noise_head": NoiseHeadConfig(**pol["noise_head"])} if "noise_head" in pol else {}),
    )
    torch.manual_seed(0)
    return PiRLPolicy(cfg), int(raw["algorithm"]["minibatch_size"])


def timed(fn, device: str, calls: int) -> float:
    """Seconds per call (after one warm-up call)."""
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls


def update_inputs(policy: PiRLPolicy, obs: dict, minibatch: int, device: str):
    """The algorithm (one epoch, one minibatch of ``minibatch``) and a rollout sampled on ``obs``: the
    inputs of one PPO update."""
    algo = PiRLAlgorithm(
        policy,
        PiRLAlgorithmConfig(
            policy_config=policy.config, minibatch_size=minibatch, rollout_size=minibatch, update_epochs=1
        ),
    )
    algo.make_optimizers_and_scheduler()
    with torch.no_grad():
        out = policy.sample_chain(obs)
    rollout = Rollout.from_sample(obs, out, torch.randn(minibatch, device=device))
    return algo, rollout


def one_update(policy: PiRLPolicy, obs: dict, minibatch: int, device: str) -> tuple[float, float]:
    """Seconds and peak memory (GiB; NaN on the CPU) of one PPO update on one minibatch."""
    algo, rollout = update_inputs(policy, obs, minibatch, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30
    return time.perf_counter() - start, float("nan")


def row(family: str, method: str, checkpointing: bool, lora: bool, args) -> dict:
    """One line of the table: build, time sampling, run one update."""
    base_cfg, vocab = base_config(family, args.device, checkpointing, args.dry_run)
    policy, minibatch = build(family, method, base_cfg, args.device, lora)
    minibatch = min(minibatch, args.max_minibatch)
    obs = observation(base_cfg, args.sample_batch, args.device, vocab)
    with torch.no_grad():
        ode = timed(lambda: policy.base.predict_action_chunk(obs), args.device, args.calls)
        stochastic = timed(lambda: policy.sample_chain(obs, with_value=False), args.device, args.calls)
    seconds, peak = one_update(
        policy, observation(base_cfg, minibatch, args.device, vocab), minibatch, args.device
    )
    return {
        "model": family,
        "setting": method
        + (" + grad ckpt" if checkpointing else "")
        + (f" + LoRA r{LORA_RANK}" if lora else ""),
        "ode_ms": ode * 1e3,
        "ratio": stochastic / ode,
        "minibatch": minibatch,
        "update_s": seconds,
        "peak_gib": peak,
    }


def table(rows: list[dict], args) -> str:
    lines = [
        f"| model | setting | ODE ms (batch {args.sample_batch}) | sampling / ODE | minibatch | update s | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['ode_ms']:.1f} | {r['ratio']:.2f} | {r['minibatch']} "
            f"| {r['update_s']:.2f} | {r['peak_gib']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="tiny models on the CPU")
    p.add_argument("--sample_batch", type=int, default=8, help="envs per sampling call")
    p.add_argument("--calls", type=int, default=5, help="timed sampling calls")
    p.add_argument("--max_minibatch", type=int, default=1_000_000, help="cap the recipes' minibatch sizes")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.sample_batch, args.calls, args.max_minibatch = "cpu", 2, 1, 4
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run to exercise it on the CPU)")
    else:
        args.device = "cuda"
    rows = []
    with tiny_models(args.dry_run):
        for family in FAMILIES:
            for method, checkpointing, lora in SETTINGS:
                rows.append(row(family, method, checkpointing, lora, args))
                if args.device == "cuda":
                    torch.cuda.empty_cache()  # the row's policy is gone: give its memory back
                print(
                    f"done: {family} {method} ckpt={checkpointing} lora={lora}", file=sys.stderr, flush=True
                )
    name = "CPU dry run (tiny models)" if args.dry_run else torch.cuda.get_device_name()
    print(f"\nπRL GPU check on {name}, torch {torch.__version__}\n")
    print(table(rows, args))


if __name__ == "__main__":
    main()
