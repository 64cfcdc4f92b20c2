"""End to end (`slow`): the learner as 2 gloo processes under ``torchrun`` (accelerate's own launcher
runs several CPU processes only through MPI), with two actors; its checkpoint resumed by a 1-process
learner, whose checkpoint is resumed by 2 processes again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import write_metaworld_base
from tests.test_runtime_e2e import _config, _free_port, _spawn, _updates, _wait
from tests.test_sharding import FSDP_ENV

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


# The learner's engines: DDP, and FSDP2 as `accelerate launch --use_fsdp` configures it (its environment).
ENGINES = {"ddp": ({}, "MULTI_CPU"), "fsdp": (FSDP_ENV, "FSDP")}


def _learner(
    recipe: Path, log: Path, processes: int, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    if processes == 1:
        return _spawn("lerobot_pirl.learner", recipe, log, *extra)
    return subprocess.Popen(
        [*TORCHRUN, "-m", "lerobot_pirl.learner", f"--config_path={recipe}", *extra],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        start_new_session=True,  # its own process group: a failed test ends the launcher's workers too
    )


@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_process_learner_trains_with_actors_and_resumes_across_process_counts(tmp_path, engine):
    """Checkpoints move between a 2-process learner (DDP, or sharded with FSDP) and a 1-process one."""
    engine_env, engine_name = ENGINES[engine]
    base = tmp_path / "base"
    write_metaworld_base(base)
    recipe = _config(tmp_path, base, _free_port())
    run = tmp_path / "run"
    procs: list[subprocess.Popen] = []
    try:
        done = 0
        for phase, (processes, updates) in enumerate([(2, 2), (1, 3), (2, 4)]):
            log = tmp_path / f"learner{phase}.log"
            extra = [f"--policy.online_steps={updates}"] + (["--resume=true"] if phase else [])
            learner = _learner(recipe, log, processes, *extra, env=engine_env)
            procs.append(learner)
            time.sleep(2.0)
            actors = [
                _spawn(
                    "lerobot_pirl.actor",
                    recipe,
                    tmp_path / f"actor{phase}{i}.log",
                    f"--env.seed={i * 100000}",
                )
                for i in range(2)
            ]
            procs += actors
            assert _wait(learner, 240, log) == 0, log.read_text()[-3000:]
            for i, actor in enumerate(actors):
                assert _wait(actor, 60, tmp_path / f"actor{phase}{i}.log") == 0
            text = log.read_text()
            if processes == 2:
                assert f"the update runs on 2 processes ({engine_name}" in text, text[-3000:]
            if phase:
                assert f"resumed: update {done}, policy version {done}" in text, text[-3000:]
            records = _updates(run)[done:]
            assert [r["update"] for r in records] == list(range(done + 1, updates + 1))
            assert [r["learner_processes"] for r in records] == [float(processes)] * len(records)
            assert all(r["ratio_guard_max_dev"] < 1e-3 for r in records if r["on_policy_fraction"] > 0)
            assert (run / "checkpoints" / "last").resolve().name == f"{updates:06d}"
            done = updates
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            if p.args[: len(TORCHRUN)] == TORCHRUN:  # the launcher's workers outlive a killed launcher
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
    # Only rank 0 wrote: the run folder holds one learner's files.
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "logs",
        "metrics.jsonl",
        "training_curves.png",
    ]
    assert [p.name for p in (run / "logs").iterdir() if p.name.startswith("learner")] == ["learner_e2e.log"]
