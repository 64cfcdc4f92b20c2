"""Benchmark reporting: confidence intervals, plots and the results table."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lerobot_pirl.bench.cli import update_budget
from lerobot_pirl.bench.report import RunResult, merge_results, plot_curve, readme_table, write_results
from lerobot_pirl.bench.setups import TaskSetup, task_setup
from lerobot_pirl.bench.stages import DEMO_STATS, noise_lowered, reuse_or_clear_sft
from lerobot_pirl.evaluate import wilson_interval


def test_wilson_interval():
    lo, hi = wilson_interval(25, 50)
    assert lo == pytest.approx(0.366, abs=1e-3) and hi == pytest.approx(0.634, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 50)
    assert lo > 0.9 and hi <= 1.0


@pytest.mark.parametrize("k", [0, 6])  # all failed / all solved: bounds at a rounding error from 0 / 1
def test_plot_handles_perfect_and_zero_success(tmp_path, k):
    report = {"success_rate": k / 6, "ci95": wilson_interval(k, 6), "episodes": 6}
    records = [
        {"kind": "update", "env_steps": 100, "episodes": 3, "episode_success": 0.5},
        {"kind": "eval", "env_steps": 150, "eval_success_rate": 0.5},
    ]
    plot_curve(records, report, report, "t", tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def _push_row(**changes) -> RunResult:
    """A push-v3 result row (10 demos, online), with ``changes``."""
    row = RunResult(
        task="push-v3",
        noise_method="flow_sde",
        demos=10,
        demo_action_noise=0.3,
        sft_success=0.1,
        sft_ci95=[0.04, 0.21],
        rl_success=0.5,
        rl_ci95=[0.37, 0.63],
        eval_episodes=50,
        env_steps=1000,
        updates=2,
        wall_s=60.0,
        rl_wall_s=30.0,
        plot="p.png",
    )
    return dataclasses.replace(row, **changes)


def test_results_json_and_table(tmp_path):
    row = _push_row()
    path = tmp_path / "results.json"
    row.command = "python -m lerobot_pirl.bench --task push-v3"
    write_results(merge_results([row], path), path)
    payload = json.loads(path.read_text())
    assert payload["tasks"][0]["rl_success"] == 0.5 and "machine" in payload
    table = (tmp_path / "results.md").read_text()
    assert (
        "| push-v3 | flow_mlp | online | ppo | flow_sde | 10 (0.3) | 0.10 [0.04, 0.21] | 0.50 [0.37, 0.63] | 50 | 1,000 |"
        in table
    )

    # A later run of other rows updates the file row by row: new rows added, a re-run row replaced,
    # the others (and their commands) kept; rows in benchmark order (policy, method, task), one mean per
    # policy, mode and noise method; a row of another policy or mode never replaces a flow_mlp online row.
    other = dataclasses.replace(row, task="button-press-v3", demos=5, rl_success=0.9, command="cmd B")
    noise = dataclasses.replace(row, noise_method="flow_noise", rl_success=0.3, command="cmd B")
    vla = dataclasses.replace(row, model="smolvla_tiny", rl_success=0.4, command="cmd D")
    hybrid = dataclasses.replace(row, mode="hybrid", rl_success=0.6, command="cmd E")
    one_demo = dataclasses.replace(row, demos=1, rl_success=0.2, command="cmd F")  # not in the means
    rerun = dataclasses.replace(row, rl_success=0.7, command="cmd C")
    sac = dataclasses.replace(row, method="sac", noise_method="-", rl_success=0.15, command="cmd G")
    grpo = dataclasses.replace(row, method="grpo", rl_success=0.35, command="cmd G")
    sac.raw_env_steps_per_s, sac.train_env_steps_per_s, sac.sim_fraction = 600.0, 150.0, 0.25
    write_results(merge_results([vla, one_demo, other, hybrid, noise, sac, grpo], path), path)
    write_results(merge_results([rerun], path), path)
    payload = json.loads(path.read_text())
    got = [
        (t["model"], t["mode"], t["noise_method"], t["task"], t["rl_success"], t["command"])
        for t in payload["tasks"]
    ]
    assert got == [
        ("flow_mlp", "online", "flow_sde", "button-press-v3", 0.9, "cmd B"),
        ("flow_mlp", "online", "flow_sde", "push-v3", 0.7, "cmd C"),
        ("flow_mlp", "online", "flow_sde", "push-v3", 0.2, "cmd F"),
        ("flow_mlp", "online", "flow_noise", "push-v3", 0.3, "cmd B"),
        ("flow_mlp", "online", "flow_sde", "push-v3", 0.35, "cmd G"),
        ("flow_mlp", "online", "-", "push-v3", 0.15, "cmd G"),
        ("flow_mlp", "hybrid", "flow_sde", "push-v3", 0.6, "cmd E"),
        ("smolvla_tiny", "online", "flow_sde", "push-v3", 0.4, "cmd D"),
    ]
    assert payload["commands"] == ["cmd B", "cmd C", "cmd F", "cmd G", "cmd E", "cmd D"]
    labels = [
        RunResult(**{k: v for k, v in t.items() if k in RunResult.__dataclass_fields__}).label
        for t in payload["tasks"]
    ]
    assert labels == [
        "flow_sde",
        "flow_sde",
        "flow_sde (1 demo)",
        "flow_noise",
        "grpo flow_sde",
        "LeRobot SAC",
        "flow_sde hybrid",
        "flow_sde (smolvla_tiny)",
    ]
    # README's short table: a line per task setting, a column per method / mode / policy, the means over
    # the single-task rows with standard demos (the 1-demo row is not in the flow_sde mean).
    assert readme_table(merge_results([], path)).splitlines() == [
        "| task | flow_sde | flow_noise | grpo flow_sde | LeRobot SAC | flow_sde hybrid | flow_sde (smolvla_tiny) |",
        "|---|---|---|---|---|---|---|",
        "| button-press-v3 | 0.10 -> 0.90 (1k) |  |  |  |  |  |",
        "| push-v3 | 0.10 -> 0.70 (1k) | 0.10 -> 0.30 (1k) | 0.10 -> 0.35 (1k) | 0.10 -> 0.15 (1k) "
        "| 0.10 -> 0.60 (1k) | 0.10 -> 0.40 (1k) |",
        "| push-v3, 1 demo | 0.10 -> 0.20 (1k) |  |  |  |  |  |",
        "| **mean** | **0.10 -> 0.80** (2 tasks) | **0.10 -> 0.30** (1 task) | **0.10 -> 0.35** (1 task) "
        "| **0.10 -> 0.15** (1 task) | **0.10 -> 0.60** (1 task) | **0.10 -> 0.40** (1 task) |",
    ]
    table = (tmp_path / "results.md").read_text()
    assert "| **mean (2 tasks)** | flow_mlp | online | ppo | flow_sde | | 0.10 | 0.80 |" in table
    assert "| **mean (1 task)** | flow_mlp | online | ppo | flow_noise | | 0.10 | 0.30 |" in table
    assert "| **mean (1 task)** | flow_mlp | online | sac | - | | 0.10 | 0.15 |" in table
    assert "| **mean (1 task)** | flow_mlp | hybrid | ppo | flow_sde | | 0.10 | 0.60 |" in table
    assert "| **mean (1 task)** | smolvla_tiny | online | ppo | flow_sde | | 0.10 | 0.40 |" in table
    assert "| 150 (0.25 of 600) |" in table  # training env steps/s as a share of the raw simulator

    # A mix's rows with envs by SFT failure sit beside the even split's, each with its own mean.
    mix_path = tmp_path / "results_mt.json"
    per_task = {"reach-v3": {"sft_success": 0.1, "rl_success": 0.74}}
    even = dataclasses.replace(row, task="MT10", demos=5, rl_success=0.74, per_task=per_task)
    failure = dataclasses.replace(
        even, rl_success=0.78, env_allocation="failure", envs_per_task={"reach-v3": 2}
    )
    write_results(merge_results([even, failure], mix_path), mix_path)
    assert [r.label for r in merge_results([], mix_path)] == ["flow_sde", "flow_sde (envs by SFT failure)"]
    # README shows each allocation on its own line; a mix is never in a single-task mean.
    assert readme_table(merge_results([], mix_path)).splitlines()[2:] == [
        "| MT10 | 0.10 -> 0.74 (1k) |",
        "| MT10, envs by SFT failure | 0.10 -> 0.78 (1k) |",
    ]
    mt50 = dataclasses.replace(even, task="MT50", rl_success=0.66)
    write_results(merge_results([mt50], mix_path), mix_path)
    mix_table = mix_path.with_suffix(".md").read_text()
    # A mix's row is already its tasks' average: no mean line, and MT10 and MT50 are never averaged together.
    assert "**mean" not in mix_table
    assert "| MT50 | flow_mlp | online | ppo | flow_sde | 5 (0.3) | 0.10 [" in mix_table
    assert "| MT10 | flow_mlp | online, envs by SFT failure | ppo | flow_sde | 5 (0.3) | 0.10 [" in mix_table


def test_demos_and_sft_are_reused_only_for_the_same_setup(tmp_path):
    def make_stage_outputs():
        (tmp_path / "demos" / "meta").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sft").mkdir(exist_ok=True)
        (tmp_path / "sft_eval.json").write_text("{}")
        (tmp_path / DEMO_STATS).write_text(json.dumps({"noise_lowered": {"assembly-v3": 0.5}}))

    make_stage_outputs()
    reuse_or_clear_sft(tmp_path, TaskSetup(demos=5))  # unknown provenance: made again
    assert not (tmp_path / "demos").exists() and not (tmp_path / "sft_eval.json").exists()
    assert noise_lowered(tmp_path) == {}  # the demos' statistics went with them
    make_stage_outputs()
    reuse_or_clear_sft(tmp_path, TaskSetup(demos=5, rl_updates=200))  # same demos / SFT: reused
    assert (tmp_path / "demos" / "meta").is_dir() and (tmp_path / "sft").is_dir()
    assert noise_lowered(tmp_path) == {"assembly-v3": 0.5}  # what the row reports of the reused demos
    reuse_or_clear_sft(tmp_path, TaskSetup(demos=10))  # different demos: made again
    assert not (tmp_path / "demos").exists() and not (tmp_path / "sft").exists()
    make_stage_outputs()
    reuse_or_clear_sft(tmp_path, TaskSetup(demos=10))
    reuse_or_clear_sft(tmp_path, TaskSetup(demos=10, sft_workers=2))  # loader workers change the checkpoint
    assert not (tmp_path / "sft").exists()


def test_sft_workers_reach_lerobot_train(tmp_path, monkeypatch):
    from lerobot_pirl.bench import stages
    from lerobot_pirl.bench.setups import MODELS, task_setup

    commands = []
    monkeypatch.setattr(stages, "_run", lambda cmd, log, what: commands.append(cmd))
    for workers in (None, 2):
        setup = task_setup("MT10", sft_workers=workers)
        stages.sft_stage("MT10", setup, tmp_path / str(workers), tmp_path, tmp_path, MODELS["flow_mlp"])
    assert [[a for a in c if a.startswith("--num_workers=")] for c in commands] == [
        ["--num_workers=0"],
        ["--num_workers=2"],
    ]
    assert "--steps=2000" in commands[0]  # MT10: 200 SFT steps per task


def test_sampling_benchmark_times_each_recipe_head(monkeypatch):
    """The sampling benchmark: one short round builds every variant with the recipe's noise head and
    reports a finite positive ratio per column (the timings themselves are the script's job, not a test's)."""
    from lerobot_pirl.bench import sampling as bench

    recipe = json.loads((bench.RECIPES / "metaworld_flow_mlp_flow_noise.json").read_text())
    model = bench.flow_mlp_model(2)
    assert model[3] == recipe["policy"]["noise_head"]["hidden_dims"]
    built = []
    real_build = bench.build
    monkeypatch.setattr(bench, "build", lambda *a, **kw: built.append(kw) or real_build(*a, **kw))
    row = bench.measure(model, bsz=2, k=2, rounds=1, calls=1)
    heads = [kw["noise_head_dims"] for kw in built if "noise_head_dims" in kw]
    assert heads == [model[3], bench.RLINF_NOISE_HEAD]
    columns = {"own", "sde", "sde_b", "noise", "noise_rlinf", "head", "rescore/budget", "rescore/whole"}
    assert columns <= row.keys()
    assert all(0 < row[c] < float("inf") for c in columns) and row["ode_ms"] > 0


def test_each_model_and_mode_has_its_recipe_and_hybrid_runs_get_the_sft_demos(tmp_path):
    from lerobot_pirl.bench.setups import MODELS
    from lerobot_pirl.bench.stages import RunOptions, recipe_path, rl_args

    assert recipe_path("flow_sde", "smolvla_tiny").is_file()
    assert recipe_path("flow_sde", "flow_mlp", "hybrid").name == "metaworld_flow_mlp_flow_sde_hybrid.json"
    demos = tmp_path / "demos"
    hybrid = RunOptions(eval_episodes=10, eval_every=5, timeout_s=60, mode="hybrid")
    args = rl_args("push-v3", TaskSetup(), "flow_sde", tmp_path / "sft", tmp_path / "rl", hybrid, demos)
    assert f"--config_path={recipe_path('flow_sde', 'flow_mlp', 'hybrid')}" in args
    assert "--dataset.repo_id=local/push-v3" in args and f"--dataset.root={demos}" in args
    online = RunOptions(eval_episodes=10, eval_every=5, timeout_s=60, model=MODELS["smolvla_tiny"])
    args = rl_args("push-v3", TaskSetup(), "flow_sde", tmp_path / "sft", tmp_path / "rl", online, demos)
    assert f"--config_path={recipe_path('flow_sde', 'smolvla_tiny')}" in args
    assert not any(a.startswith("--dataset") for a in args)
    with pytest.raises(FileNotFoundError, match="recipe"):
        recipe_path("flow_noise", "smolvla_tiny", "hybrid")
    mix = rl_args("MT10", TaskSetup(), "flow_sde", tmp_path / "sft", tmp_path / "rl", hybrid, demos)
    assert (
        recipe_path("flow_sde", mode="hybrid", multitask=True).name
        == "metaworld_mt_flow_mlp_flow_sde_hybrid.json"
    )
    assert f"--config_path={recipe_path('flow_sde', mode='hybrid', multitask=True)}" in mix
    assert "--dataset.repo_id=local/MT10" in mix and f"--dataset.root={demos}" in mix


@pytest.mark.parametrize(
    ("task", "num_envs", "method"),
    [
        ("MT10", 20, "flow_sde"),
        ("MT50", 50, "flow_sde"),
        ("reach-v3,push-v3,door-open-v3", 18, "flow_sde"),
        ("MT10", 20, "flow_noise"),
    ],
)
def test_a_multitask_run_gets_the_mt_recipe_its_tasks_and_the_same_envs_per_task(
    tmp_path, task, num_envs, method
):
    from lerobot_pirl.bench.setups import mixed_task_names
    from lerobot_pirl.bench.stages import RunOptions, recipe_path, rl_args

    opts = RunOptions(eval_episodes=50, eval_every=5, timeout_s=60, train_eval_episodes=10)
    args = rl_args(task, TaskSetup(), method, tmp_path / "sft", tmp_path / "rl", opts, tmp_path / "demos")
    recipe = recipe_path(method, multitask=True)
    assert recipe.name == f"metaworld_mt_flow_mlp_{method}.json" and f"--config_path={recipe}" in args
    assert "--policy.actor.eval_episodes=10" in args and not any(a.startswith("--env.task=") for a in args)
    import draccus
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig

    import lerobot_pirl  # noqa: F401  (registers the envs)

    with draccus.config_type("json"):
        cfg = draccus.parse(
            TrainRLServerPipelineConfig, str(recipe), args=[a for a in args if a.startswith("--env.")]
        )
    assert cfg.env.type == "pirl_metaworld_mt" and cfg.env.task is None
    assert cfg.env.task_list == mixed_task_names(task) and cfg.env.num_envs == num_envs
    assert cfg.policy.sampler.noise_method == method and cfg.algorithm.normalize_advantages_per_task


def test_a_mix_reuses_its_cached_evaluation_of_the_same_episodes_per_task(tmp_path, monkeypatch):
    import lerobot_pirl.evaluate
    from lerobot_pirl.bench.setups import MODELS
    from lerobot_pirl.bench.stages import eval_stage

    def evaluate_again(path):
        raise RuntimeError("evaluated again")

    monkeypatch.setattr(lerobot_pirl.evaluate, "load_policy_for_eval", evaluate_again)
    cache = tmp_path / "sft_eval.json"
    cached = {"success_rate": 0.5, "episodes": 500, "episodes_per_task": 50, "eval_seed": 7, "tasks": {}}
    cache.write_text(json.dumps(cached))
    missing = tmp_path / "no_checkpoint"
    assert eval_stage(missing, "MT10", TaskSetup(), 50, cache, 7, MODELS["flow_mlp"]) == cached
    with pytest.raises(RuntimeError, match="evaluated again"):  # other episodes per task: evaluated again
        eval_stage(missing, "MT10", TaskSetup(), 20, cache, 7, MODELS["flow_mlp"])


def test_a_task_run_in_both_modes_gets_one_comparison_plot(tmp_path):
    from lerobot_pirl.bench.report import plot_mode_comparisons

    online = _push_row(rl_success=0.4, curve=[{"env_steps": 0, "eval_success": 0.2}])
    hybrid = dataclasses.replace(online, mode="hybrid", rl_success=0.6, env_steps=900)
    other = dataclasses.replace(online, task="door-open-v3")  # online only: no comparison
    mixed = dataclasses.replace(hybrid, env_allocation="failure")  # envs by SFT failure: not the even pair's
    written = plot_mode_comparisons([online, hybrid, other, mixed], tmp_path / "images")
    assert [p.name for p in written] == ["push-v3_flow_mlp_flow_sde_10demos_online_vs_hybrid.png"]
    written = plot_mode_comparisons([mixed, dataclasses.replace(online, env_allocation="failure")], tmp_path)
    assert [p.name for p in written] == [
        "push-v3_flow_mlp_flow_sde_10demos_envs_by_failure_online_vs_hybrid.png"
    ]
    assert written[0].stat().st_size > 10_000


def test_a_task_run_with_several_methods_gets_one_plot_and_grpo_its_recipe(tmp_path):
    from lerobot_pirl.bench.report import methods_title, plot_method_comparisons
    from lerobot_pirl.bench.stages import recipe_path, sac_budget, updates_for_budget

    ppo = _push_row(rl_success=0.4, curve=[{"env_steps": 0, "eval_success": 0.2}])
    sac = dataclasses.replace(ppo, method="sac", noise_method="-", rl_success=0.1)
    grpo = dataclasses.replace(ppo, method="grpo", rl_success=0.3)
    alone = dataclasses.replace(ppo, task="door-open-v3")
    written = plot_method_comparisons([ppo, sac, grpo, alone], tmp_path / "images")
    assert [p.name for p in written] == ["push-v3_methods.png"] and written[0].stat().st_size > 10_000
    assert methods_title("push-v3", [ppo, grpo]) == "push-v3: πRL PPO vs πRL GRPO, same demos and env steps"
    assert "LeRobot SAC" in methods_title("push-v3", [ppo, sac])
    assert recipe_path("flow_sde", algorithm="grpo").name == "metaworld_flow_mlp_flow_sde_grpo.json"
    assert (
        sac_budget(TaskSetup(rl_updates=60)) == 307_200 and sac_budget(TaskSetup(rl_updates=200)) == 1_024_000
    )
    # GRPO's rollouts of 960 chunks (whole episodes) get the PPO recipe's env-step budget: 60 x 1024 = 64 x 960
    assert updates_for_budget(60, recipe_path("flow_sde", algorithm="grpo")) == 64
    assert updates_for_budget(200, recipe_path("flow_sde", algorithm="grpo")) == 214
    assert updates_for_budget(60, recipe_path("flow_sde")) == 60


def test_time_shares_of_pirl_and_sac_records():
    from lerobot_pirl.bench.cli import time_shares

    pirl = [
        {"kind": "update", "time_actor_env_s": 3.0, "time_actor_sample_s": 1.0, "time_actor_env_frac": 0.75},
        {"kind": "eval"},
        {"kind": "update", "time_actor_env_s": 5.0, "time_actor_sample_s": 1.0, "time_actor_env_frac": 0.8},
    ]
    assert time_shares(pirl) == {"env": 0.8, "sample": 0.2}
    sac = [{"kind": "update", "time_act_s": 1.0, "time_env_s": 1.0, "time_learn_s": 8.0}]
    assert time_shares(sac) == {"act": 0.1, "env": 0.1, "learn": 0.8}
    assert time_shares([]) == {}


def test_the_raw_simulator_rate_is_a_median_of_windows_and_refuses_no_window():
    from lerobot_pirl.bench.throughput import raw_env_rate
    from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig

    cfg = MetaWorldStateEnvConfig(task="reach-v3", num_envs=2, episode_length=20)
    assert raw_env_rate(cfg, seconds=0.6, windows=3) > 0
    with pytest.raises(ValueError, match="windows"):
        raw_env_rate(cfg, seconds=0.6, windows=0)


def test_a_mixs_envs_by_sft_failure_give_each_task_one_and_the_rest_by_its_failure_rate(tmp_path):
    import draccus
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig

    import lerobot_pirl  # noqa: F401  (registers the envs)
    from lerobot_pirl.bench.stages import RunOptions, recipe_path, rl_args
    from lerobot_pirl.runtime.rebalance import allocate_envs

    # 20 envs, 4 tasks: one each, then 16 by failure 0 / 1 / 0.5 / 0.5 -> 0 / 8 / 4 / 4.
    assert allocate_envs([0.0, 1.0, 0.5, 0.5], 20) == [1, 9, 5, 5]
    # Largest remainders: shares 7/3 each of 7 spare envs over three equal tasks -> 3, 2, 2 (ties: earlier).
    assert allocate_envs([0.2, 0.2, 0.2], 10) == [4, 3, 3]
    assert allocate_envs([0.0, 0.0], 6) == [3, 3]  # nothing fails: an even split
    assert sum(allocate_envs([0.6, 1.0, 1.0, 0.15, 0.65, 0.15, 0.0, 1.0, 0.0, 0.0], 20)) == 20
    with pytest.raises(ValueError, match="cannot give each"):
        allocate_envs([0.5, 0.5, 0.5], 2)
    task = "reach-v3,push-v3,door-open-v3"
    opts = RunOptions(eval_episodes=50, eval_every=5, timeout_s=60, env_counts=(2, 12, 4))
    args = rl_args(task, TaskSetup(), "flow_sde", tmp_path / "sft", tmp_path / "rl", opts, tmp_path / "demos")
    with draccus.config_type("json"):
        cfg = draccus.parse(
            TrainRLServerPipelineConfig,
            str(recipe_path("flow_sde", multitask=True)),
            args=[a for a in args if a.startswith("--env.")],
        )
    assert cfg.env.num_envs == 18 and cfg.env.task_env_counts() == [2, 12, 4]
    assert [cfg.env.env_task(i, 18) for i in (0, 1, 2, 13, 14, 17)] == [
        "reach-v3",
        "reach-v3",
        "push-v3",
        "push-v3",
        "door-open-v3",
        "door-open-v3",
    ]


def test_sac_settings_reach_lerobots_sac_config_and_refuse_bad_values():
    import math

    import torch

    from lerobot_pirl.bench.sac import SACSettings, build_sac

    stats = {
        "observation.state": {"min": -torch.ones(39), "max": torch.ones(39)},
        "action": {"min": -torch.ones(4), "max": torch.ones(4)},
    }
    _, algorithm, _, _ = build_sac(
        SACSettings(env_steps=10, target_entropy=-6.0, temperature_init=0.05), stats
    )
    assert algorithm.target_entropy == -6.0
    assert math.isclose(algorithm.temperature, 0.05, rel_tol=1e-6)
    _, default, _, _ = build_sac(SACSettings(env_steps=10), stats)
    assert default.target_entropy == -2.0  # LeRobot's -action_dim / 2
    with pytest.raises(ValueError, match="target_entropy"):
        SACSettings(env_steps=10, target_entropy=math.nan)
    with pytest.raises(ValueError, match="online_ratio"):
        SACSettings(env_steps=10, online_ratio=0.0)


def test_a_rows_reward_comes_from_the_override_or_the_recipe_and_keeps_rows_apart(tmp_path):
    from lerobot_pirl.bench.stages import RunOptions, reward_type

    plain = RunOptions(eval_episodes=10, eval_every=5, timeout_s=60)
    assert reward_type("push-v3", "flow_sde", plain) == "sparse"  # the recipes keep the paper's reward
    shaped = dataclasses.replace(plain, extra_args=("--env.reward_type=dense", "--env.reward_type=progress"))
    assert reward_type("MT10", "flow_sde", shaped) == "progress"  # the last override wins, as in draccus
    assert reward_type("push-v3", "-", dataclasses.replace(shaped, algorithm="sac")) == "sparse"
    distance = dataclasses.replace(plain, extra_args=("--env.distance_scale=5",))
    assert reward_type("MT10", "flow_sde", distance) == "sparse+distance"  # a row apart from the sparse one
    off = dataclasses.replace(shaped, extra_args=(*shaped.extra_args, "--env.distance_scale=0"))
    assert reward_type("MT10", "flow_sde", off) == "progress"

    sparse_row, progress_row = _push_row(), _push_row(reward_type="progress", rl_success=0.8)
    path = tmp_path / "results.json"
    write_results(merge_results([sparse_row, progress_row], path), path)
    rows = merge_results([], path)
    assert sorted(r.reward_type for r in rows) == ["progress", "sparse"]  # neither replaces the other
    assert progress_row.label == "flow_sde (progress reward)" and sparse_row.label == "flow_sde"


def test_a_row_with_another_update_budget_is_kept_apart_and_says_so(tmp_path):
    rule, longer = _push_row(), _push_row(rl_updates_budget=300, rl_success=0.9)
    path = tmp_path / "results.json"
    write_results(merge_results([rule, longer], path), path)
    rows = merge_results([], path)
    assert sorted(r.rl_success for r in rows) == [0.5, 0.9]  # neither replaces the other
    assert longer.label == "flow_sde (300 updates)" and rule.label == "flow_sde"
    assert "| online, 300 updates |" in path.with_suffix(".md").read_text()
    # one rule says which rows the means of results.md and README's table take: not the longer one, nor a mix
    assert (
        rule.in_means
        and not longer.in_means
        and not _push_row(task="MT10", demos=task_setup("MT10").demos).in_means
    )
    assert (
        "| **mean (1 task)** | flow_mlp | online | ppo | flow_sde | | 0.10 | 0.50 |"
        in path.with_suffix(".md").read_text()
    )
    assert {r.rl_success for r in merge_results([_push_row(rl_success=0.7)], path)} == {0.7, 0.9}
    # the bench names a budget only where --rl_updates departs from the task's own (the rule's for a mix)
    assert update_budget("push-v3", task_setup("push-v3")) is None
    assert update_budget("MT10", task_setup("MT10", rl_updates=1000)) == 1000
    assert update_budget("MT10", task_setup("MT10", rl_updates=600)) is None


def test_adaptive_mix_envs_start_by_sft_failure_and_have_the_actor_re_split_them(tmp_path):
    import draccus
    from lerobot.rl.train_rl import TrainRLServerPipelineConfig

    import lerobot_pirl  # noqa: F401  (registers the envs)
    from lerobot_pirl.bench.report import _variant_texts
    from lerobot_pirl.bench.stages import MIX_REBALANCE_EVERY, RunOptions, recipe_path, rl_args

    opts = RunOptions(eval_episodes=50, eval_every=5, timeout_s=60, mix_envs="adaptive", env_counts=(3, 1))
    args = rl_args(
        "reach-v3,push-v3", TaskSetup(), "flow_sde", tmp_path / "sft", tmp_path / "rl", opts, tmp_path
    )
    with draccus.config_type("json"):
        cfg = draccus.parse(
            TrainRLServerPipelineConfig,
            str(recipe_path("flow_sde", multitask=True)),
            args=[a for a in args if a.startswith(("--env.", "--policy.actor."))],
        )
    assert cfg.env.task_env_counts() == [3, 1]
    assert cfg.policy.actor.rebalance_envs_every == MIX_REBALANCE_EVERY
    plain = rl_args(
        "reach-v3,push-v3", TaskSetup(), "flow_sde", tmp_path, tmp_path, RunOptions(50, 5, 60), tmp_path
    )
    assert not any("rebalance_envs_every" in a for a in plain)
    assert _variant_texts("adaptive", "sparse") == ["envs re-split by training failure"]


def test_adaptive_mix_envs_are_refused_where_every_task_has_one_env(capsys):
    from lerobot_pirl.bench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--task", "MT50", "--mix_envs", "adaptive"])
    assert exit_info.value.code == 2
    assert "--mix_envs adaptive: MT50 get one env per task" in capsys.readouterr().err
