"""Measured memory of one πRL update of real-size pi0 / pi05, on the CPU (Linux).

``python -m lerobot_pirl.bench.cpu_sizing`` builds LeRobot's real-size ``PI0Policy`` / ``PI05Policy`` (random
bf16 weights, nothing downloaded; the GPU check's models) inside the LIBERO Flow-SDE recipe's pi_rl policy
and runs one PPO update on a minibatch of ``m`` samples, for each setting (the recipe: the action expert
trained, the VLM frozen; + LeRobot's ``gradient_checkpointing``; + LoRA r16 through LeRobot's PEFT wrapping)
and each ``m`` of ``--minibatch``. Each measurement runs in its own process and reads the kernel's resident
memory: after building the policy (``weights``) and the update's peak (``peak``, the peak counter reset after
the rollout is sampled, so it is the update's own).

Two minibatch sizes give the per-sample activation memory ``a`` (the slope), and the table extrapolates
the peak to the recipe's minibatch ``M`` (and to ``M / n`` per rank under DDP over n processes):

    peak(M) = peak(m1) + (M - m1) * a,   a = (peak(m2) - peak(m1)) / (m2 - m1)

Host memory is what it measures: the same tensors on a GPU take about the same bytes (plus CUDA's
context and allocator slack), so the figures bound what a GPU needs from below.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import RolloutSource
from lerobot_pirl.bench.gpu_check import (
    FAMILIES,
    LORA_RANK,
    base_config,
    build,
    observation,
    tiny_models,
    update_inputs,
)

# (name, LeRobot gradient checkpointing, LoRA): the Flow-SDE recipe's settings measured.
SETTINGS = {"recipe": (False, False), "grad_ckpt": (True, False), "lora": (False, True)}


def _proc_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (cpu_sizing measures memory on Linux only)")


def _reset_peak() -> None:
    """Reset the kernel's peak resident memory (``VmHWM``) of this process to its current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(family: str, setting: str, minibatch: int, tiny: bool = False) -> dict:
    """One update in this process: resident GiB after building, the update's peak GiB and seconds, and
    the parameter counts (total, trainable) with their bytes."""
    checkpointing, lora = SETTINGS[setting]
    base_cfg, vocab = base_config(family, "cpu", checkpointing, tiny)
    before = _proc_kib("VmRSS")
    policy, _ = build(family, "flow_sde", base_cfg, "cpu", lora)
    built = _proc_kib("VmRSS")
    params = list(policy.parameters())
    trainable = [p for p in params if p.requires_grad]
    obs = observation(base_cfg, minibatch, "cpu", vocab)
    algo, rollout = update_inputs(policy, obs, minibatch, "cpu")
    _reset_peak()
    start = time.perf_counter()
    algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    seconds = time.perf_counter() - start
    return {
        "model": family,
        "setting": setting,
        "minibatch": minibatch,
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in trainable),
        "trainable_bytes": sum(p.numel() * p.element_size() for p in trainable),
        "weights_gib": (built - before) / 2**20,
        "peak_gib": _proc_kib("VmHWM") / 2**20,
        "update_s": seconds,
    }


def run_row(family: str, setting: str, minibatch: int, tiny: bool) -> dict:
    """:func:`measure` in a fresh process (resident-memory peaks are per process)."""
    cmd = [sys.executable, "-m", "lerobot_pirl.bench.cpu_sizing", "--row", f"{family}:{setting}:{minibatch}"]
    proc = subprocess.run(cmd + (["--tiny"] if tiny else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def extrapolate(points: list[dict], minibatch: int) -> tuple[float, float]:
    """Per-sample activation GiB and the peak GiB at ``minibatch``: the least-squares line through the
    measured (minibatch, peak) points. Two points give their slope; more points average out the
    allocator-sized steps of resident memory that make a one-sample difference unreliable."""
    if len({p["minibatch"] for p in points}) < 2:
        raise ValueError(
            f"extrapolating needs two or more minibatch sizes, got {[p['minibatch'] for p in points]}"
        )
    slope, intercept = np.polyfit([p["minibatch"] for p in points], [p["peak_gib"] for p in points], 1)
    return float(slope), float(intercept + slope * minibatch)


def _key(row: dict) -> tuple:
    return row["model"], row["setting"], row["minibatch"]


def load_rows(path: Path) -> list[dict]:
    """The measurements stored in ``path`` (``[]`` when it does not exist yet)."""
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())["rows"]
        for row in rows:
            _key(row)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: expected a cpu_sizing results file ({{'rows': [{{'model', 'setting', 'minibatch', ...}}]}}): {err}"
        ) from err
    return rows


def save_row(path: Path, row: dict) -> list[dict]:
    """Add one measurement to ``path`` (replacing an earlier one of the same model, setting and minibatch),
    written atomically so an interrupted run never loses the rows already measured; returns every row."""
    rows = {_key(r): r for r in load_rows(path)}
    rows[_key(row)] = {**row, "date": time.strftime("%Y-%m-%d"), "machine": _machine()}
    ordered = sorted(rows.values(), key=_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"rows": ordered}, indent=2))
    os.replace(tmp, path)
    return ordered


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def table(rows: list[dict], recipe_minibatch: int, ranks: tuple[int, ...]) -> str:
    """One line per (model, setting): the measured figures and the extrapolated peaks."""
    ddp = " | ".join(f"DDP x{n} (M / {n})" for n in ranks)
    lines = [
        f"| model | setting | params (trainable) | weights GiB | peak GiB (m) | update s (m) | GiB per sample "
        f"| peak at M={recipe_minibatch} | {ddp} |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(ranks),
    ]
    for key in dict.fromkeys((r["model"], r["setting"]) for r in rows):
        pair = sorted((r for r in rows if (r["model"], r["setting"]) == key), key=lambda r: r["minibatch"])
        small = pair[0]
        if len(pair) > 1:
            slope, full = extrapolate(pair, recipe_minibatch)
            per_rank = [extrapolate(pair, max(recipe_minibatch // n, 1))[1] for n in ranks]
            extrapolated = f"{slope:.3f} | {full:.1f} | " + " | ".join(f"{v:.1f}" for v in per_rank)
        else:  # one minibatch size: no slope to extrapolate along
            extrapolated = " | ".join("-" for _ in range(2 + len(ranks)))
        label = key[1] + (f" r{LORA_RANK}" if key[1] == "lora" else "")
        lines.append(
            f"| {key[0]} | {label} | {small['params'] / 1e9:.2f}B ({small['trainable'] / 1e6:.0f}M) "
            f"| {small['weights_gib']:.1f} | "
            + " / ".join(f"{r['peak_gib']:.1f} ({r['minibatch']})" for r in pair)
            + " | "
            + " / ".join(f"{r['update_s']:.0f} ({r['minibatch']})" for r in pair)
            + f" | {extrapolated} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--setting", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--minibatch", nargs="*", type=int, default=[1, 2], help="two or more minibatch sizes")
    p.add_argument(
        "--recipe_minibatch", type=int, default=128, help="M: the LIBERO Flow-SDE recipes' minibatch"
    )
    p.add_argument(
        "--ranks", nargs="*", type=int, default=[2, 4, 8], help="DDP process counts to extrapolate"
    )
    p.add_argument("--tiny", action="store_true", help="the tests' tiny models (a source checkout)")
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="JSON file that keeps every measurement (added row by row; the table covers all its rows)",
    )
    p.add_argument(
        "--table", action="store_true", help="only print the table of the rows in --results (measure nothing)"
    )
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = p.parse_args(argv)
    if args.row:
        family, setting, minibatch = args.row.split(":")
        with tiny_models(args.tiny):
            print(json.dumps(measure(family, setting, int(minibatch), tiny=args.tiny)))
        return
    if args.table and args.results is None:
        p.error("--table needs --results")
    rows = load_rows(args.results) if args.results else []
    for family in [] if args.table else args.model:
        for setting in args.setting:
            for m in sorted(set(args.minibatch)):
                row = run_row(family, setting, m, args.tiny)
                print(f"done: {json.dumps(row)}", file=sys.stderr, flush=True)
                rows = save_row(args.results, row) if args.results else [*rows, row]
    print(f"\nπRL update memory on the CPU, torch {torch.__version__}\n")
    print(table(rows, args.recipe_minibatch, tuple(args.ranks)))


if __name__ == "__main__":
    main()
