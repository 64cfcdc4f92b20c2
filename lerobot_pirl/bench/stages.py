"""The benchmark's stages, each a real LeRobot / lerobot-pirl program run as its own process:
demos (``lerobot-pirl-collect``), SFT (vanilla ``lerobot-train``), held-out evaluation, and πRL
(``lerobot_pirl.learner`` + ``lerobot_pirl.actor`` on loopback gRPC with a recipe from ``recipes/``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lerobot_pirl.bench.setups import MODELS, ModelSetup, TaskSetup, mixed_task_names
from lerobot_pirl.plot import read_metrics
from lerobot_pirl.seeds import EVAL_PROTOCOL

REPO = Path(__file__).resolve().parents[2]

# Envs an actor steps for a multi-task mix: the most envs per task that fit in MIX_ENVS, at least one each
# (MT10: 2 each, 20 envs; MT50: 1 each, 50 envs).
MIX_ENVS = 20
MIX_VALIDATION_EPISODES = 20
MIX_REBALANCE_EVERY = 20
# The demo collection's statistics, next to the demos (written by lerobot_pirl.collect --stats_out).
DEMO_STATS = "demos_stats.json"
# A πRL rollout of the flow_mlp recipes: chunk transitions, and env steps per chunk (the SAC budget's unit).
ROLLOUT_CHUNKS, CHUNK_STEPS = 1024, 5


@dataclass(frozen=True)
class RunOptions:
    """What a benchmark invocation sets for every task it runs."""

    eval_episodes: int  # held-out episodes of the SFT, in-training and final evaluations alike
    eval_every: int  # policy versions between the actor's held-out evaluations during RL
    timeout_s: float  # wall-time cap of one πRL run
    eval_seed: int = EVAL_PROTOCOL.first_seed  # first evaluation seed
    extra_args: tuple[str, ...] = ()  # extra learner / actor overrides
    model: ModelSetup = MODELS["flow_mlp"]  # the policy fine-tuned
    mode: str = "online"  # "online", or "hybrid": the SFT demos' flow-matching loss in every update
    algorithm: str = "ppo"  # "ppo", "grpo" (recipes/*_grpo.json) or "sac" (LeRobot's SAC, bench/sac.py)
    # Held-out episodes (per task of a mix) of the actor's evaluations during RL (None: eval_episodes).
    train_eval_episodes: int | None = None
    sac: dict = field(default_factory=dict)  # SACSettings overrides of a SAC run
    mix_envs: str = "even"  # a mix's envs per task: "even", "failure" or "adaptive" (see MIX_ALLOCATIONS)
    env_counts: tuple[int, ...] | None = None  # a mix's envs of each task (None: as many each)
    # Continue a πRL run stopped before its end from its last checkpoint, the wall-time cap counting the
    # time it already trained (False: every run starts afresh).
    resume: bool = False


def task_dirname(task: str) -> str:
    """A benchmark task as a folder / dataset name (the tasks of a comma-separated mix joined by "+")."""
    return task.replace(",", "+")


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(cmd: list[str], log: Path, desc: str) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env())
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"{desc} failed (exit {proc.returncode}); see {log}\n{tail}")


def reuse_or_clear_sft(root: Path, setup: TaskSetup) -> None:
    """Demos, SFT checkpoint and SFT evaluation are reused by later runs of the same task only when
    they were made with the same demo / SFT setup; otherwise they are removed and made again."""
    stamp = root / "sft_setup.json"
    wanted = setup.sft_fields()
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    for name in ("demos", DEMO_STATS, "sft", "sft_eval.json"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(wanted))


def collect_stage(task: str, setup: TaskSetup, root: Path, log_dir: Path, model: ModelSetup) -> Path:
    """Scripted-expert demos with noisy commands as a local LeRobotDataset (kept when present), with the
    camera image when the model reads one."""
    demos = root / "demos"
    if not (demos / "meta" / "info.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "lerobot_pirl.collect",
            f"--task={task}",
            f"--episodes={setup.demos}",
            f"--root={demos}",
            f"--episode_length={setup.episode_length}",
            f"--action_noise={setup.action_noise}",
            *(["--noise_gripper"] if setup.noise_gripper else []),
            *([f"--image_size={model.image_size}"] if model.image_size else []),
            f"--stats_out={root / DEMO_STATS}",
        ]
        _run(cmd, log_dir / "collect.log", "demo collection")
    return demos


def noise_lowered(root: Path) -> dict[str, float]:
    """The tasks whose demos were collected with less than the setup's noise (their expert failed too
    often at it), with the noise used; empty for demos collected before this was recorded."""
    path = root / DEMO_STATS
    return json.loads(path.read_text()).get("noise_lowered", {}) if path.is_file() else {}


def sft_stage(task: str, setup: TaskSetup, root: Path, demos: Path, log_dir: Path, model: ModelSetup) -> Path:
    """The model trained on the demos by vanilla ``lerobot-train`` (kept when present)."""
    out = root / "sft"
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    if not (ckpt / "model.safetensors").is_file():
        if out.exists():
            shutil.rmtree(out)
        cmd = [
            str(Path(sys.executable).parent / "lerobot-train"),
            *model.sft_args,
            *model.backbone(root),
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            f"--dataset.repo_id=local/{task_dirname(task)}",
            f"--dataset.root={demos}",
            f"--output_dir={out}",
            f"--steps={setup.sft_steps}",
            f"--batch_size={model.sft_batch_size}",
            f"--save_freq={setup.sft_steps}",
            "--log_freq=200",
            f"--num_workers={setup.sft_workers}",
            "--wandb.enable=false",
            "--seed=1000",
        ]
        _run(cmd, log_dir / "sft.log", "SFT (lerobot-train)")
    return ckpt


def eval_stage(
    policy_path: Path,
    task: str,
    setup: TaskSetup,
    episodes: int,
    cache: Path,
    eval_seed: int,
    model: ModelSetup,
) -> dict:
    """Held-out ODE evaluation of a checkpoint with the evaluation protocol (cached in ``cache``); for a
    multi-task mix, ``episodes`` per task and a report per task."""
    if cache.is_file():
        cached = json.loads(cache.read_text())
        per_task = cached.get("episodes_per_task", cached.get("episodes"))
        if cached.get("eval_seed") == eval_seed and per_task == episodes:
            return cached
    from lerobot_pirl.envs.metaworld import metaworld_env_config
    from lerobot_pirl.evaluate import evaluate_tasks, load_policy_for_eval

    policy, pre, post = load_policy_for_eval(str(policy_path))
    env_cfg = metaworld_env_config(
        task,
        num_envs=EVAL_PROTOCOL.num_envs,
        episode_length=setup.episode_length,
        eval_seed=eval_seed,
        image_size=model.image_size,
        camera_every=model.camera_every,
        env_workers=os.cpu_count() or 1,  # the same episodes as in one process, on every core
    )
    report = evaluate_tasks(policy, pre, post, env_cfg, episodes, progress=True)
    report["eval_seed"] = eval_seed
    report["episodes_per_task"] = episodes
    cache.write_text(json.dumps(report))
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe_path(
    method: str,
    model: str = "flow_mlp",
    mode: str = "online",
    algorithm: str = "ppo",
    multitask: bool = False,
) -> Path:
    """The benchmark's recipe of a model, noise method, mode and advantage estimator
    (``recipes/metaworld_<model>_<method>.json``, ``..._<method>_hybrid.json`` for the hybrid mode,
    ``..._<method>_grpo.json`` for GRPO; ``metaworld_mt_...`` for a multi-task mix)."""
    suffix = "" if mode == "online" else f"_{mode}"
    suffix += "" if algorithm == "ppo" else f"_{algorithm}"
    prefix = "metaworld_mt" if multitask else "metaworld"
    recipe = REPO / "recipes" / f"{prefix}_{model}_{method}{suffix}.json"
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe: {recipe} does not exist")
    return recipe


def updates_for_budget(rl_updates: int, recipe: Path) -> int:
    """A recipe's updates for the env-step budget of ``rl_updates`` rollouts of ROLLOUT_CHUNKS chunks: the same
    for the PPO recipes; more for GRPO's rollouts of 960 chunks (whole episodes), rounded up."""
    rollout = int(json.loads(recipe.read_text())["algorithm"].get("rollout_size", ROLLOUT_CHUNKS))
    return -(-rl_updates * ROLLOUT_CHUNKS // rollout)


def mix_envs_total(num_tasks: int) -> int:
    """The envs an actor steps for a mix of ``num_tasks``: the most envs per task that fit in MIX_ENVS, at
    least one each."""
    return max(1, MIX_ENVS // num_tasks) * num_tasks


def run_recipe(task: str, method: str, opts: RunOptions) -> Path:
    """The recipe a πRL run of ``task`` starts from (model, mode, algorithm; multi-task for a mix)."""
    return recipe_path(method, opts.model.name, opts.mode, opts.algorithm, bool(mixed_task_names(task)))


def reward_type(task: str, method: str, opts: RunOptions) -> str:
    """The env reward a run trains on: a ``--rl_arg=--env.reward_type=...`` override, else its recipe's
    (``sparse`` when the recipe leaves the env default), with ``+distance`` when ``--env.distance_scale`` adds
    the goal-distance shaping; SAC runs train on the sparse success."""
    if opts.algorithm == "sac":
        return "sparse"
    env = json.loads(run_recipe(task, method, opts).read_text()).get("env", {})
    base = _last_override(opts, "--env.reward_type=") or env.get("reward_type", "sparse")
    distance = float(_last_override(opts, "--env.distance_scale=") or env.get("distance_scale", 0.0))
    return f"{base}+distance" if distance > 0 else base


def _last_override(opts: RunOptions, flag: str) -> str | None:
    """The value of the last ``--rl_arg`` that starts with ``flag`` (draccus keeps the last), if any."""
    overrides = [a.removeprefix(flag) for a in opts.extra_args if a.startswith(flag)]
    return overrides[-1] if overrides else None


def rl_args(
    task: str, setup: TaskSetup, method: str, sft: Path, rl_out: Path, opts: RunOptions, demos: Path
) -> list[str]:
    """The learner's and the actor's arguments: the recipe, this task's setup, the evaluation protocol
    of the final evaluation (same seeds; the same episode count unless ``train_eval_episodes`` sets a smaller
    one), a mix's tasks and envs and, hybrid, the SFT demos as ``--dataset``."""
    hybrid = (
        [f"--dataset.repo_id=local/{task_dirname(task)}", f"--dataset.root={demos}"]
        if opts.mode == "hybrid"
        else []
    )
    mixed = mixed_task_names(task)
    env_task = [f"--env.task={task}"]
    if mixed:
        counts = opts.env_counts or [mix_envs_total(len(mixed)) // len(mixed)] * len(mixed)
        env_task = [
            f"--env.tasks={','.join(mixed)}",
            f"--env.num_envs={sum(counts)}",
            *([f"--env.envs_per_task={','.join(map(str, counts))}"] if opts.env_counts else []),
            *(
                [f"--policy.actor.rebalance_envs_every={MIX_REBALANCE_EVERY}"]
                if opts.mix_envs == "adaptive"
                else []
            ),
        ]
    return [
        f"--config_path={run_recipe(task, method, opts)}",
        f"--output_dir={rl_out}",
        f"--policy.base_policy_path={sft}",
        f"--policy.online_steps={setup.rl_updates}",
        f"--policy.actor_learner_config.learner_port={_free_port()}",
        *env_task,
        f"--env.episode_length={setup.episode_length}",
        f"--env.eval_seed={opts.eval_seed}",
        f"--job_name={task_dirname(task)}_{opts.model.name}_{method}_{opts.algorithm}",
        f"--policy.actor.eval_every={opts.eval_every}",
        f"--policy.actor.eval_episodes={opts.train_eval_episodes or opts.eval_episodes}",
        *hybrid,
        *opts.extra_args,
    ]


def resume_point(rl_out: Path) -> tuple[int, float] | None:
    """Where an interrupted πRL run in ``rl_out`` would continue: the update of its last checkpoint and the
    wall time (``wall_s``) its learner had logged by then; None without a checkpoint."""
    from lerobot_pirl.runtime.checkpoint import last_checkpoint_dir
    from lerobot_pirl.runtime.metrics_log import wall_at_update

    last = last_checkpoint_dir(rl_out)
    if not last.exists():
        return None
    update = int(last.resolve().name)
    return update, wall_at_update(read_metrics(rl_out / "metrics.jsonl"), update)


def rl_stage(
    task: str, setup: TaskSetup, method: str, sft: Path, run_dir: Path, opts: RunOptions, demos: Path
) -> list[dict]:
    """πRL from the SFT checkpoint: one learner and one actor process; returns the learner's records. With
    ``opts.resume``, a run left in ``run_dir`` by an interrupted invocation continues from its last
    checkpoint for what remains of its updates and of the wall-time cap."""
    rl_out = run_dir / "rl"
    resumed = resume_point(rl_out) if opts.resume else None
    if resumed is None and rl_out.exists():
        shutil.rmtree(rl_out)
    for stale in ("final_eval.json", "success_vs_env_steps.png"):  # they describe the previous RL run
        (run_dir / stale).unlink(missing_ok=True)
    setup = dataclasses.replace(
        setup, rl_updates=updates_for_budget(setup.rl_updates, run_recipe(task, method, opts))
    )
    args = rl_args(task, setup, method, sft, rl_out, opts, demos)
    timeout_s = opts.timeout_s
    if resumed is not None:
        update, trained_s = resumed
        timeout_s -= trained_s
        print(f"   resuming πRL at update {update} ({trained_s / 60:.1f} min of the wall-time cap used)")
        if update >= setup.rl_updates or timeout_s <= 0:
            return read_metrics(rl_out / "metrics.jsonl")
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (
        open(logs / "learner.out", "a" if resumed else "w") as learner_out,
        open(logs / "actor.out", "a" if resumed else "w") as actor_out,
    ):
        learner = subprocess.Popen(
            [sys.executable, "-m", "lerobot_pirl.learner", *args, *(["--resume=true"] if resumed else [])],
            stdout=learner_out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        time.sleep(1.0)
        actor = subprocess.Popen(
            [sys.executable, "-m", "lerobot_pirl.actor", *args],
            stdout=actor_out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    desc = f"πRL {task} {opts.model.name} {method} {opts.mode} {opts.algorithm}"
    return supervise(learner, actor, rl_out / "metrics.jsonl", logs, setup.rl_updates, desc, timeout_s)


def supervise(
    learner, actor, metrics: Path, logs: Path, updates: int, desc: str, timeout_s: float
) -> list[dict]:
    """Show progress until the learner is done (or the time cap), then stop the actor cleanly."""
    bar = tqdm(total=updates, desc=desc, unit="update")
    start = time.time()
    try:
        while learner.poll() is None:
            if time.time() - start > timeout_s:
                learner.send_signal(signal.SIGINT)
                learner.wait(timeout=120)
                break
            _check_actor(actor, learner, logs)
            _show_progress(bar, read_metrics(metrics))
            time.sleep(1.0)
    finally:
        bar.close()
        _stop(actor, signal.SIGTERM, timeout=60)
        _stop(learner, None, timeout=0)
    if learner.returncode not in (0, None):
        raise RuntimeError(f"learner failed (exit {learner.returncode}); see {logs / 'learner.out'}")
    return read_metrics(metrics)


def _check_actor(
    actor: subprocess.Popen, learner: subprocess.Popen, logs: Path, grace_s: float = 30.0
) -> None:
    """An actor that failed, or that left while the learner keeps running, ends the run with an error.
    (An actor leaves cleanly when the learner ends training, just before the learner exits.)"""
    if actor.poll() is None:
        return
    if actor.returncode == 0:
        try:
            learner.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    raise RuntimeError(f"actor exited early (code {actor.returncode}); see {logs / 'actor.out'}")


def _show_progress(bar: tqdm, records: list[dict]) -> None:
    updates = [r for r in records if r["kind"] == "update"]
    if len(updates) > bar.n:
        last = updates[-1]
        bar.set_postfix(success=f"{last.get('episode_success', float('nan')):.2f}", steps=last["env_steps"])
        bar.update(len(updates) - bar.n)


def _stop(proc: subprocess.Popen, sig, timeout: float) -> None:
    """Ask a process to stop with ``sig`` (none: kill it), killing it after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    if sig is not None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def raw_rate_stage(task: str, setup: TaskSetup, seconds: float = 10.0) -> float:
    """The simulator's own env steps per second on this machine's cores: 16 training envs (a mix: rounded
    up to a multiple of its tasks) in one worker process per core, random actions, no policy
    (:mod:`lerobot_pirl.bench.throughput`)."""
    from lerobot_pirl.bench.throughput import raw_env_rate
    from lerobot_pirl.envs.metaworld import metaworld_env_config

    cfg = metaworld_env_config(
        task, num_envs=16, episode_length=setup.episode_length, env_workers=os.cpu_count() or 1
    )
    return raw_env_rate(cfg, seconds)


def sac_budget(setup: TaskSetup, rollout_size: int = ROLLOUT_CHUNKS, chunk: int = CHUNK_STEPS) -> int:
    """A SAC run's env steps: the πRL budget of the task (``rl_updates`` rollouts of ``rollout_size`` chunks
    of ``chunk`` steps; 307,200 for 60 updates, 1,024,000 for 200)."""
    return setup.rl_updates * rollout_size * chunk


def resumable_sac(run_dir: Path, opts: RunOptions) -> bool:
    """Whether the SAC stage continues a run left in ``run_dir`` (``--resume`` and a checkpoint there)."""
    from lerobot_pirl.bench.sac_checkpoint import sac_resume_point

    return opts.resume and sac_resume_point(run_dir / "sac") is not None


def sac_stage(
    task: str, setup: TaskSetup, demos: Path, run_dir: Path, opts: RunOptions
) -> tuple[list[dict], dict]:
    """LeRobot's SAC from scratch with the demos in its offline buffer, the πRL budget and evaluation
    protocol (evaluations every ``eval_every`` πRL-rollouts' worth of env steps); returns its records and
    the final held-out evaluation. With ``opts.resume``, a run an earlier invocation left continues from its
    last checkpoint, within what remains of the wall-time cap."""
    from lerobot_pirl.bench.sac import SACSettings, evaluate_sac, run_sac
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    for stale in ("final_eval.json", "success_vs_env_steps.png"):
        (run_dir / stale).unlink(missing_ok=True)
    overrides = dict(opts.sac)
    budget = overrides.pop("env_steps", None) or sac_budget(setup)
    settings = SACSettings(
        env_steps=budget, eval_every_steps=opts.eval_every * ROLLOUT_CHUNKS * CHUNK_STEPS, **overrides
    )
    env_cfg = MetaWorldStateEnvConfig(
        task=task,
        num_envs=settings.num_envs,
        env_workers=settings.env_workers,
        episode_length=setup.episode_length,
        eval_seed=opts.eval_seed,
    )
    records = run_sac(
        env_cfg,
        demos,
        run_dir / "sac",
        settings,
        opts.eval_episodes,
        opts.timeout_s,
        resume=resumable_sac(run_dir, opts),
    )
    eval_cfg = MetaWorldStateEnvConfig(
        task=task,
        num_envs=EVAL_PROTOCOL.num_envs,
        episode_length=setup.episode_length,
        eval_seed=opts.eval_seed,
        env_workers=os.cpu_count() or 1,
    )
    final = evaluate_sac(run_dir / "sac" / "pretrained_model", eval_cfg, opts.eval_episodes)
    final["eval_seed"] = opts.eval_seed
    (run_dir / "final_eval.json").write_text(json.dumps(final))
    return records, final
