"""Learner pieces that need no actor: the hybrid mode's offline buffer (demos, corrections, resume),
re-sending weights when starved."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.rl.train_rl import TrainRLServerPipelineConfig

from lerobot_pirl.datasets import state_action_features, write_dataset
from lerobot_pirl.learner import PiRLLearner
from lerobot_pirl.runtime.config import resolve_pi_rl_config
from tests.helpers import metaworld_run_config


def _demo_dataset(path, state_dim: int = 39, frames: int = 20):
    rng = np.random.default_rng(0)
    episodes = [
        [
            {"observation.state": rng.normal(size=state_dim), "action": rng.uniform(-1, 1, size=4)}
            for _ in range(frames)
        ]
        for _ in range(2)
    ]
    write_dataset(path, "local/demos", 80, state_action_features(state_dim, 4), episodes, "press")
    return {"repo_id": "local/demos", "root": str(path)}


HYBRID = ["--algorithm.offline_loss_coef=0.1", "--algorithm.offline_ratio=0.125"]


def test_offline_batches_come_from_the_dataset_as_base_policy_chunks(tmp_path):
    cfg = metaworld_run_config(tmp_path, HYBRID, dataset=_demo_dataset(tmp_path / "demos"))
    learner = PiRLLearner(cfg, threading.Event())
    assert learner.offline.num_demos == 40
    batch = learner.offline_batch(learner.cfg.algorithm.offline_batch_size)
    assert batch["action"].shape == (4, 6, 4)  # 0.125 * minibatch 32 chunks of the base's 6 actions
    assert batch["observation.state"].shape == (4, 39) and batch["action_is_pad"].shape == (4, 6)
    loss, _ = learner.policy.forward(batch)
    assert torch.isfinite(loss)


def test_a_dataset_that_does_not_fit_the_policy_fails_at_start_up(tmp_path):
    cfg = metaworld_run_config(tmp_path, HYBRID, dataset=_demo_dataset(tmp_path / "demos", state_dim=38))
    with pytest.raises(ValueError, match=r"dataset local/demos: 'observation.state' has shape \(38,\)"):
        PiRLLearner(cfg, threading.Event())


def _corrected(policy, steps: int):
    """Transitions of 2 MetaWorld envs; env 0's chunk was corrected by a human and ran ``steps`` steps."""
    from lerobot_pirl.runtime.transitions import chunk_transitions

    state = {"observation.state": torch.randn(2, 39)}
    sample = policy.sample_chain(state, generator=torch.Generator().manual_seed(0))
    return chunk_transitions(
        state,
        {"observation.state": torch.randn(2, 39)},
        torch.full_like(sample.executed, 0.5),  # what ran: the human's actions
        torch.zeros(2),
        torch.zeros(2, dtype=torch.bool),
        torch.zeros(2, dtype=torch.bool),
        sample,
        policy_version=0,
        actor_id=1,
        env_ids=torch.arange(2),
        episode_ids=torch.zeros(2, dtype=torch.long),
        chunk_indices=torch.zeros(2, dtype=torch.long),
        episode_chunks=torch.zeros(2, dtype=torch.long),
        success=torch.zeros(2),
        intervention=torch.tensor([True, False]),
        steps=torch.tensor([steps, 3]),
    )


def test_corrections_fill_the_offline_buffer_and_come_back_on_resume(tmp_path):
    """No dataset: interventions alone fill the buffer, with the actions that ran (padded to the base's
    chunk after the steps that ran); a resumed learner gets them back from its checkpoint."""
    cfg = metaworld_run_config(tmp_path, HYBRID)
    learner = PiRLLearner(cfg, threading.Event())
    assert learner.offline is not None and learner.offline_batch(4) is None  # empty: PPO alone
    learner.buffer.add(_corrected(learner.policy, steps=2), learner.keep_correction)
    assert learner.offline.counts()["offline_correction_chunks"] == 1
    item = learner.offline.corrections[0]
    assert item["action"].shape == (6, 4) and torch.all(item["action"][:2] == 0.5)
    assert item["action_is_pad"].tolist() == [False, False, True, True, True, True]
    batch = learner.offline_batch(3)
    assert batch["action"].shape == (3, 6, 4) and torch.isfinite(learner.policy.forward(batch)[0])
    learner.update_count = 1
    learner.save()

    saved = Path(cfg.output_dir) / "checkpoints/last/pretrained_model/train_config.json"
    cfg2 = TrainRLServerPipelineConfig.from_pretrained(str(saved))
    cfg2.resume = True
    resumed = PiRLLearner(resolve_pi_rl_config(cfg2), threading.Event())
    again = resumed.offline.corrections[0]
    assert torch.equal(again["action"], item["action"]) and torch.equal(
        again["action_is_pad"], item["action_is_pad"]
    )
    assert torch.equal(again["observation.state"], item["observation.state"])
    assert resumed.offline.counts()["offline_corrections_received"] == 1

    # A malformed corrected chunk is counted and skipped; the learner and its rollout buffer carry on.
    bad = _corrected(resumed.policy, steps=2)
    bad[0]["action"] = "not actions"
    before = len(resumed.buffer)
    for tr in bad:
        resumed.keep_correction(tr)
    assert len(resumed.offline.corrections) == 1 and len(resumed.buffer) == before
    assert any("unusable correction" in k for k in resumed.buffer.rejected)


def test_a_starved_learner_sends_its_weights_again(tmp_path):
    """No transition for ``learner_resend_s`` with the rollout short: the same version is published again
    (each actor's new chunk budget); transitions arriving, or the option off, keep it quiet."""
    learner = PiRLLearner(metaworld_run_config(tmp_path, ["--policy.learner_resend_s=5"]), threading.Event())
    learner.push_weights()
    seen, version, _ = learner.board.wait_newer(0, timeout=1.0)
    assert not learner.resend_if_starved()  # no transition yet: the actors are still starting
    learner.transition_queue.put(b"not a transition")  # any arrival counts, even a rejected one
    learner.last_arrival = time.time() - 60
    learner.drain()
    assert not learner.resend_if_starved()
    learner.last_arrival = time.time() - 6
    assert learner.resend_if_starved()
    again, same_version, payload = learner.board.wait_newer(seen, timeout=1.0)
    assert (again, same_version) == (seen + 1, version) and payload is not None
    assert not learner.resend_if_starved()  # the clock restarts with each re-send
    learner.cfg.policy.learner_resend_s = None
    learner.last_arrival = time.time() - 1e6
    assert not learner.resend_if_starved()


def test_demo_items_are_read_once_within_the_cache_budget(tmp_path):
    """Decoded demo items stay in memory up to the cache budget; beyond it they are read again."""
    from lerobot_pirl.algorithms.pi_rl.offline import OfflineBuffer

    reads = []

    class Demos:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            reads.append(i)
            return {"observation.state": torch.full((4,), float(i)), "action": torch.zeros(2, 1)}

    item_bytes = 4 * 4 + 2 * 4
    buffer = OfflineBuffer(chunk_size=2, capacity=0, demos=Demos(), cache_bytes=2 * item_bytes)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = buffer.sample(3, g)
        assert batch["observation.state"].shape == (3, 4)
    assert len(buffer._cache) == 2 and sorted(set(reads)) == [0, 1, 2]
    cached = set(buffer._cache)
    assert all(reads.count(i) == 1 for i in cached)  # cached items were read once
    assert reads.count(({0, 1, 2} - cached).pop()) > 1  # the one over budget is read every time


def _glossary_keys() -> set[str]:
    """The metric keys (first-column code spans) of every table of docs/architecture.md's glossary."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    glossary = text[text.index("## 4. Metric glossary") :]
    keys: set[str] = set()
    for line in glossary.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
    return keys


def _one_update(learner, eval_success: float | None = None) -> None:
    """Fill the learner with 32 chunks of 2 envs (the first chunk of env 0 corrected by a human) and an
    interaction message with a finished episode (and an evaluation), then run one update."""
    from lerobot_pirl.runtime.interactions import encode_interaction

    transitions = []
    for c in range(32):
        chunk = _corrected(learner.policy, steps=3)
        for tr in chunk:
            info = tr["complementary_info"]
            info["chunk_index"], info["episode_chunk"] = c, c
            info["is_intervention"] = info["is_intervention"] and c == 0
        transitions += chunk
    learner.buffer.add(transitions, learner.keep_correction)
    episode = {"return": 1.0, "success": 1.0, "length": 40, "intervention_rate": 0.1}
    message = {"env_steps": 640, "episodes": [episode], "env_steps_per_s": 50.0, "actor_id": 1}
    message["time_s"] = {"sample": 1.0, "env": 6.0, "send": 0.5, "wait": 0.5, "eval": 0.0}
    if eval_success is not None:
        message.update(eval_success_rate=eval_success, eval_episodes=10, policy_version=0)
    learner.interaction_queue.put(encode_interaction(message))
    learner.drain()
    assert learner.maybe_update()


def test_every_metric_the_glossary_lists_reaches_metrics_jsonl(tmp_path):
    """A hybrid update with episodes and a correction logs every update-record key the glossary lists (the
    evaluation keys are the actor's; grad norms are LeRobot's ``<group>_grad_norm``)."""
    import json

    cfg = metaworld_run_config(tmp_path, HYBRID, dataset=_demo_dataset(tmp_path / "demos"))
    learner = PiRLLearner(cfg, threading.Event())
    _one_update(learner)
    record = json.loads((Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    evaluation = {"eval_success_rate", "eval_ci95_low", "eval_ci95_high", "eval_episodes", "eval_mean_return"}
    listed = _glossary_keys()
    assert len(listed) > 50 and evaluation <= listed
    # GRPO's group counts appear only in GRPO runs (test_algorithm checks that a GRPO rollout logs them).
    grpo = {k for k in listed if k.startswith("grpo_")}
    assert grpo == {"grpo_episodes", "grpo_groups", "grpo_groups_kept", "grpo_groups_kept_fraction"}
    missing = listed - evaluation - grpo - set(record)
    assert not missing, f"glossary keys no update record carries: {sorted(missing)}"
    assert {"base_grad_norm", "value_head_grad_norm"} <= set(record)
    # Where the actors' time went, as they reported it, and the learner's own phases of this update.
    assert record["time_actor_env_s"] == 6.0 and record["time_actor_env_frac"] == 0.75
    assert record["time_learner_optimise_s"] > 0 and record["time_learner_rollout_wait_s"] == 0.0


def _wandb_records(run_dir: Path, wait_s: float = 60.0) -> tuple[list[dict], dict[str, str]]:
    """History rows and metric definitions (name or glob -> step metric) of an offline wandb run.

    ``wandb.finish()`` returns once the wandb service has handled the run's exit, which can be before its
    writer has flushed the ``.wandb`` file to disk (seen once on a loaded CI machine: the file read empty).
    The file is read again until it holds the exit record, for at most ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        kinds, rows, metrics, error = _scan_wandb_file(run_dir)
        if "exit" in kinds:
            return rows, metrics
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the offline wandb file in {run_dir} has no exit record after {wait_s} s "
                f"(the last read stopped at: {error!r})"
            )
        time.sleep(0.5)


def _scan_wandb_file(run_dir: Path) -> tuple[set[str], list[dict], dict[str, str], Exception | None]:
    """The record kinds, history rows and metric definitions written so far, and the error that ended the scan
    (no file yet, or a torn tail: wandb's datastore raises bare ``Exception`` / ``AssertionError`` for those, so
    the error is kept for the caller's timeout message rather than told apart here)."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    kinds, rows, metrics, error = set(), [], {}, None
    try:
        (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # one offline run, once created
        store = datastore.DataStore()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            kinds.add(kind)
            if kind == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
            elif kind == "metric":
                metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
    except Exception as e:  # not created yet, or a block still being written: not complete
        kinds.discard("exit")
        error = e
    return kinds, rows, metrics, error


def _offline_wandb_learner(tmp_path, monkeypatch) -> tuple[TrainRLServerPipelineConfig, PiRLLearner]:
    """A learner logging to the real wandb library in offline mode."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ["--wandb.enable=true", "--wandb.project=pirl-test", "--wandb.mode=offline"]
    cfg = metaworld_run_config(tmp_path, args)
    return cfg, PiRLLearner(cfg, threading.Event())


def test_wandb_gets_every_metric_against_env_steps_and_the_curves(tmp_path, monkeypatch):
    """With --wandb.enable=true (the real wandb library, offline): every number of metrics.jsonl reaches
    wandb under train/ or eval/ with env steps as the x-axis, and the training-curves PNG at the end."""
    cfg, learner = _offline_wandb_learner(tmp_path, monkeypatch)
    _one_update(learner, eval_success=0.5)
    learner.finish_logging()
    rows, metrics = _wandb_records(Path(cfg.output_dir))
    assert metrics["train/*"] == "train/env_steps" and metrics["eval/*"] == "eval/env_steps"
    logged = {k for row in rows for k in row}
    for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        mode = "eval" if record["kind"] == "eval" else "train"
        numbers = {k for k, v in record.items() if isinstance(v, int | float) and k != "actor_id"}
        missing = {f"{mode}/{k}" for k in numbers} - logged
        assert not missing, f"metrics.jsonl numbers wandb did not get: {sorted(missing)}"
    assert any(row.get("eval/eval_success_rate") == 0.5 and "eval/env_steps" in row for row in rows)
    assert "train/training_curves/_type" in logged  # the image (wandb stores its fields nested)
    assert (Path(cfg.output_dir) / "training_curves.png").is_file()


def test_evaluation_videos_on_this_machine_reach_wandb(tmp_path, monkeypatch):
    """An actor's evaluation message lists its MP4s; the learner logs the local ones to wandb as eval/video."""
    from lerobot.utils.io_utils import write_video

    from lerobot_pirl.runtime.interactions import encode_interaction

    cfg, learner = _offline_wandb_learner(tmp_path, monkeypatch)
    video = tmp_path / "eval_episode_0.mp4"
    write_video(video, [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(5)], fps=10)
    message = {"actor_id": 1, "policy_version": 0, "eval_success_rate": 0.5, "eval_episodes": 2}
    message["eval_videos"] = [str(video), str(tmp_path / "on_another_machine.mp4")]
    learner.interaction_queue.put(encode_interaction(message))
    learner.drain()
    learner.finish_logging()
    rows, _ = _wandb_records(Path(cfg.output_dir))
    videos = [row for row in rows if "eval/video/_type" in row]
    assert len(videos) == 1 and videos[0]["eval/video/_type"] == "video-file"


def test_update_records_carry_the_envs_per_task_of_the_actors_reporting_now(tmp_path):
    """``envs/<task>``: the latest split of each actor that re-splits its envs, summed over the actors heard
    from in the last minute (a stopped or restarted actor's split drops out)."""
    from lerobot_pirl.runtime.interactions import encode_interaction

    cfg = metaworld_run_config(tmp_path)
    learner = PiRLLearner(cfg, threading.Event())
    for actor_id, counts in (
        (7, {"reach-v3": 1, "push-v3": 3}),
        (7, {"reach-v3": 3, "push-v3": 1}),
        (8, {"reach-v3": 2}),
    ):
        learner.interaction_queue.put(encode_interaction({"actor_id": actor_id, "env_counts": counts}))
    learner.drain()
    learner.env_counts[9] = ({"reach-v3": 50}, time.time() - 120.0)  # an actor that stopped two minutes ago
    _one_update(learner)
    record = json.loads((Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["envs/reach-v3"] == 5.0 and record["envs/push-v3"] == 1.0
