"""The πRL learner sharded with FSDP2 over 2 gloo processes (CPU) computes what one process computes: the
same parameters after an update, the same values and advantages of a rollout, the same actor weights and
checkpoint state, with every process running the same collectives (no rank left waiting)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from lerobot_pirl.runtime.sharding import check_sharding
from tests.helpers import synthetic_transitions, tiny_pi_rl
from tests.test_algorithm import make_algo
from tests.test_distributed import _free_port, _one_update

DEADLOCK_S = 180.0  # start-up (spawned imports) and 5 sharded updates take ~60 s on 2 busy cores
# What `accelerate launch --use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
# --fsdp_transformer_layer_cls_to_wrap FlowMLPBlock` sets: each layer of the tiny policy is an FSDP unit of
# its own (as a VLA's decoder layers can be), the rest (heads, output layers) is the root unit.
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "FlowMLPBlock",
}
SETTINGS = ["ppo", "ppo_flow_noise", "grpo", "target_kl", "critic_warmup"]


def _rollout_case():
    """A policy, its algorithm and a rollout batch of 3 envs x 8 chunks (episodes of 4 chunks, half of
    them truncated: GAE bootstraps from final observations)."""
    policy = tiny_pi_rl(seed=3)
    algo = make_algo(policy, rollout_size=24, minibatch_size=8, actor_lr=3e-3)
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(synthetic_transitions(policy, n_envs=3, n_chunks=8, seed=1))
    batch, _ = buffer.take(0, 0)
    return policy, algo, batch


def _rollout_results(algo, rollout) -> dict:
    """One update on ``rollout``, then what a learner reads from the algorithm (gathered when sharded)."""
    algo.update_on(rollout)
    model, optimizers = algo.full_training_state()
    return {
        "values": rollout.old_values.cpu(),
        "advantages": rollout.advantages.cpu(),
        "returns": rollout.returns.cpu(),
        "weights": algo.get_weights(),
        "model": model,
        "optimizers": optimizers,
    }


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        **FSDP_ENV,
    )
    torch.set_num_threads(1)
    from lerobot_pirl.runtime.distributed import make_accelerator
    from lerobot_pirl.runtime.sharding import full_state

    accelerator = make_accelerator("cpu")
    for setting in SETTINGS:
        policy, stats = _one_update(setting, accelerator)
        params = full_state(policy.state_dict())
        torch.save(
            {"params": params, "extra": stats.extra}, os.path.join(out_dir, f"{setting}_rank{rank}.pt")
        )
    _, algo, batch = _rollout_case()
    algo.distribute(accelerator)
    rollout = algo.score_rollout(algo.rollout_inputs(batch))
    torch.save(_rollout_results(algo, rollout), os.path.join(out_dir, f"rollout_rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_sharded_ranks(tmp_path_factory) -> dict[str, list[dict]]:
    out_dir = tmp_path_factory.mktemp("sharded")
    ctx = mp.start_processes(
        _rank_main, args=(2, _free_port(), str(out_dir)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.time() + DEADLOCK_S
    while not ctx.join(timeout=1.0):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2 sharded gloo ranks did not finish in {DEADLOCK_S:.0f}s (deadlock)")
    return {s: [torch.load(out_dir / f"{s}_rank{r}.pt") for r in range(2)] for s in [*SETTINGS, "rollout"]}


def _assert_close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = expected.abs().max().clamp_min(1e-6)
    assert got.shape == expected.shape, what
    assert (got.float() - expected.float()).abs().max() / scale <= 1e-5, f"{what} differs from one process"


@pytest.mark.parametrize("setting", SETTINGS)
def test_sharded_update_is_the_one_process_update(setting, two_sharded_ranks):
    torch.set_num_threads(1)
    ref_policy, ref_stats = _one_update(setting)
    ref = {k: v.detach() for k, v in ref_policy.state_dict().items()}
    fresh = tiny_pi_rl(*(("flow_noise", "all") if "noise" in setting else ("flow_sde", None)), seed=3)
    assert any(not torch.equal(fresh.state_dict()[k], ref[k]) for k in ref), "the update moved nothing"
    for r, result in enumerate(two_sharded_ranks[setting]):
        assert set(result["params"]) == set(ref)
        for key, expected in ref.items():
            _assert_close(result["params"][key], expected, f"rank {r}: {key}")
        for key in ["epochs_run", "minibatches", "early_stopped", "approx_kl", "clip_fraction", "ratio_max"]:
            assert result["extra"][key] == pytest.approx(ref_stats.extra[key], rel=1e-4, abs=1e-7), (r, key)


def test_sharded_rollout_weights_and_checkpoint_state_are_the_one_process_ones(two_sharded_ranks):
    """Values (and bootstrap values) computed by the sharded critic, the advantages, the actors' weights
    and the whole optimiser state after an update, gathered on every process."""
    torch.set_num_threads(1)
    _, algo, batch = _rollout_case()
    expected = _rollout_results(algo, algo.prepare_rollout(batch))
    assert expected["advantages"].abs().sum() > 0 and expected["optimizers"]["base"]["state"]
    for r, got in enumerate(two_sharded_ranks["rollout"]):
        for key in ("values", "advantages", "returns"):
            _assert_close(got[key], expected[key], f"rank {r}: {key}")
        assert set(got["weights"]) == set(expected["weights"])
        for key, value in expected["weights"].items():
            _assert_close(got["weights"][key], value, f"rank {r}: weight {key}")
        for key, value in expected["model"].items():
            _assert_close(got["model"][key], value, f"rank {r}: state {key}")
        for group, state in expected["optimizers"].items():
            mine = got["optimizers"][group]
            assert [g["params"] for g in mine["param_groups"]] == [g["params"] for g in state["param_groups"]]
            assert set(mine["state"]) == set(state["state"]), (r, group)
            for i, moments in state["state"].items():
                for name, value in moments.items():
                    _assert_close(mine["state"][i][name], value, f"rank {r}: {group} state {i} {name}")


@pytest.mark.parametrize(
    ("plugin", "hybrid", "error"),
    [
        (dict(fsdp_version=1), False, r"fsdp_version 1: the πRL learner shards with FSDP2"),
        (dict(activation_checkpointing=True), False, r"fsdp_activation_checkpointing"),
        ({}, True, r"algorithm.offline_loss_coef > 0 \(hybrid\) is not supported under FSDP"),
    ],
)
def test_fsdp_settings_the_learner_does_not_run_are_refused(plugin, hybrid, error):
    settings = {"fsdp_version": 2, "activation_checkpointing": False, **plugin}
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(**settings)))
    with pytest.raises(ValueError, match=error):
        check_sharding(accelerator, hybrid)
