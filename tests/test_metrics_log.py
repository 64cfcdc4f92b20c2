"""A resumed run's metrics.jsonl: records past the checkpoint dropped, its clock carried on, and evaluations
from before the resume logged once; the bench's --resume continues an interrupted πRL run."""

from __future__ import annotations

import json
import threading
import time

from lerobot.rl.train_rl import TrainRLServerPipelineConfig

from lerobot_pirl.bench.setups import task_setup
from lerobot_pirl.bench.stages import RunOptions, resume_point, rl_stage
from lerobot_pirl.learner import PiRLLearner
from lerobot_pirl.plot import read_metrics
from lerobot_pirl.runtime.config import resolve_pi_rl_config
from lerobot_pirl.runtime.metrics_log import evaluated_versions, trim_for_resume, wall_at_update
from tests.helpers import metaworld_run_config

# A run that checkpointed update 2 (policy version 2), then went on to update 3 before it stopped.
RECORDS = [
    {"kind": "update", "update": 1, "wall_s": 10.0, "env_steps": 100},
    {"kind": "eval", "policy_version": 0, "wall_s": 12.0, "env_steps": 100, "eval_success_rate": 0.2},
    {"kind": "update", "update": 2, "wall_s": 20.0, "env_steps": 200},
    {"kind": "eval", "policy_version": 2, "wall_s": 25.0, "env_steps": 250, "eval_success_rate": 0.4},
    {"kind": "update", "update": 3, "wall_s": 30.0, "env_steps": 300},
    {"kind": "eval", "policy_version": 3, "wall_s": 35.0, "env_steps": 300, "eval_success_rate": 0.5},
]


def _write(path, records, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(extra_lines))


def test_trim_for_resume_drops_what_follows_the_checkpoint_and_keeps_its_wall_time(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, RECORDS, ['{"kind": "upd'])  # a line cut short by the stop
    kept = trim_for_resume(path, update=2, policy_version=2)
    assert wall_at_update(kept, 2) == 20.0  # update 2's time, not its eval's
    assert kept == read_metrics(path)
    assert [(r["kind"], r.get("update", r.get("policy_version"))) for r in kept] == [
        ("update", 1),
        ("eval", 0),
        ("update", 2),
        ("eval", 2),  # an evaluation of the checkpoint's own weights stays
    ]
    assert len(path.read_text().splitlines()) == 4 and not (tmp_path / "metrics.jsonl.tmp").exists()
    assert evaluated_versions(kept) == {0, 2}
    assert trim_for_resume(path, update=2, policy_version=2) == kept  # idempotent
    assert wall_at_update(RECORDS, 0) == 0.0 and wall_at_update(RECORDS, 3) == 30.0
    missing = tmp_path / "none.jsonl"
    assert trim_for_resume(missing, 5, 5) == [] and not missing.exists()


def test_a_resumed_learner_continues_the_log_and_its_clock(tmp_path):
    cfg = metaworld_run_config(tmp_path)
    learner = PiRLLearner(cfg, threading.Event())
    learner.update_count, learner.algorithm.policy_version = 2, 2
    learner.save()
    _write(learner.metrics_path, RECORDS)

    saved = learner.out / "checkpoints/last/pretrained_model/train_config.json"
    cfg2 = TrainRLServerPipelineConfig.from_pretrained(str(saved))
    cfg2.resume = True
    resumed = PiRLLearner(resolve_pi_rl_config(cfg2), threading.Event())
    assert resumed.update_count == 2 and resumed.algorithm.policy_version == 2
    assert [r.get("update") for r in read_metrics(resumed.metrics_path) if r["kind"] == "update"] == [1, 2]
    assert abs(time.time() - resumed.t0 - 20.0) < 5.0  # wall_s carries on from update 2's 20 s
    # A fresh actor evaluates the checkpoint's version again: logged once. Versions the resumed run has not
    # reached come from an actor that still holds weights from before the resume.
    assert not resumed.new_evaluation(2) and not resumed.new_evaluation(3)
    assert resumed.new_evaluation(1)
    resumed.log({"kind": "update", "update": 3})
    last = read_metrics(resumed.metrics_path)[-1]
    assert last["update"] == 3 and 20.0 <= last["wall_s"] < 25.0

    fresh = PiRLLearner(metaworld_run_config(tmp_path / "other"), threading.Event())
    assert fresh.new_evaluation(0) and fresh.new_evaluation(None)  # no resume: every evaluation is logged


def _checkpointed_run(rl_out, update: int):
    (rl_out / "checkpoints" / f"{update:06d}").mkdir(parents=True)
    (rl_out / "checkpoints" / "last").symlink_to(f"{update:06d}")
    _write(rl_out / "metrics.jsonl", RECORDS)


def test_the_bench_resumes_from_the_last_checkpoint_or_starts_afresh(tmp_path, monkeypatch):
    run_dir = tmp_path / "flow_sde"
    rl_out = run_dir / "rl"
    assert resume_point(rl_out) is None
    _checkpointed_run(rl_out, 2)
    assert resume_point(rl_out) == (2, 20.0)

    import lerobot_pirl.bench.stages as stages

    launched = []
    monkeypatch.setattr(stages.subprocess, "Popen", lambda cmd, **kw: launched.append(cmd) or _Done())
    monkeypatch.setattr(stages, "supervise", lambda *a: read_metrics(a[2]))
    setup = task_setup("drawer-close-v3", rl_updates=4)
    opts = RunOptions(eval_episodes=2, eval_every=1, timeout_s=600.0, resume=True)
    records = rl_stage("drawer-close-v3", setup, "flow_sde", tmp_path / "sft", run_dir, opts, tmp_path / "d")
    learner_cmd, actor_cmd = launched
    assert "--resume=true" in learner_cmd and "--resume=true" not in actor_cmd  # the learner resumes
    assert len(records) == len(RECORDS)  # the run folder was kept

    # Its updates done, or its wall-time cap spent: nothing is launched, the records are returned.
    launched.clear()
    spent = RunOptions(eval_episodes=2, eval_every=1, timeout_s=20.0, resume=True)
    assert rl_stage("drawer-close-v3", setup, "flow_sde", tmp_path / "sft", run_dir, spent, tmp_path / "d")
    assert launched == []

    # Without --resume the run starts afresh: the old folder goes, the learner starts without --resume.
    fresh = RunOptions(eval_episodes=2, eval_every=1, timeout_s=600.0)
    rl_stage("drawer-close-v3", setup, "flow_sde", tmp_path / "sft", run_dir, fresh, tmp_path / "d")
    assert "--resume=true" not in launched[0] and not (rl_out / "metrics.jsonl").exists()


class _Done:
    """A stand-in for a process that has already exited."""

    returncode = 0

    def poll(self):
        return 0
