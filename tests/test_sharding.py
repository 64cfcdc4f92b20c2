"""The πRL learner sharded with FSDP2 over 2 gloo processes (CPU) computes what one process computes: the
same parameters after an update, the same values and advantages of a rollout, the same actor weights and
checkpoint state, with every process running the same collectives (no rank left waiting)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from lerobot_pirl.algorithms.pi_rl.rollout import RolloutBuffer
from lerobot_pirl.runtime.sharding import check_sharding
from tests.helpers import synthetic_transitions, tiny_pi_rl
from tests.test_algorithm import make_algo
from tests.test_distributed import _one_update, join_ranks, spawn_two_ranks

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
    """A policy, its algorithm after one unsharded update (Adam's state is not empty: what a resumed run
    brings to the sharding) and a rollout batch of 3 envs x 8 chunks (episodes of 4 chunks, half of them
    truncated: GAE bootstraps from final observations)."""
    policy = tiny_pi_rl(seed=3)
    algo = make_algo(policy, rollout_size=24, minibatch_size=8, actor_lr=3e-3)
    buffer = RolloutBuffer(algo.transition_spec())
    buffer.add(synthetic_transitions(policy, n_envs=3, n_chunks=8, seed=1))
    batch, _ = buffer.take(0, 0)
    algo.update_on(algo.prepare_rollout(batch))
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


def _pi0_update(path: str, accelerator=None):
    """A tiny pi0 (expert trained, VLM frozen) and one update on a rollout of its own chains."""
    from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import Rollout, RolloutSource
    from tests.test_vla_adapters import make_pirl
    from tests.vla_helpers import tiny_paligemma, vla_batch

    torch.manual_seed(0)  # the value head's initialisation
    with tiny_paligemma():
        policy = make_pirl(path, steps=3)
    algo = make_algo(policy, rollout_size=8, minibatch_size=4, actor_lr=3e-3)
    batch = vla_batch(8, seed=10)
    with torch.no_grad():
        sample = policy.eval().sample_chain(batch, generator=torch.Generator().manual_seed(0))
    rollout = Rollout.from_sample(batch, sample, torch.randn(8, generator=torch.Generator().manual_seed(1)))
    policy.train()
    if accelerator is not None:
        algo.distribute(accelerator)
    return policy, algo.update(algo.configure_data_iterator(RolloutSource(rollout)))


def _lora_update(root: str, accelerator=None):
    """A LoRA-wrapped flow_mlp (adapters, value and noise heads trained; the base frozen, in the same FSDP
    units as its adapters) and one update on a rollout of its own chains."""
    from pathlib import Path

    from lerobot_pirl.algorithms.pi_rl.pi_rl_algorithm import Rollout, RolloutSource
    from tests.helpers import obs_batch
    from tests.test_peft import _lora_policy

    policy = _lora_policy(Path(root))
    batch = obs_batch(16, seed=1)
    with torch.no_grad():
        sample = policy.sample_chain(batch, generator=torch.Generator().manual_seed(2))
    rollout = Rollout.from_sample(batch, sample, torch.randn(16, generator=torch.Generator().manual_seed(3)))
    algo = make_algo(policy, rollout_size=16, minibatch_size=8, actor_lr=1e-2)
    if accelerator is not None:
        algo.distribute(accelerator)
    return policy, algo.update(algo.configure_data_iterator(RolloutSource(rollout)))


def _rank_main(rank: int, world: int, port: int, out_dir: str, pi0_path: str, lora_root: str) -> None:
    join_ranks(rank, world, port, **FSDP_ENV)
    from torch.distributed.fsdp import FSDPModule

    from lerobot_pirl.runtime.distributed import make_accelerator, use_fsdp_on_cpu
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
    policy, stats = _lora_update(lora_root, accelerator)
    params = full_state(policy.state_dict())
    torch.save({"params": params, "extra": stats.extra}, os.path.join(out_dir, f"lora_rank{rank}.pt"))
    # pi0 enters its decoder layers piecewise (q_proj, mlp, ...), never through the layer's forward: its
    # FSDP units are the layers' MLPs (`--fsdp_transformer_layer_cls_to_wrap GemmaMLP`).
    os.environ["FSDP_TRANSFORMER_CLS_TO_WRAP"] = "GemmaMLP"
    use_fsdp_on_cpu(accelerator)
    policy, stats = _pi0_update(pi0_path, accelerator)
    units = sum(isinstance(m, FSDPModule) for m in policy.modules())
    params = full_state(policy.state_dict())
    torch.save(
        {"params": params, "extra": stats.extra, "units": units}, os.path.join(out_dir, f"pi0_rank{rank}.pt")
    )
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def tiny_pi0(tmp_path_factory) -> str:
    from tests.vla_helpers import build_base, tiny_paligemma

    path = tmp_path_factory.mktemp("pi0_base") / "pi0"
    with tiny_paligemma():
        build_base("pi0", path.parent).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory) -> str:
    """A directory holding the tiny flow_mlp base the LoRA case adapts (written once, read by every rank)."""
    from tests.test_peft import _lora_policy

    root = tmp_path_factory.mktemp("lora")
    _lora_policy(root)
    return str(root)


@pytest.fixture(scope="module")
def two_sharded_ranks(tmp_path_factory, tiny_pi0, lora_root) -> dict[str, list[dict]]:
    out_dir = tmp_path_factory.mktemp("sharded")
    spawn_two_ranks(_rank_main, (str(out_dir), tiny_pi0, lora_root), DEADLOCK_S, "the sharded updates")
    names = [*SETTINGS, "rollout", "lora", "pi0"]
    return {s: [torch.load(out_dir / f"{s}_rank{r}.pt") for r in range(2)] for s in names}


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
    """Values (and bootstrap values) computed by the sharded critic, the advantages, and after an update that
    continues the Adam state the optimisers had before sharding, the actors' weights and the whole optimiser
    state, gathered on every process."""
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


def test_sharded_pi0_update_is_the_one_process_update(two_sharded_ranks, tiny_pi0):
    """A tiny pi0 sharded with its MLPs as FSDP units (and the frozen VLM in the units too) updates as one
    process does."""
    torch.set_num_threads(1)
    ref_policy, ref_stats = _pi0_update(tiny_pi0)
    ref = {k: v.detach() for k, v in ref_policy.state_dict().items()}
    from tests.test_vla_adapters import make_pirl
    from tests.vla_helpers import tiny_paligemma

    with tiny_paligemma():
        fresh = make_pirl(tiny_pi0, steps=3).state_dict()
    assert any(not torch.equal(fresh[k], ref[k]) for k in ref if k.startswith("base.")), "nothing moved"
    for r, result in enumerate(two_sharded_ranks["pi0"]):
        assert result["units"] > 1, "the MLPs did not become FSDP units"
        assert result["extra"]["ratio_guard_max_dev"] == pytest.approx(0.0, abs=1e-6)
        for key, expected in ref.items():
            _assert_close(result["params"][key], expected, f"rank {r}: {key}")
        assert result["extra"]["approx_kl"] == pytest.approx(ref_stats.extra["approx_kl"], rel=1e-4, abs=1e-7)


def test_sharded_lora_update_is_the_one_process_update(two_sharded_ranks, lora_root):
    """LoRA under FSDP: frozen base weights and trained adapters share FSDP units; the adapters and heads
    move as with one process, the base does not move at all, and the ratio starts at 1."""
    torch.set_num_threads(1)
    ref_policy, ref_stats = _lora_update(lora_root)
    ref = {k: v.detach() for k, v in ref_policy.state_dict().items()}
    from pathlib import Path

    from tests.test_peft import _lora_policy, trained_under_lora

    fresh = _lora_policy(Path(lora_root)).state_dict()
    assert any(".lora_B." in k and not torch.equal(fresh[k], ref[k]) for k in ref), "no adapter moved"
    for r, result in enumerate(two_sharded_ranks["lora"]):
        assert set(result["params"]) == set(ref)
        assert result["extra"]["ratio_guard_max_dev"] == pytest.approx(0.0, abs=1e-5)
        assert result["extra"]["approx_kl"] == pytest.approx(ref_stats.extra["approx_kl"], rel=1e-4, abs=1e-7)
        for key, expected in ref.items():
            _assert_close(result["params"][key], expected, f"rank {r}: {key}")
            if not trained_under_lora(key):
                assert torch.equal(result["params"][key], fresh[key]), f"rank {r}: frozen {key} moved"


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
