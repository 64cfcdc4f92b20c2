"""The benchmark's outputs: a result row per task, policy and noise method, the results file (JSON and its
markdown table, updated row by row) and the success-vs-env-steps plot."""

from __future__ import annotations

import json
import os
import platform
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lerobot_pirl.bench.setups import (
    ALGORITHMS,
    BENCH_TASKS,
    MIX_ALLOCATIONS,
    MODELS,
    MODES,
    NOISE_METHODS,
    task_setup,
)
from lerobot_pirl.envs.metaworld import mixed_task_names


@dataclass
class RunResult:
    """One row of the results: a task fine-tuned with one noise method."""

    task: str
    noise_method: str
    demos: int
    demo_action_noise: float
    sft_success: float
    sft_ci95: list[float]
    rl_success: float
    rl_ci95: list[float]
    eval_episodes: int
    env_steps: int
    updates: int
    wall_s: float
    rl_wall_s: float
    plot: str
    curve: list[dict] = field(default_factory=list)
    command: str = ""  # the bench command that produced this row
    model: str = "flow_mlp"  # the policy fine-tuned (a key of MODELS)
    mode: str = "online"  # "online" (πRL alone) or "hybrid" (πRL + the demos' flow-matching loss)
    method: str = "ppo"  # "ppo" / "grpo" (πRL's advantage estimator) or "sac" (LeRobot's SAC baseline)
    raw_env_steps_per_s: float | None = None  # the simulator alone on the same cores (random actions)
    train_env_steps_per_s: float | None = None  # env steps / RL wall time (start-up and evaluations included)
    sim_fraction: float | None = None  # train_env_steps_per_s / raw_env_steps_per_s
    time_shares: dict = field(default_factory=dict)  # the actors' time per phase over the run, as shares
    # A multi-task row (task MT10, MT50 or a comma-separated mix): each task's SFT and RL held-out success
    # with their intervals; sft_success / rl_success are then the averages over tasks.
    per_task: dict = field(default_factory=dict)
    # How a mix's envs were shared among its tasks ("even", "failure" or "adaptive", the bench's --mix_envs)
    # and, when not evenly, each task's envs at the start.
    env_allocation: str = "even"
    envs_per_task: dict = field(default_factory=dict)
    # Tasks whose noisy expert failed too often at demo_action_noise, with the lower noise their demos got.
    demo_noise_lowered: dict = field(default_factory=dict)
    # The update of the checkpoint the πRL run was continued from by the bench's --resume (None: one
    # uninterrupted run); its wall times then add the interrupted invocation's πRL time.
    resumed_from_update: int | None = None
    # The env's reward during RL (pirl_metaworld's env.reward_type: "sparse", the paper's, or "progress").
    reward_type: str = "sparse"
    # The πRL updates asked for when not the task's own budget (the bench's --rl_updates); None: its budget.
    rl_updates_budget: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str, str, int, str, str, int | None]:
        """What a row is the result of: (policy, mode, method, noise method, task, demos, env allocation,
        reward, update budget when not the task's)."""
        return (
            self.model,
            self.mode,
            self.method,
            self.noise_method,
            self.task,
            self.demos,
            self.env_allocation,
            self.reward_type,
            self.rl_updates_budget,
        )

    @property
    def standard(self) -> bool:
        """Whether the row uses its task's standard number of demos."""
        return self.demos == task_setup(self.task).demos

    @property
    def in_means(self) -> bool:
        """Whether the row counts in a mean over tasks: one task, its standard demos and its own update
        budget (a mix's row is already a mean over its tasks)."""
        return self.standard and self.rl_updates_budget is None and not mixed_task_names(self.task)

    @property
    def method_text(self) -> str:
        """The method and mode, e.g. ``flow_sde``, ``grpo flow_sde``, ``flow_sde hybrid``, ``LeRobot SAC``."""
        text = self.noise_method if self.mode == "online" else f"{self.noise_method} {self.mode}"
        if self.method == "sac":
            return "LeRobot SAC"
        return text if self.method == "ppo" else f"{self.method} {text}"

    @property
    def column(self) -> str:
        """What README's results table shows a row under: the method, mode and policy, e.g. ``flow_sde``,
        ``grpo flow_sde``, ``flow_sde (smolvla_tiny)``."""
        return self.method_text if self.model == "flow_mlp" else f"{self.method_text} ({self.model})"

    @property
    def setting(self) -> list[str]:
        """How the row's task setting departs from the standard: its demos, a mix's env allocation, its
        reward, its update budget."""
        extras = [] if self.standard else [_count(self.demos, "demo")]
        return extras + _variant_texts(self.env_allocation, self.reward_type, self.rl_updates_budget)

    @property
    def label(self) -> str:
        """The method and setting in one name, e.g. ``flow_sde``, ``flow_sde hybrid``,
        ``flow_sde (smolvla_tiny)``, ``flow_sde hybrid (1 demo)``."""
        extras = ([self.model] if self.model != "flow_mlp" else []) + self.setting
        return f"{self.method_text} ({', '.join(extras)})" if extras else self.method_text


def plot_curve(records: list[dict], sft: dict, final: dict, title: str, path: Path) -> None:
    """Success vs env steps: training episodes, the actor's held-out evaluations of the πRL policy
    during training, and the SFT checkpoint and the final policy with their 95 % intervals. Every
    held-out point is measured with one protocol (same seeds, batches and ODE noise; the same episodes unless
    the bench's ``--train_eval_episodes`` made the training evaluations' fewer); the SFT point is the
    checkpoint as trained (its own number of denoising steps), the πRL points deploy with the recipe's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = [r for r in records if r["kind"] == "update" and r.get("episodes", 0) > 0]
    evals = [r for r in records if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if updates:
        ax.plot(
            [r["env_steps"] for r in updates],
            [r["episode_success"] for r in updates],
            color="tab:orange",
            alpha=0.8,
            lw=1.5,
            label="training episodes (stochastic rollouts)",
        )
    if evals:
        ax.plot(
            [r["env_steps"] for r in evals],
            [r["eval_success_rate"] for r in evals],
            "o-",
            color="tab:blue",
            lw=2,
            label="πRL policy, held-out eval during training (deterministic ODE)",
        )
    last_x = records[-1]["env_steps"] if records else 0
    points = (sft, final)
    # Wilson bounds can sit a rounding error inside the point estimate at 0 or 1: clamp the bars at 0.
    low = [max(p["success_rate"] - p["ci95"][0], 0.0) for p in points]
    high = [max(p["ci95"][1] - p["success_rate"], 0.0) for p in points]
    ax.errorbar(
        [0, last_x],
        [p["success_rate"] for p in points],
        yerr=[low, high],
        fmt="s",
        color="black",
        capsize=4,
        label=f"SFT checkpoint as trained / final πRL policy, {final['episodes']} episodes (95% CI)",
    )
    _finish(fig, ax, "success rate", title, path)


def plot_per_task(result: RunResult, path: Path) -> None:
    """A multi-task row's held-out success per task, SFT next to after RL (95 % intervals), with both
    averages as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(result.per_task)
    y = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(7, 2.0 + 0.28 * len(tasks)), dpi=120, layout="constrained")
    for offset, stage, color, mean in (
        (0.2, "sft", "tab:gray", result.sft_success),
        (-0.2, "rl", "tab:blue", result.rl_success),
    ):
        rates = np.array([result.per_task[t][f"{stage}_success"] for t in tasks])
        cis = np.array([result.per_task[t][f"{stage}_ci95"] for t in tasks]).reshape(-1, 2)
        err = np.clip(np.stack([rates - cis[:, 0], cis[:, 1] - rates]), 0.0, None)
        name = "SFT" if stage == "sft" else "after πRL"
        ax.barh(
            y + offset, rates, height=0.4, color=color, xerr=err, capsize=2, label=f"{name} (mean {mean:.2f})"
        )
        ax.axvline(mean, color=color, ls="--", lw=1)
    ax.set_yticks(y, tasks, fontsize=7 if len(tasks) > 20 else 9)
    ax.invert_yaxis()
    ax.margins(y=min(0.05, 1.0 / len(tasks)))  # about one bar of space above and below, not 5 % of 50 tasks
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(f"held-out success ({result.per_task[tasks[0]]['episodes']} episodes per task)")
    ax.set_title(
        f"{result.task}: one {result.model} policy, {result.demos} demos per task,\n"
        f"{result.env_steps:,} env steps of πRL",
        fontsize=10,
    )
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)  # under the axes, whatever their height
    ax.grid(alpha=0.3, axis="x")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_task_curves(records: list[dict], title: str, path: Path) -> None:
    """A multi-task run's held-out success of every task (``eval_success_rate/<task>``) and their average
    against env steps, from the actor's evaluations during training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [r for r in records if r["kind"] == "eval"]
    prefix = "eval_success_rate/"
    tasks = sorted({k[len(prefix) :] for r in evals for k in r if k.startswith(prefix)})
    fig, ax = plt.subplots(figsize=(9.5, 4.6), dpi=120)
    many = len(tasks) > 10
    colors = [plt.get_cmap("viridis")(i / len(tasks)) if many else f"C{i}" for i in range(len(tasks))]
    for i, task in enumerate(tasks):
        points = [(r["env_steps"], r[prefix + task]) for r in evals if prefix + task in r]
        label = task if len(tasks) <= 12 else None  # MT50: a 50-line legend would hide the curves
        ax.plot(*zip(*points, strict=True), lw=1, alpha=0.8, color=colors[i], label=label)
    ax.plot(
        [r["env_steps"] for r in evals],
        [r["eval_success_rate"] for r in evals],
        "k-o",
        lw=2.5,
        label="average",
    )
    _finish(fig, ax, "held-out success", title, path, legend_outside=True)


def plot_env_split(records: list[dict], title: str, path: Path) -> bool:
    """A multi-task run's envs per task (``envs/<task>``, logged when the actor re-splits them) against env
    steps, stacked; ``False`` (nothing written) when the run never re-split its envs."""
    prefix = "envs/"
    updates = [r for r in records if r["kind"] == "update" and any(k.startswith(prefix) for k in r)]
    if not updates:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({k[len(prefix) :] for r in updates for k in r if k.startswith(prefix)})
    counts = [[float(r.get(prefix + t, 0.0)) for r in updates] for t in tasks]
    fig, ax = plt.subplots(figsize=(9.5, 4.6), dpi=120)
    many = len(tasks) > 10
    colors = [plt.get_cmap("viridis")(i / len(tasks)) if many else f"C{i}" for i in range(len(tasks))]
    labels = tasks if len(tasks) <= 12 else None
    ax.stackplot([r["env_steps"] for r in updates], counts, labels=labels, colors=colors, step="post")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("envs")
    ax.set_title(textwrap.fill(title, 60))
    if labels:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _finish(fig, ax, ylabel: str, title: str, path: Path, legend_outside: bool = False) -> None:
    """Axes, grid, title and legend (inside, or right of the axes) of a success-vs-env-steps figure; written
    to ``path`` and closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.set_title(textwrap.fill(title, 60))  # a long title (every method of a task) on two lines
    if legend_outside:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    else:
        ax.legend(loc="best", fontsize=8)  # a curve along 0 or 1 keeps its legend out of the way
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_mode_comparisons(results: list[RunResult], folder: Path) -> list[Path]:
    """For every task run in both modes (same policy, noise method, demos, reward and, for a mix, envs per task): one
    PNG with the online and the hybrid held-out success against env steps (evaluations during training, then
    the final one with its 95 % interval). Returns the files written."""
    by_case: dict[tuple, dict[str, RunResult]] = {}
    for r in results:
        if r.method == "ppo":
            case = (
                r.model,
                r.noise_method,
                r.task,
                r.demos,
                r.env_allocation,
                r.reward_type,
                r.rl_updates_budget,
            )
            by_case.setdefault(case, {})[r.mode] = r
    written = []
    for (model, method, task, demos, allocation, reward, budget), modes in by_case.items():
        if set(MODES) - set(modes):
            continue
        curves = [
            (modes[m], f"{m}: held-out eval during training, then final", c)
            for m, c in zip(MODES, ("tab:blue", "tab:green"), strict=True)
        ]
        title_envs = "".join(f", {text}" for text in _variant_texts(allocation, reward, budget))
        title = f"{task}, {model} + πRL ({method}), {demos} demos{title_envs}: online vs hybrid"
        file_envs = "" if allocation == "even" else f"_envs_by_{allocation}"
        file_envs += "" if reward == "sparse" else f"_{reward}"
        file_envs += "" if budget is None else f"_{budget}updates"
        path = folder / f"{task}_{model}_{method}_{demos}demos{file_envs}_online_vs_hybrid.png"
        written.append(_comparison_plot(curves, modes["online"].sft_success, title, path))
    return written


def _comparison_plot(curves: list[tuple], sft_success: float, title: str, path: Path) -> Path:
    """One PNG of several rows' held-out success against env steps (``curves``: row, label, color), each
    ending on its final evaluation with its 95 % interval, and the SFT checkpoint's success as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for r, label, color in curves:
        xs = [p["env_steps"] for p in r.curve] + [r.env_steps]
        ys = [p["eval_success"] for p in r.curve] + [r.rl_success]
        ax.plot(xs, ys, "o-", color=color, lw=2, label=label)
        err = [[max(r.rl_success - r.rl_ci95[0], 0.0)], [max(r.rl_ci95[1] - r.rl_success, 0.0)]]
        ax.errorbar([r.env_steps], [r.rl_success], yerr=err, fmt="s", color=color, capsize=4)
    ax.axhline(sft_success, color="black", ls=":", lw=1, label=f"SFT checkpoint ({sft_success:.2f})")
    _finish(fig, ax, "held-out success rate", title, path)
    return path


def _row_order(r: RunResult) -> tuple:
    model = list(MODELS).index(r.model) if r.model in MODELS else len(MODELS)
    mode = MODES.index(r.mode) if r.mode in MODES else len(MODES)
    method = NOISE_METHODS.index(r.noise_method) if r.noise_method in NOISE_METHODS else len(NOISE_METHODS)
    task = BENCH_TASKS.index(r.task) if r.task in BENCH_TASKS else len(BENCH_TASKS)
    algorithm = ALGORITHMS.index(r.method) if r.method in ALGORITHMS else len(ALGORITHMS)
    return (
        model,
        r.model,
        mode,
        r.mode,
        algorithm,
        r.method,
        method,
        r.noise_method,
        not r.standard,
        task,
        r.task,
        r.demos,
        *_variant_order(r),
    )


def _variant_order(r: RunResult) -> tuple[int, bool]:
    """A mix's env allocation in MIX_ALLOCATIONS' order, then the sparse reward before shaped ones."""
    allocation = MIX_ALLOCATIONS.index(r.env_allocation) if r.env_allocation in MIX_ALLOCATIONS else 99
    return allocation, r.reward_type != "sparse"


def merge_results(new: list[RunResult], path: Path) -> list[RunResult]:
    """The rows already in ``path`` (if any) with each (policy, mode, noise method, task, demos) of ``new``
    replaced."""
    rows: dict[tuple, RunResult] = {}
    if path.is_file():
        payload = json.loads(path.read_text())
        for d in payload.get("tasks", []):
            d.setdefault("command", payload.get("command", ""))
            known = {k: v for k, v in d.items() if k in RunResult.__dataclass_fields__}
            row = RunResult(**known)
            rows[row.key] = row
    for r in new:
        rows[r.key] = r
    return sorted(rows.values(), key=_row_order)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _allocation_text(env_allocation: str) -> str:
    if env_allocation == "adaptive":
        return "envs re-split by training failure"
    return f"envs by SFT {env_allocation}"


def _variant_texts(env_allocation: str, reward_type: str, budget: int | None = None) -> list[str]:
    """How a run departs from the even env split, the sparse reward and its task's update budget, e.g.
    ``["envs by SFT failure"]``."""
    texts = [_allocation_text(env_allocation)] if env_allocation != "even" else []
    texts += [f"{reward_type} reward"] if reward_type != "sparse" else []
    return texts + ([_count(budget, "update")] if budget is not None else [])


def _mode_text(mode: str, env_allocation: str, reward_type: str = "sparse", budget: int | None = None) -> str:
    return ", ".join([mode, *_variant_texts(env_allocation, reward_type, budget)])


def markdown_table(results: list[RunResult]) -> str:
    """The results as a markdown table, one row per task, policy, mode, noise method and number of demos,
    and a mean per policy, mode and method over the rows that count in means (``RunResult.in_means``)."""
    lines = [
        "| task | policy | mode | method | noise method | demos (noise) | SFT success [95% CI] | RL success [95% CI] "
        "| eval episodes | env steps | wall (RL / total) | env steps/s (share of raw sim) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = (
            f"{r.train_env_steps_per_s:.0f} ({r.sim_fraction:.2f} of {r.raw_env_steps_per_s:.0f})"
            if r.sim_fraction is not None
            else ""
        )
        lines.append(
            f"| {r.task} | {r.model} | {_mode_text(r.mode, r.env_allocation, r.reward_type, r.rl_updates_budget)} | {r.method} | {r.noise_method} | {r.demos} ({r.demo_action_noise:g}) "
            f"| {r.sft_success:.2f} [{r.sft_ci95[0]:.2f}, {r.sft_ci95[1]:.2f}] "
            f"| {r.rl_success:.2f} [{r.rl_ci95[0]:.2f}, {r.rl_ci95[1]:.2f}] | {r.eval_episodes} | {r.env_steps:,} "
            f"| {r.rl_wall_s / 60:.1f} / {r.wall_s / 60:.1f} min | {rate} |"
        )
    # A mean per policy, mode, method, noise method, env split and reward over the rows that count in means.
    counted = [r for r in results if r.in_means]

    def case(r: RunResult) -> tuple:
        return (r.model, r.mode, r.method, r.noise_method, r.env_allocation, r.reward_type)

    for model, mode, algorithm, method, allocation, reward in dict.fromkeys(case(r) for r in counted):
        rows = [r for r in counted if case(r) == (model, mode, algorithm, method, allocation, reward)]
        mean_sft = sum(r.sft_success for r in rows) / len(rows)
        mean_rl = sum(r.rl_success for r in rows) / len(rows)
        lines.append(
            f"| **mean ({_count(len(rows), 'task')})** | {model} | {_mode_text(mode, allocation, reward)} | {algorithm} "
            f"| {method} | | {mean_sft:.2f} | {mean_rl:.2f} | | | | |"
        )
    return "\n".join(lines) + "\n"


def readme_table(results: list[RunResult]) -> str:
    """README's short results table: one line per task setting (a task, with its demos when not the
    standard and a mix's env allocation when not even), one column per method / mode / policy, each cell
    ``SFT -> πRL (env steps)``, and a last line with each column's mean over the rows that count in means
    with the even env split and the sparse reward."""
    columns = list(dict.fromkeys(r.column for r in sorted(results, key=_row_order)))

    def line_of(r: RunResult) -> str:
        return ", ".join([r.task, *r.setting])

    def line_order(r: RunResult) -> tuple:
        task = BENCH_TASKS.index(r.task) if r.task in BENCH_TASKS else len(BENCH_TASKS)
        return bool(r.per_task), bool(r.setting), task, r.task, r.demos, *_variant_order(r)

    cells: dict[str, dict[str, str]] = {}
    for r in sorted(results, key=line_order):
        steps = (
            f"{r.env_steps / 1e6:.2f}M" if round(r.env_steps / 1e3) >= 1000 else f"{r.env_steps / 1e3:.0f}k"
        )
        cell = f"{r.sft_success:.2f} -> {r.rl_success:.2f} ({steps})"
        cells.setdefault(line_of(r), {})[r.column] = cell
    means = {}
    for column in columns:
        mine = [r for r in results if r.column == column and r.in_means and not r.setting]
        if mine:
            sft = sum(r.sft_success for r in mine) / len(mine)
            rl = sum(r.rl_success for r in mine) / len(mine)
            means[column] = f"**{sft:.2f} -> {rl:.2f}** ({_count(len(mine), 'task')})"
    lines = ["| task | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in [*cells.items(), *([("**mean**", means)] if means else [])]:
        lines.append(f"| {name} | " + " | ".join(row.get(c, "") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def committed_results(folder: Path) -> list[RunResult]:
    """The rows README's results table shows: ``folder``'s single-task (``results.json``) and multi-task
    (``results_mt.json``) results."""
    return merge_results([], folder / "results.json") + merge_results([], folder / "results_mt.json")


def write_results(results: list[RunResult], path: Path) -> None:
    """``path`` (JSON: machine, date, one row per task and noise method) and its markdown table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "commands": list(dict.fromkeys(r.command for r in results if r.command)),
        "tasks": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(payload, indent=2))
    path.with_suffix(".md").write_text(markdown_table(results))


def methods_title(task: str, rows: list[RunResult]) -> str:
    """A method comparison's title, naming the methods its rows hold (e.g. ``push-v3: πRL PPO vs πRL GRPO,
    same demos and env steps``)."""
    names = {"ppo": "πRL PPO", "grpo": "πRL GRPO", "sac": "LeRobot SAC"}
    methods = dict.fromkeys(names.get(r.method, r.method) for r in rows)
    return f"{task}: {' vs '.join(methods)}, same demos and env steps"


def plot_method_comparisons(results: list[RunResult], folder: Path) -> list[Path]:
    """For every task with rows of more than one method (online mode, ``flow_mlp``, standard demos): one
    PNG with every method's held-out success against env steps on shared axes (evaluations during training,
    then the final one with its 95 % interval). Returns the files written."""
    by_task: dict[str, list[RunResult]] = {}
    for r in results:
        if r.mode == "online" and r.model == "flow_mlp" and r.standard:
            by_task.setdefault(r.task, []).append(r)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    written = []
    for task, rows in by_task.items():
        if len({r.method for r in rows}) < 2:
            continue
        curves = [(r, r.label, c) for r, c in zip(rows, colors, strict=False)]
        title = methods_title(task, rows)
        written.append(_comparison_plot(curves, rows[0].sft_success, title, folder / f"{task}_methods.png"))
    return written


if __name__ == "__main__":
    # README's results table from the committed results (single-task and multi-task rows).
    print(readme_table(committed_results(Path(__file__).resolve().parents[2] / "benchmarks")), end="")
