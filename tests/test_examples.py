"""The scripts in examples/ run as a user would run them."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lerobot_pirl.flow.config import FlowSamplerConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig
from lerobot_pirl.policies.pi_rl.modeling_pi_rl import PiRLPolicy
from lerobot_pirl.policies.pi_rl.processor_pi_rl import make_pi_rl_pre_post_processors
from tests.helpers import write_metaworld_base

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pi_rl_checkpoint(tmp_path: Path) -> Path:
    write_metaworld_base(tmp_path / "sft")
    policy = PiRLPolicy(
        PiRLConfig(
            device="cpu",
            base_policy_path=str(tmp_path / "sft"),
            push_to_hub=False,
            sampler=FlowSamplerConfig(num_denoise_steps=3),
        )
    )
    out = tmp_path / "pirl"
    policy.save_pretrained(out)
    for processor in make_pi_rl_pre_post_processors(policy.config):
        processor.save_pretrained(out)
    return out


def test_evaluate_and_export_examples(tmp_path, capsys):
    checkpoint = _pi_rl_checkpoint(tmp_path)
    report = _example("evaluate_checkpoint").main([str(checkpoint), "--episodes", "2"])
    assert report["episodes"] == 2 and report["seeds"] == [3_000_000, 3_000_001]
    out = _example("export_checkpoint").main([str(checkpoint), str(tmp_path / "exported")])
    printed = capsys.readouterr().out
    assert "exported a flow_mlp checkpoint" in printed and "3 denoising steps" in printed
    assert (out / "config.json").is_file()


@pytest.mark.slow
def test_learner_and_two_actors_script(tmp_path):
    write_metaworld_base(tmp_path / "sft")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    cmd = [
        "bash",
        str(EXAMPLES / "learner_and_two_actors.sh"),
        str(tmp_path / "sft"),
        str(run),
        "--policy.online_steps=1",
        f"--policy.actor_learner_config.learner_port={port}",
        "--algorithm.rollout_size=64",
        "--algorithm.minibatch_size=32",
        "--env.num_envs=2",
        "--policy.actor.chunks_per_version=16",
    ]
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=EXAMPLES.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "checkpoints" / "last" / "pretrained_model").is_dir()
    actor_logs = list((run / "logs").glob("actor_*.log"))
    assert len(actor_logs) == 2
    assert all("the learner finished training" in log.read_text() for log in actor_logs)


def test_gpu_check_dry_run_runs_every_step_and_prints_its_table():
    """``scripts/gpu_check.sh --dry-run``: the GPU check's steps with tiny models on the CPU."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=repo,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [
        line for line in proc.stdout.splitlines() if line.startswith("| pi0") or line.startswith("| pi05")
    ]
    assert len(rows) == 8  # 4 settings (Flow-SDE, Flow-Noise, + grad ckpt, + LoRA) x 2 models
    assert sum("LoRA" in r for r in rows) == 2
    assert all("nan" not in r.split("|")[4] for r in rows)  # a sampling ratio for every setting


@pytest.mark.slow
def test_vanilla_lerobot_eval_runs_a_checkpoint_on_pirl_metaworld_with_videos(tmp_path):
    """As a LeRobot user would: ``lerobot-eval --policy.path=<checkpoint> --env.type=pirl_metaworld
    --env.discover_packages_path=lerobot_pirl`` (which also registers flow_mlp); lerobot-eval renders the
    episodes to MP4 with the env's offscreen ``render()``."""
    write_metaworld_base(tmp_path / "base")
    lerobot_eval = Path(sys.executable).parent / "lerobot-eval"
    cmd = [
        str(lerobot_eval),
        f"--policy.path={tmp_path / 'base'}",
        "--policy.device=cpu",
        "--env.type=pirl_metaworld",
        "--env.task=button-press-v3",
        "--env.episode_length=20",
        "--env.discover_packages_path=lerobot_pirl",
        "--eval.n_episodes=2",
        "--eval.batch_size=2",
        f"--output_dir={tmp_path / 'eval'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    videos = sorted((tmp_path / "eval" / "videos").rglob("*.mp4"))
    assert len(videos) == 2 and all(v.stat().st_size > 1000 for v in videos)
    assert "'n_episodes': 2" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_lerobot_pirl_eval_writes_videos_of_the_first_episodes(tmp_path):
    """``lerobot-pirl-eval --videos 2``: MP4s of the first two episodes (offscreen MuJoCo, LeRobot's video
    writer), one frame per env step plus the first observation; the report lists them."""
    import json

    import av

    write_metaworld_base(tmp_path / "base")
    args = ["--policy_path", str(tmp_path / "base"), "--episodes", "3", "--num_envs", "3"]
    args += ["--episode_length", "12", "--videos", "2", "--videos_dir", str(tmp_path / "videos")]
    proc = subprocess.run(
        [sys.executable, "-m", "lerobot_pirl.evaluate", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])  # after LeRobot's "Loading weights" line
    assert report["episodes"] == 3 and len(report["videos"]) == 2
    for path in report["videos"]:
        with av.open(path) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 13 and frames[0].width > 0
