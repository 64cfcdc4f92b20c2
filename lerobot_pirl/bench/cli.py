"""``python -m lerobot_pirl.bench`` (``make demo``, ``make bench``): run tasks through every stage and
report each as a row of ``benchmarks/results.json``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from lerobot_pirl.bench.report import (
    RunResult,
    merge_results,
    plot_curve,
    plot_env_split,
    plot_method_comparisons,
    plot_mode_comparisons,
    plot_per_task,
    plot_task_curves,
    write_results,
)
from lerobot_pirl.bench.setups import (
    ALGORITHMS,
    BENCH_TASKS,
    DEFAULT_TASK,
    MIX_ALLOCATIONS,
    MODELS,
    MODES,
    NOISE_METHODS,
    TaskSetup,
    mixed_task_names,
    task_setup,
)
from lerobot_pirl.bench.stages import (
    MIX_REBALANCE_EVERY,
    MIX_VALIDATION_EPISODES,
    REPO,
    RunOptions,
    collect_stage,
    eval_stage,
    mix_envs_total,
    noise_lowered,
    raw_rate_stage,
    recipe_path,
    resume_point,
    reuse_or_clear_sft,
    reward_type,
    rl_stage,
    sac_budget,
    sac_stage,
    sft_stage,
    task_dirname,
)
from lerobot_pirl.runtime.rebalance import allocate_envs
from lerobot_pirl.seeds import EVAL_PROTOCOL, VALIDATION


def run_task(task: str, method: str, out: Path, setup: TaskSetup, opts: RunOptions) -> RunResult:
    """Demos -> SFT -> SFT evaluation -> πRL -> final evaluation and plot, for one task and method.
    Demos, SFT and its evaluation are reused by the task's other method (and later runs) when the
    setup that made them is unchanged."""
    t0 = time.time()
    model = opts.model
    root = out / task_dirname(task) if model.name == "flow_mlp" else out / model.name / task_dirname(task)
    sac = opts.algorithm == "sac"
    name = run_name(method, opts)
    run_dir = root / name
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    announce(f"{task} / {model.name} / {name}", setup, opts)
    reuse_or_clear_sft(root, setup)
    demos = collect_stage(task, setup, root, logs, model)
    sft = sft_stage(task, setup, root, demos, logs, model)
    sft_eval = eval_stage(sft, task, setup, opts.eval_episodes, root / "sft_eval.json", opts.eval_seed, model)
    lo, hi = sft_eval["ci95"]
    print(f"   SFT success {sft_eval['success_rate']:.3f} (95% CI {lo:.2f}-{hi:.2f})")
    if opts.mix_envs in ("failure", "adaptive") and mixed_task_names(task) and not sac:
        opts = dataclasses.replace(opts, env_counts=tuple(mix_env_counts(task, setup, sft, root, model)))
    resumed = run_resume_point(run_dir, sac) if opts.resume else None
    trained_before = resumed[1] if resumed else 0.0  # RL seconds of the interrupted invocation
    raw_before = raw_rate_stage(task, setup)
    t_rl = time.time()
    records, final, title = train_stage(task, method, setup, sft, demos, run_dir, opts)
    rl_wall = time.time() - t_rl + trained_before
    # The simulator's limit, measured before and after the run with the cores otherwise idle: whatever else
    # the machine does can only slow a measurement down, so the higher one is the closer to the limit.
    raw_rate = max(raw_before, raw_rate_stage(task, setup))
    print(
        f"   raw simulator rate: {raw_rate:.0f} env steps/s (random actions, {os.cpu_count()} worker processes; "
        f"the higher of {raw_before:.0f} before and the rate after the run)"
    )
    plot = run_dir / "success_vs_env_steps.png"
    plot_curve(records, sft_eval, final, title, plot)
    env_steps = int(max((r["env_steps"] for r in records), default=0))
    train_rate = env_steps / max(rl_wall, 1e-9)
    result = RunResult(
        task=task,
        noise_method="-" if sac else method,
        method=opts.algorithm,
        raw_env_steps_per_s=round(raw_rate, 1),
        train_env_steps_per_s=round(train_rate, 1),
        sim_fraction=round(train_rate / raw_rate, 3),
        time_shares=time_shares(records),
        model=model.name,
        mode=opts.mode,
        demos=setup.demos,
        demo_action_noise=setup.action_noise,
        demo_noise_lowered=noise_lowered(root),
        sft_success=sft_eval["success_rate"],
        sft_ci95=list(sft_eval["ci95"]),
        rl_success=final["success_rate"],
        rl_ci95=list(final["ci95"]),
        eval_episodes=final["episodes"],
        env_steps=env_steps,
        updates=int(max((r.get("update", 0) for r in records if r["kind"] == "update"), default=0)),
        wall_s=round(time.time() - t0 + trained_before, 1),
        rl_wall_s=round(rl_wall, 1),
        plot=str(plot),
        curve=[
            {"env_steps": r["env_steps"], "eval_success": r["eval_success_rate"]}
            for r in records
            if r["kind"] == "eval"
        ],
        per_task=per_task_results(sft_eval, final),
        env_allocation=opts.mix_envs if mixed_task_names(task) else "even",
        envs_per_task=dict(zip(mixed_task_names(task), opts.env_counts, strict=True))
        if opts.env_counts
        else {},
        resumed_from_update=resumed[0] if resumed else None,
        reward_type=reward_type(task, method, opts),
        rl_updates_budget=update_budget(task, setup),
    )
    report_row(result, records, run_dir)
    return result


def update_budget(task: str, setup: TaskSetup) -> int | None:
    """The πRL updates a run asked for when they are not the task's own budget (a mix: the rule's), else None."""
    return None if setup.rl_updates == task_setup(task).rl_updates else setup.rl_updates


def run_resume_point(run_dir: Path, sac: bool) -> tuple[int, float] | None:
    """Where the RL stage of ``run_dir`` continues (the update / SAC training step and the seconds trained
    of its last checkpoint); None when it starts afresh."""
    from lerobot_pirl.bench.sac_checkpoint import sac_resume_point

    return sac_resume_point(run_dir / "sac") if sac else resume_point(run_dir / "rl")


def run_name(method: str, opts: RunOptions) -> str:
    """The run's folder name: the noise method (or "sac"), then any non-default mode and algorithm."""
    if opts.algorithm == "sac":
        return "sac"
    name = method + ("" if opts.mode == "online" else f"_{opts.mode}")
    return name + ("" if opts.algorithm == "ppo" else f"_{opts.algorithm}")


def announce(label: str, setup: TaskSetup, opts: RunOptions) -> None:
    """One line saying what the run is about to do: demos, SFT steps and the RL budget."""
    budget = (
        f"{opts.sac.get('env_steps') or sac_budget(setup):,} SAC env steps"
        if opts.algorithm == "sac"
        else f"{setup.rl_updates} πRL updates"
    )
    print(
        f"== {label}: {setup.demos} demos (action noise {setup.action_noise}), "
        f"{setup.sft_steps} SFT steps, {budget}"
    )


def report_row(result: RunResult, records: list[dict], run_dir: Path) -> None:
    """A finished row's per-task plots (a mix) and its summary line."""
    if result.per_task:
        plot_per_task(result, run_dir / "per_task_success.png")
        plot_task_curves(
            records, f"{result.task}: held-out success per task during πRL", run_dir / "per_task_curves.png"
        )
        plot_env_split(records, f"{result.task}: envs per task during πRL", run_dir / "env_split.png")
    print(
        f"   SFT {result.sft_success:.3f} -> πRL {result.rl_success:.3f} | {result.env_steps} env steps | "
        f"{result.updates} updates | RL {result.rl_wall_s:.0f}s, total {result.wall_s:.0f}s | "
        f"{result.train_env_steps_per_s:.0f} env steps/s = {result.sim_fraction:.2f} of the raw simulator "
        f"| plot {result.plot}"
    )


def mix_env_counts(task: str, setup: TaskSetup, sft: Path, root: Path, model) -> list[int]:
    """A mix's envs per task by SFT failure (``--mix_envs failure``): the SFT checkpoint evaluated on the
    validation seeds (never the held-out ones; cached in ``root``), then :func:`allocate_envs`."""
    tasks = mixed_task_names(task)
    val = eval_stage(
        sft, task, setup, MIX_VALIDATION_EPISODES, root / "sft_validation_eval.json", VALIDATION.start, model
    )
    rates = [val["tasks"][t]["success_rate"] for t in tasks]
    counts = allocate_envs([1.0 - r for r in rates], mix_envs_total(len(tasks)))
    print(
        "   envs per task by SFT failure on validation seeds: "
        + ", ".join(f"{t} {c} ({r:.2f})" for t, c, r in zip(tasks, counts, rates, strict=True))
    )
    return counts


def per_task_results(sft_eval: dict, final: dict) -> dict:
    """A multi-task row's per-task held-out success before and after RL, with their intervals
    (``{}`` for one task)."""
    return {
        task: {
            "sft_success": sft_eval["tasks"][task]["success_rate"],
            "sft_ci95": list(sft_eval["tasks"][task]["ci95"]),
            "rl_success": report["success_rate"],
            "rl_ci95": list(report["ci95"]),
            "episodes": report["episodes"],
        }
        for task, report in final.get("tasks", {}).items()
        if task in sft_eval.get("tasks", {})
    }


def train_stage(
    task: str, method: str, setup: TaskSetup, sft: Path, demos: Path, run_dir: Path, opts: RunOptions
) -> tuple[list[dict], dict, str]:
    """The RL stage of a row (πRL from the SFT checkpoint, or SAC from scratch with the demos) and its
    final held-out evaluation; returns the run's records, that evaluation and the plot's title."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if opts.algorithm == "sac":
        records, final = sac_stage(task, setup, demos, run_dir, opts)
        return records, final, f"{task}, LeRobot SAC from scratch with the {setup.demos} demos"
    records = rl_stage(task, setup, method, sft, run_dir, opts, demos)
    final_ckpt = run_dir / "rl" / "checkpoints" / "last" / "pretrained_model"
    final = eval_stage(
        final_ckpt, task, setup, opts.eval_episodes, run_dir / "final_eval.json", opts.eval_seed, opts.model
    )
    return records, final, f"{task}, {opts.model.name} + πRL ({opts.algorithm}, {method}, {opts.mode})"


def time_shares(records: list[dict]) -> dict:
    """Where the run's time went, as shares: the πRL actors' phases (``time_actor_*_s`` of the update
    records) or SAC's acting / env stepping / learning (``time_*_s``, running totals)."""
    updates = [r for r in records if r.get("kind") == "update"]
    if not updates:
        return {}
    if "time_actor_env_s" in updates[-1]:
        totals = {
            k[len("time_actor_") : -2]: sum(r.get(k, 0.0) for r in updates)
            for k in updates[-1]
            if k.startswith("time_actor_") and k.endswith("_s")
        }
    else:
        totals = {
            k[len("time_") : -2]: updates[-1][k]
            for k in ("time_act_s", "time_env_s", "time_learn_s")
            if k in updates[-1]
        }
    total = sum(totals.values())
    return {k: round(v / total, 3) for k, v in totals.items()} if total > 0 else {}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Few-shot MetaWorld on a CPU: demos -> SFT -> πRL -> held-out eval"
    )
    p.add_argument(
        "--demo", action="store_true", help=f"the embedded default: {DEFAULT_TASK}, flow_sde, outputs/demo"
    )
    p.add_argument(
        "--task",
        nargs="*",
        default=None,
        help="MetaWorld v3 task names (default: the five bench tasks); MT10, MT50 or names joined by commas "
        "for one multi-task policy on the mix (evaluated per task)",
    )
    add_mix_arguments(p)
    p.add_argument("--noise_method", nargs="*", default=list(NOISE_METHODS), choices=list(NOISE_METHODS))
    p.add_argument(
        "--algorithm",
        nargs="*",
        default=["ppo"],
        choices=list(ALGORITHMS),
        help="ppo / grpo: πRL (recipes/*_grpo.json for grpo); sac: LeRobot's SAC from scratch with the demos "
        "in its offline buffer, the same env-step budget (once per task: it has no noise method)",
    )
    p.add_argument(
        "--model",
        default="flow_mlp",
        choices=list(MODELS),
        help="the policy: flow_mlp (state) or smolvla_tiny (camera image + instruction + state)",
    )
    p.add_argument(
        "--mode",
        default="online",
        choices=list(MODES),
        help="online: πRL alone; hybrid: πRL + the demos' flow-matching loss (recipes/*_hybrid.json)",
    )
    p.add_argument("--out", default=None, help="output folder (default outputs/bench, or outputs/demo)")
    p.add_argument(
        "--results",
        default=None,
        help="results JSON, updated row by row (default benchmarks/results.json, results_mt.json for a "
        "multi-task mix; none for --demo)",
    )
    p.add_argument("--demos", type=int, default=None, help="override the per-task number of demos")
    p.add_argument("--action_noise", type=float, default=None, help="override the demos' action noise")
    p.add_argument("--sft_steps", type=int, default=None)
    p.add_argument(
        "--sft_workers",
        type=int,
        default=None,
        help="lerobot-train's data-loading processes (0; 2: ~1.7x faster MT50 SFT, another checkpoint)",
    )
    p.add_argument("--rl_updates", type=int, default=None)
    p.add_argument(
        "--eval_episodes",
        type=int,
        default=100,
        help="held-out episodes of every evaluation: SFT, during training and final",
    )
    p.add_argument(
        "--eval_every", type=int, default=10, help="policy versions between held-out evals during RL"
    )
    p.add_argument(
        "--eval_seed",
        type=int,
        default=EVAL_PROTOCOL.first_seed,
        help=f"first evaluation seed; choose setups on validation seeds ({VALIDATION.start}), report on the default",
    )
    add_run_control_arguments(p)
    add_sac_arguments(p)
    return p


def add_run_control_arguments(p: argparse.ArgumentParser) -> None:
    """The wall-time cap, resuming an interrupted πRL or SAC run, and extra learner / actor overrides."""
    p.add_argument("--timeout_min", type=float, default=30.0, help="wall-time cap of one πRL / SAC run")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a πRL or SAC run an earlier invocation left unfinished (same command and --out) from its "
        "last checkpoint; the wall-time cap counts the time it already trained (no checkpoint: start afresh)",
    )
    p.add_argument(
        "--rl_arg",
        action="append",
        default=[],
        help="extra learner/actor override, e.g. --rl_arg=--algorithm.actor_lr=1e-5 (repeatable)",
    )


def add_mix_arguments(p: argparse.ArgumentParser) -> None:
    """The knobs of multi-task mixes and of the evaluations during RL."""
    p.add_argument(
        "--train_eval_episodes",
        type=int,
        default=None,
        help="held-out episodes (per task of a mix) of the evaluations during RL (default: --eval_episodes)",
    )
    p.add_argument(
        "--mix_envs",
        default="even",
        choices=list(MIX_ALLOCATIONS),
        help="a multi-task mix's envs per task: even; failure (one each, the rest by the SFT's failure rate "
        f"on {MIX_VALIDATION_EPISODES} validation episodes per task); adaptive (failure, then re-split every "
        f"{MIX_REBALANCE_EVERY} policy versions by the training episodes' failure rate)",
    )


def add_sac_arguments(p: argparse.ArgumentParser) -> None:
    """The SAC baseline's knobs (defaults: :class:`lerobot_pirl.bench.sac.SACSettings`)."""
    p.add_argument("--sac_lr", type=float, default=None, help="SAC: actor / critic / temperature lr (3e-4)")
    p.add_argument(
        "--sac_utd_ratio", type=int, default=None, help="SAC: critic updates per training step (1)"
    )
    p.add_argument("--sac_temperature_init", type=float, default=None, help="SAC: initial temperature (1.0)")
    p.add_argument(
        "--sac_target_entropy",
        type=float,
        default=None,
        help="SAC: entropy the temperature is tuned towards (-action_dim / 2 = -2)",
    )
    p.add_argument("--sac_online_ratio", type=float, default=None, help="SAC: online share of a batch (0.5)")
    p.add_argument(
        "--sac_updates_per_env_step",
        type=float,
        default=None,
        help="SAC: training steps per env step (0.0625: one per vector step of 16 envs)",
    )
    p.add_argument(
        "--sac_env_steps",
        type=int,
        default=None,
        help="SAC: env-step budget (default: the task's πRL budget)",
    )


def run_benchmark(args: argparse.Namespace, command: str) -> list[RunResult]:
    """Every (method, task) of the invocation; the results file is updated after each run, so a long
    benchmark leaves partial results."""
    tasks = [DEFAULT_TASK] if args.demo else (args.task or list(BENCH_TASKS))
    both = args.noise_method == list(NOISE_METHODS)
    methods = ["flow_sde"] if args.demo and both else args.noise_method
    out = Path(args.out or ("outputs/demo" if args.demo else "outputs/bench"))
    # Multi-task rows have their own file (they take no part in the five-task means).
    mixes = any(mixed_task_names(t) for t in tasks)
    default_results = (
        None if args.demo else REPO / "benchmarks" / ("results_mt.json" if mixes else "results.json")
    )
    results_path = Path(args.results) if args.results else default_results
    opts = RunOptions(
        eval_episodes=args.eval_episodes,
        eval_every=args.eval_every,
        timeout_s=args.timeout_min * 60,
        eval_seed=args.eval_seed,
        extra_args=tuple(args.rl_arg),
        model=MODELS[args.model],
        mode=args.mode,
        train_eval_episodes=args.train_eval_episodes,
        mix_envs=args.mix_envs,
        resume=args.resume,
    )
    sac = {
        k[len("sac_") :]: getattr(args, k)
        for k in (
            "sac_lr",
            "sac_utd_ratio",
            "sac_temperature_init",
            "sac_target_entropy",
            "sac_online_ratio",
            "sac_updates_per_env_step",
            "sac_env_steps",
        )
        if getattr(args, k) is not None
    }
    runs = [(a, m) for a in args.algorithm for m in (methods[:1] if a == "sac" else methods)]
    results = []
    for algorithm, method in runs:
        opts = dataclasses.replace(opts, algorithm=algorithm, sac=sac)
        for task in tasks:
            overrides = {
                k: getattr(args, k)
                for k in ("demos", "action_noise", "sft_steps", "sft_workers", "rl_updates")
            }
            if overrides["sft_steps"] is None:
                overrides["sft_steps"] = opts.model.sft_steps
            result = run_task(task, method, out, task_setup(task, **overrides), opts)
            result.command = command
            results.append(result)
            if results_path is not None:
                rows = merge_results([result], results_path)
                write_results(rows, results_path)
                plot_mode_comparisons(rows, results_path.parent / "images")
                plot_method_comparisons(rows, results_path.parent / "images")
    if results_path is not None:
        print(f"results: {results_path} and {results_path.with_suffix('.md')}")
    return results


def main(argv: list[str] | None = None) -> None:
    from lerobot_pirl.cli import run_cli

    args = parser().parse_args(argv)
    command = "python -m lerobot_pirl.bench " + " ".join(argv if argv is not None else sys.argv[1:])

    def run() -> None:
        results = run_benchmark(args, command)
        print("\nsummary:")
        for r in results:
            print(
                f"  {r.task:18s} {r.label:28s} SFT {r.sft_success:.2f} -> πRL {r.rl_success:.2f}  "
                f"({r.env_steps:,} env steps, {r.rl_wall_s / 60:.1f} min RL, {r.wall_s / 60:.1f} min total)  {r.plot}"
            )

    def startup():
        mixed = [t for t in (args.task or []) if mixed_task_names(t)]
        one_each = [t for t in mixed if mix_envs_total(len(mixed_task_names(t))) == len(mixed_task_names(t))]
        if args.mix_envs == "adaptive" and one_each:
            raise ValueError(
                f"--mix_envs adaptive: {', '.join(one_each)} get one env per task, which leaves none to move "
                "(every task keeps one); use --mix_envs even"
            )
        for algorithm in args.algorithm:
            if algorithm == "sac":
                if args.model != "flow_mlp" or args.mode != "online" or mixed:
                    raise ValueError(
                        "--algorithm sac: SAC runs on the state (flow_mlp rows) of one task, online mode only"
                    )
                continue
            for method in args.noise_method:
                recipe_path(method, args.model, args.mode, algorithm, multitask=bool(mixed))
        return run

    run_cli(startup)
