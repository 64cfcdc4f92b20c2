"""The πRL update run as several gloo processes (CPU) is the one-process update: same parameters, same
early-stop decisions, no rank left waiting in a collective."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import weakref

import pytest
import torch
import torch.multiprocessing as mp

from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import Rollout, RolloutSource, rollout_minibatches
from lerobot_pirl.runtime.distributed import RankGroup, combine_diagnostics
from tests.helpers import obs_batch, tiny_pi_rl
from tests.test_algorithm import make_algo

DEADLOCK_S = 60.0
SETTINGS = {
    "ppo": dict(estimator="gae"),
    "ppo_flow_noise": dict(estimator="gae", noise_method="flow_noise", sde_steps="all"),
    "grpo": dict(estimator="grpo", value_loss_coef=0.0),
    # approx_kl far above 1.5 * target_kl after the first epoch: every rank must stop there, together.
    "target_kl": dict(estimator="gae", target_kl=1e-9, update_epochs=3),
    "critic_warmup": dict(estimator="gae", critic_warmup_updates=1),
    # Hybrid: rank 0 alone holds the offline data; 8 chunks per minibatch, shared by the ranks.
    "hybrid": dict(estimator="gae", offline_loss_coef=0.5, offline_ratio=0.5),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_update(setting: str, accelerator=None):
    """A tiny flow_mlp policy, a fixed 48-sample rollout of its own chains, and one update (2 epochs of
    minibatches of 16, or as the setting says). Returns the policy and the update's stats."""
    kw = dict(SETTINGS[setting])
    noise_method, sde_steps = kw.pop("noise_method", "flow_sde"), kw.pop("sde_steps", None)
    policy = tiny_pi_rl(noise_method, sde_steps, seed=3)
    algo = make_algo(policy, **{"rollout_size": 48, "minibatch_size": 16, "actor_lr": 3e-3, **kw})
    batch = obs_batch(48, seed=5)
    with torch.no_grad():
        sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(7))
    rollout = Rollout.from_sample(batch, sample, torch.randn(48, generator=torch.Generator().manual_seed(9)))
    if kw.get("offline_loss_coef") and (accelerator is None or accelerator.is_main_process):
        offline = torch.Generator().manual_seed(11)

        def source(n: int) -> dict:
            seed = int(torch.randint(1 << 30, (1,), generator=offline))
            return {**obs_batch(n, seed=seed), "action": torch.randn(n, 4, 3, generator=offline)}

        algo.offline_source = source
    if accelerator is not None:
        algo.distribute(accelerator)
    with _same_flow_noise_for_every_chunk(enabled="offline_loss_coef" in kw):
        stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
    return policy, stats


@contextlib.contextmanager
def _same_flow_noise_for_every_chunk(enabled: bool):
    """The flow-matching loss draws its noise and time per process: ranks sharing an offline batch draw
    other noise than one process does for the whole batch (as ``lerobot-train`` under DDP does). Fixed
    noise and time make the offline loss a function of each chunk alone, so a 2-rank update can be
    compared with one process exactly."""
    from lerobot_pirl.policies.flow_mlp import modeling_flow_mlp as module

    saved = module.sample_noise, module.sample_time_beta
    if enabled:
        module.sample_noise = lambda shape, device: torch.full(shape, 0.5, device=device)
        module.sample_time_beta = lambda bsz, device, **_: torch.full((bsz,), 0.3, device=device)
    try:
        yield
    finally:
        module.sample_noise, module.sample_time_beta = saved


def join_ranks(rank: int, world: int, port: int, **env: str) -> None:
    """This spawned process's place in a local gloo group (what ``torchrun`` sets), plus ``env``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        **env,
    )
    torch.set_num_threads(1)


def spawn_two_ranks(main, args: tuple, deadline_s: float, what: str) -> None:
    """Run ``main(rank, 2, port, *args)`` in 2 spawned processes; fail (killing them) after ``deadline_s``."""
    ctx = mp.start_processes(main, args=(2, _free_port(), *args), nprocs=2, join=False, start_method="spawn")
    deadline = time.time() + deadline_s
    while not ctx.join(timeout=1.0):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2 gloo ranks did not finish {what} in {deadline_s:.0f}s (deadlock)")


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank: one update in every setting, in order, on one gloo process group."""
    join_ranks(rank, world, port)
    from lerobot_pirl.runtime.distributed import make_accelerator

    accelerator = make_accelerator("cpu")
    for setting in SETTINGS:
        policy, stats = _one_update(setting, accelerator)
        torch.save(
            {"params": {k: v.detach().clone() for k, v in policy.state_dict().items()}, "extra": stats.extra},
            os.path.join(out_dir, f"{setting}_rank{rank}.pt"),
        )
    # Leaving the group: no DDP wrapper (its reducer holds the group) may outlive it (a hang at exit).
    algo = make_algo(tiny_pi_rl(seed=3), rollout_size=48, minibatch_size=16)
    algo.distribute(accelerator)
    wrapper = weakref.ref(algo._score)
    algo.leave_ranks()
    left = {"wrapper_alive": wrapper() is not None, "group": torch.distributed.is_initialized()}
    torch.save(left, os.path.join(out_dir, f"leave_rank{rank}.pt"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, list[dict]]:
    """Every setting's update run by 2 gloo ranks (failing on a deadlock), results by setting and rank."""
    out_dir = tmp_path_factory.mktemp("ranks")
    spawn_two_ranks(_rank_main, (str(out_dir),), DEADLOCK_S, f"{len(SETTINGS)} updates")
    names = [*SETTINGS, "leave"]
    return {s: [torch.load(out_dir / f"{s}_rank{r}.pt") for r in range(2)] for s in names}


def test_leaving_the_group_frees_the_ddp_wrapper_first(two_ranks):
    """DDP's reducer holds the process group; destroyed after the group, it joins gloo's threads holding the
    GIL they need (a 2-process learner hung at exit). leave_ranks frees it while the group exists."""
    assert two_ranks["leave"] == [{"wrapper_alive": False, "group": False}] * 2


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_two_gloo_ranks_update_like_one_process(setting, two_ranks):
    torch.set_num_threads(1)
    ref_policy, ref_stats = _one_update(setting)
    ref = {k: v.detach() for k, v in ref_policy.state_dict().items()}
    ranks = two_ranks[setting]
    for r, result in enumerate(ranks):
        for key, expected in ref.items():
            got = result["params"][key]
            scale = expected.abs().max().clamp_min(1e-6)
            assert (got - expected).abs().max() / scale <= 1e-5, f"rank {r}: {key} differs from one process"
        keys = ["epochs_run", "minibatches", "early_stopped", "approx_kl", "clip_fraction", "ratio_max"]
        keys += ["offline_batch_size", "offline_grad_norm"] if setting == "hybrid" else []
        for key in keys:
            assert result["extra"][key] == pytest.approx(ref_stats.extra[key], rel=1e-4, abs=1e-7), (r, key)
    fresh = tiny_pi_rl(
        *(("flow_noise", "all") if "noise" in setting else ("flow_sde", None)), seed=3
    ).state_dict()
    assert any(not torch.equal(fresh[k], ref[k]) for k in ref), (
        "the update moved nothing: an empty comparison"
    )
    if setting == "target_kl":
        assert ref_stats.extra["early_stopped"] == 1.0 and ref_stats.extra["epochs_run"] == 1.0
    if setting == "critic_warmup":
        for key in ref:
            if not key.startswith("value_head."):
                assert torch.equal(ranks[0]["params"][key], fresh[key]), f"warm-up moved the actor's {key}"


def test_minibatch_shares_cover_each_global_minibatch_once():
    policy = tiny_pi_rl(seed=0)
    batch = obs_batch(10)
    with torch.no_grad():
        sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(0))
    rollout = Rollout.from_sample(batch, sample, torch.arange(10, dtype=torch.float32))
    one = list(rollout_minibatches(rollout, 4, 1, torch.Generator().manual_seed(1)))
    shares = [
        list(rollout_minibatches(rollout, 4, 1, torch.Generator().manual_seed(1), r, 3)) for r in range(3)
    ]
    # Minibatches of 4, 4, 2: the last (2 < 3 ranks) is skipped with 3 ranks, the others split 2 / 1 / 1.
    assert [mb["global_size"] for mb in one] == [4, 4, 2]
    assert [len(s) for s in shares] == [2, 2, 2]
    for i in range(2):
        parts = sorted(torch.cat([s[i]["advantages"] for s in shares]).tolist())
        assert parts == sorted(one[i]["advantages"].tolist())
        assert [s[i]["advantages"].numel() for s in shares] == [2, 1, 1]


def test_diagnostics_combine_as_one_minibatch():
    keys = ["approx_kl", "ratio_min", "ratio_max", "ratio_guard_max_dev"]
    rows = torch.tensor([[0.1, 0.9, 1.2, float("nan")], [0.4, 0.8, 1.1, 0.02]], dtype=torch.float64)
    out = combine_diagnostics(rows, keys, torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert out["approx_kl"] == pytest.approx(0.175)  # (3 * 0.1 + 1 * 0.4) / 4
    assert (out["ratio_min"], out["ratio_max"], out["ratio_guard_max_dev"]) == (0.8, 1.2, 0.02)
    assert RankGroup().combine({"approx_kl": 0.3}, 5) == {"approx_kl": 0.3}


def test_bf16_from_the_launcher_scores_chains_under_autocast(monkeypatch):
    """``accelerate launch --mixed_precision bf16`` (its environment variable) puts the re-scoring forward
    under bf16 autocast; the update still runs and its losses are finite."""
    from accelerate.state import AcceleratorState

    from lerobot_pirl.runtime.distributed import make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    try:
        accelerator = make_accelerator("cpu")
        policy = tiny_pi_rl(seed=0)
        algo = make_algo(policy, rollout_size=16, minibatch_size=8)
        batch = obs_batch(16)
        with torch.no_grad():
            sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(0))
        rollout = Rollout.from_sample(
            batch, sample, torch.randn(16, generator=torch.Generator().manual_seed(1))
        )
        seen = []
        score = policy.score_chain

        def recording_score(*args):
            seen.append(
                torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            )
            return score(*args)

        monkeypatch.setattr(policy, "score_chain", recording_score)
        algo.distribute(accelerator)
        stats = algo.update(algo.configure_data_iterator(RolloutSource(rollout)))
        assert seen and all(seen)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.losses.values())
    finally:
        AcceleratorState._reset_state(True)


def test_hybrid_needs_an_offline_chunk_per_process():
    """Every rank must get part of each offline batch: fewer chunks than processes fail at start-up."""
    from types import SimpleNamespace

    four_ranks = SimpleNamespace(
        distributed_type=SimpleNamespace(value="MULTI_CPU"), num_processes=4, process_index=0
    )
    algo = make_algo(tiny_pi_rl(seed=0), minibatch_size=4, offline_loss_coef=1.0, offline_ratio=0.5)
    with pytest.raises(ValueError, match=r"algorithm\.offline_ratio: 2 offline chunks"):
        algo.distribute(four_ranks)
