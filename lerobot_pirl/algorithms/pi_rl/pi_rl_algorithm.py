"""πRL's update as a LeRobot ``RLAlgorithm``: PPO (GAE) or GRPO over chunk-level transitions."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import torch
from lerobot.rl.algorithms.base import RLAlgorithm
from lerobot.rl.algorithms.configs import TrainingStats
from lerobot.utils.constants import ACTION
from torch import Tensor
from torch.optim import Optimizer

from lerobot_pirl.algorithms.pi_rl.advantages import (
    compute_gae,
    grpo_advantages,
    normalize,
    normalize_per_group,
)
from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.algorithms.pi_rl.losses import entropy_bonus, explained_variance, ppo_actor_loss, value_loss
from lerobot_pirl.algorithms.pi_rl.offline import offline_loss_weight
from lerobot_pirl.algorithms.pi_rl.rollout import TransitionBatch, TransitionSpec
from lerobot_pirl.runtime.distributed import ChainScorer, RankGroup
from lerobot_pirl.runtime.sharding import (
    check_sharding,
    full,
    full_optimizer_state,
    full_state,
    load_sharded_optimizer_state,
    optimizer_state_by_name,
    shard,
    shards_parameters,
)
from lerobot_pirl.transition_keys import TASK

logger = logging.getLogger(__name__)

POLICY_VERSION_KEY = "__pirl_policy_version__"
# Set (a true scalar tensor) in the learner's last weights publication: training is over.
FINAL_WEIGHTS_KEY = "__pirl_final__"


@dataclass
class Rollout:
    """A prepared on-policy rollout: normalised observations and everything the PPO loss reads."""

    obs: dict[str, Tensor]
    chain: Tensor
    denoise_index: Tensor
    old_logprob: Tensor
    old_values: Tensor
    advantages: Tensor
    returns: Tensor
    on_policy: Tensor  # [N] bool: sampled by the current weights (the ratio guard reads these)

    def __len__(self) -> int:
        return int(self.advantages.shape[0])

    @classmethod
    def from_sample(cls, obs: dict[str, Tensor], sample, advantages: Tensor) -> Rollout:
        """A rollout of freshly sampled chains (``sample``: a ``ChainSample`` of the current weights) with the
        given advantages and returns = value + advantage: for benchmarks and tests of the update alone."""
        return cls(
            obs=obs,
            chain=sample.chain,
            denoise_index=sample.denoise_index,
            old_logprob=sample.logprob,
            old_values=sample.value,
            advantages=advantages,
            returns=sample.value + advantages,
            on_policy=torch.ones(advantages.shape[0], dtype=torch.bool, device=advantages.device),
        )

    def to(self, device: str | torch.device) -> Rollout:
        """The same rollout with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "obs"}
        return Rollout(obs={k: v.to(device) for k, v in self.obs.items()}, **moved)

    def select(self, idx: Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {"obs": {k: v[idx] for k, v in self.obs.items()}}
        for f in fields(self):
            if f.name != "obs":
                out[f.name] = getattr(self, f.name)[idx]
        return out


@dataclass
class RolloutInputs:
    """A rollout before its values: the transitions (rewards, episodes, stored chains; of the raw
    observations only the task strings) and the normalised policy inputs the values are computed from."""

    batch: TransitionBatch
    obs: dict[str, Tensor]
    boot_rows: Tensor  # ``bootstrap_rows(batch)``: the transitions GAE bootstraps from
    boot_obs: dict[str, Tensor] | None  # their final observations (None: none, or no GAE)

    def to(self, device: str | torch.device) -> RolloutInputs:
        """The same inputs with the policy inputs on ``device``."""
        boot = None if self.boot_obs is None else {k: v.to(device) for k, v in self.boot_obs.items()}
        return RolloutInputs(self.batch, {k: v.to(device) for k, v in self.obs.items()}, self.boot_rows, boot)


def bootstrap_rows(batch: TransitionBatch) -> Tensor:
    """The transitions whose return bootstraps from the value of their final observation: truncated
    episodes and streams whose next transition is not in the batch."""
    return torch.nonzero(batch.truncated | batch.gap_after, as_tuple=True)[0]


def _take(v, idx: Tensor):
    return v[idx] if isinstance(v, Tensor) else [v[i] for i in idx.tolist()]


def _to(v, device):
    return v.to(device) if isinstance(v, Tensor) else v


def _policy_inputs(processed: dict, device) -> dict[str, Tensor]:
    """The tensors a preprocessor produced (features, language tokens), on the policy's device."""
    return {k: v.to(device) for k, v in processed.items() if isinstance(v, Tensor)}


# accelerate engines the update runs on: one process, DDP on GPUs, DDP on CPUs (gloo).
SUPPORTED_ENGINES = ("NO", "MULTI_GPU", "MULTI_CPU")

# Per-minibatch diagnostics of the offline (hybrid) loss, averaged into an update's extras.
OFFLINE_DIAGNOSTICS = ("offline_weight", "offline_batch_size", "offline_grad_norm", "offline_grad_share")


class OfflineTerm(NamedTuple):
    """The hybrid mode's offline loss in one minibatch."""

    loss: Tensor  # the base's flow-matching loss, mean over this process's offline chunks
    weight: float  # the scheduled weight of this update
    batch_size: int  # chunks in the whole offline batch (all processes)
    # This process's chunks x processes / batch_size: weighted by it, the engine's mean over the processes
    # of the offline gradients is the gradient of the whole batch's mean loss (1 in one process).
    share: float


@dataclass
class UpdateLog:
    """Diagnostics of one update, accumulated minibatch by minibatch."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    ratio_min: float = float("inf")
    ratio_max: float = float("-inf")
    ratio_guard_max_dev: float = float("nan")
    minibatches: int = 0
    epochs_run: int = 0
    early_stopped: bool = False
    critic_warmup: bool = False  # this update trained the value head only

    def add(self, step: dict[str, float]) -> None:
        """A minibatch's diagnostics: extremes of the ratio, the guard, sums of everything else."""
        self.minibatches += 1
        for key, value in step.items():
            if key == "ratio_min":
                self.ratio_min = min(self.ratio_min, value)
            elif key == "ratio_max":
                self.ratio_max = max(self.ratio_max, value)
            elif key == "ratio_guard_max_dev":
                self.ratio_guard_max_dev = value
            else:
                self.sums[key] += value

    def training_stats(self) -> TrainingStats:
        """Means over the minibatches, as LeRobot's ``TrainingStats``."""
        mean = {k: v / max(self.minibatches, 1) for k, v in self.sums.items()}
        losses = {k: mean[k] for k in ("actor_loss", "value_loss", "entropy", "offline_loss") if k in mean}
        grad_norms = {k.split("/", 1)[1]: v for k, v in mean.items() if k.startswith("grad_norm/")}
        extra = {k: mean.get(k, 0.0) for k in ("approx_kl", "clip_fraction", "ratio_mean", "noise_std")}
        extra.update({k: mean[k] for k in OFFLINE_DIAGNOSTICS if k in mean})
        extra.update(
            ratio_min=self.ratio_min,
            ratio_max=self.ratio_max,
            ratio_guard_max_dev=self.ratio_guard_max_dev,
            epochs_run=float(self.epochs_run),
            early_stopped=float(self.early_stopped),
            minibatches=float(self.minibatches),
            critic_warmup=float(self.critic_warmup),
        )
        return TrainingStats(losses=losses, grad_norms=grad_norms, extra=extra)


class RolloutSource:
    """Holds one prepared rollout; stands where LeRobot's ``DataMixer`` stands for replay-based SAC."""

    def __init__(self, rollout: Rollout):
        self.rollout = rollout


def rollout_minibatches(
    rollout: Rollout,
    minibatch_size: int,
    epochs: int,
    generator: torch.Generator,
    rank: int = 0,
    world: int = 1,
) -> Iterator[dict[str, Any]]:
    """``epochs`` shuffled passes over the rollout in minibatches, each tagged with its epoch and its
    global size. With ``world`` processes, every process draws the same permutation and keeps every
    ``world``-th sample of each minibatch from its ``rank`` on; a last minibatch smaller than ``world``
    (which could not give every process a sample) is skipped."""
    n = len(rollout)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, minibatch_size):
            idx = perm[start : start + minibatch_size]
            if len(idx) < world:
                continue
            mb = rollout.select(idx[rank::world])
            mb["epoch"], mb["global_size"] = epoch, len(idx)
            yield mb


def task_ids(batch: TransitionBatch) -> Tensor | None:
    """An id per transition of its task string (the observations' ``task``), or ``None`` when the batch
    carries no task strings."""
    tasks = batch.state.get(TASK)
    if not isinstance(tasks, list) or len(tasks) != len(batch):
        return None
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(t, len(index)) for t in tasks], dtype=torch.long)


def whole_episodes(batch: TransitionBatch) -> dict[tuple[int, int, int], Tensor]:
    """The episodes a batch holds whole, as ``(actor_id, env_id, episode_id) -> row indices`` in chunk
    order: every chunk from the episode's first (``episode_chunk`` 0) to the one that ended it. Episodes
    cut by a rollout boundary or a lost message are left out."""
    rows: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    keys = zip(batch.actor_id.tolist(), batch.env_id.tolist(), batch.episode_id.tolist(), strict=True)
    for i, key in enumerate(keys):
        rows[key].append(i)
    ended = batch.terminated | batch.truncated
    out = {}
    for key, idx in rows.items():
        order = torch.tensor(idx)[torch.argsort(batch.episode_chunk[idx])]
        if batch.episode_chunk[order].tolist() == list(range(len(idx))) and bool(ended[order[-1]]):
            out[key] = order
    return out


class PiRLAlgorithm(RLAlgorithm):
    config_class = PiRLAlgorithmConfig
    name = "pi_rl"

    def __init__(self, policy, config: PiRLAlgorithmConfig):
        self.policy = policy
        self.config = config
        self.policy_version = 0
        self.optimizers: dict[str, Optimizer] = {}
        self._generator = torch.Generator().manual_seed(config.seed)
        # Hybrid fine-tuning: ``offline_source(n)`` returns n preprocessed offline chunks (demos, human
        # corrections) for the base policy's flow-matching loss, or None while there are none.
        self.offline_source: Callable[[int], dict[str, Tensor] | None] | None = None
        # The update's processes; the chain re-scoring call (DDP-wrapped when there are several).
        self.ranks = RankGroup()
        # The rollout's value calls (through the sharded model's forward under FSDP).
        self._route_through_policy()
        self.sharded = False  # FSDP: parameters, gradients and Adam state split over the processes
        # What the advantage estimator reports about the last prepared rollout (GRPO: groups kept).
        self._estimator_stats: dict[str, float] = {}

    def distribute(self, accelerator) -> None:
        """Run the update as one of ``accelerator``'s processes: the chain re-scoring goes through the
        engine's wrapper (DDP when there are several processes; autocast under ``--mixed_precision bf16``),
        so every backward averages the gradients over the processes. Under FSDP (``--use_fsdp
        --fsdp_version 2``) the policy is sharded instead and the optimisers are rebuilt over the shards,
        keeping any resumed state. Call on every process, in the same order, after any resume."""
        self.ranks = RankGroup(accelerator)
        engine = accelerator.distributed_type.value
        hybrid = self.config.offline_loss_coef > 0
        if hybrid and self.config.offline_batch_size < self.ranks.world:
            raise ValueError(
                f"algorithm.offline_ratio: {self.config.offline_batch_size} offline chunks per minibatch cannot "
                f"be shared by {self.ranks.world} learner processes; raise offline_ratio or minibatch_size"
            )
        if shards_parameters(accelerator):
            check_sharding(accelerator, hybrid)
            self._shard(accelerator)
        elif engine not in SUPPORTED_ENGINES:
            raise ValueError(
                f"accelerate: the πRL learner runs on {' / '.join(SUPPORTED_ENGINES)} or FSDP2, not {engine}; "
                "launch with DDP or --use_fsdp --fsdp_version 2"
            )
        else:
            self._score = accelerator.prepare(ChainScorer(self.policy))
        logger.info(
            "[LEARNER] the update runs on %d processes (%s, mixed precision %s)",
            self.ranks.world,
            engine,
            accelerator.mixed_precision,
        )

    def leave_ranks(self) -> None:
        """After the run's last collective, on every process: drop the engine's wrappers, then leave the
        process group. DDP's reducer holds the group; freed after the group is destroyed, it would run the
        group's destructor while holding the GIL, which joins gloo's worker threads, and a worker finishing
        a work item needs the GIL: the process hangs at exit (seen in a 2-process CPU learner)."""
        if not self.ranks.distributed:
            return
        self._route_through_policy()
        self.ranks.close()

    def _route_through_policy(self) -> None:
        """Re-score chains and compute values with the policy's own methods (no engine wrapper)."""
        self._score = self.policy.score_chain
        self._values, self._next_values = self.policy.chain_value, self.policy.value_of

    def _shard(self, accelerator) -> None:
        """Shard the policy (FSDP2), route its forwards through the sharded module and rebuild the per-group
        optimisers over the sharded parameters with the state they had (resumed or empty)."""
        named = {id(p): n for n, p in self.policy.named_parameters()}
        states = optimizer_state_by_name(self.optimizers, named)
        scorer = shard(accelerator, ChainScorer(self.policy))
        self._score, self._values, self._next_values = scorer, scorer.chain_value, scorer.value_of
        self.sharded = True
        self.make_optimizers_and_scheduler()
        load_sharded_optimizer_state(self.optimizers, states, dict(self.policy.named_parameters()))

    # ------------------------------------------------------------------ optimisers and weights
    def make_optimizers_and_scheduler(self) -> dict[str, Optimizer]:
        cfg = self.config
        lrs = {
            "base": cfg.actor_lr,
            "noise_head": cfg.noise_head_lr if cfg.noise_head_lr is not None else cfg.actor_lr,
            "value_head": cfg.critic_lr,
        }
        self.optimizers = {
            name: torch.optim.Adam(params, lr=lrs[name])
            for name, params in self.policy.param_groups().items()
        }
        return self.optimizers

    def get_optimizers(self) -> dict[str, Optimizer]:
        return self.optimizers

    def get_weights(self) -> dict[str, Any]:
        """The actor's weights (base + noise head, no value head) tagged with the policy version (sharded:
        a collective that every process runs)."""
        weights = full_state(self.policy.actor_state_dict())
        weights[POLICY_VERSION_KEY] = torch.tensor(self.policy_version, dtype=torch.long)
        return weights

    def full_training_state(self) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
        """The whole policy state dict and each optimiser's whole state (a collective under FSDP, where
        rank 0 writes them into a checkpoint of the one-process layout)."""
        model = full_state(self.policy.state_dict())
        return model, {name: full_optimizer_state(opt) for name, opt in self.optimizers.items()}

    def load_weights(self, weights: dict[str, Any], device: str | torch.device = "cpu") -> None:
        weights = dict(weights)
        version = weights.pop(POLICY_VERSION_KEY, None)
        expected = set(self.policy.actor_state_dict())
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise ValueError(
                f"load_weights: pushed weights do not match the policy (missing {missing[:5]}, extra {extra[:5]})"
            )
        self.policy.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
        if version is not None:
            self.policy_version = int(version)

    def state_dict(self) -> dict[str, Tensor]:
        """Algorithm-owned state: the policy version (the heads live in the policy checkpoint)."""
        return {"policy_version": torch.tensor([self.policy_version], dtype=torch.long)}

    def load_state_dict(self, state_dict: dict[str, Tensor], device: str | torch.device = "cpu") -> None:
        self.policy_version = int(state_dict["policy_version"].reshape(-1)[0])

    def transition_spec(self) -> TransitionSpec:
        """Shapes a transition from an actor of this policy must have."""
        pol = self.policy
        scfg = pol.config.sampler
        k = scfg.num_denoise_steps
        chain_len = 2 if scfg.sde_steps == "one" else k + 1
        chunk = (pol.adapter.chunk_size, pol.adapter.action_dim)
        high = (k - 1 if scfg.exclude_last_step else k) if scfg.sde_steps == "one" else 0
        low = 0 if scfg.sde_steps == "one" else -1
        return TransitionSpec(
            state_shapes={key: tuple(ft.shape) for key, ft in pol.config.input_features.items()},
            chain_shape=(chain_len, *chunk),
            logprob_shape=()
            if scfg.logprob_level == "chunk"
            else (pol.action_chunk, pol.adapter.real_action_dim),
            denoise_range=(low, high),
        )

    # ------------------------------------------------------------------ rollout preparation
    @torch.no_grad()
    def _in_minibatches(self, fn, obs: dict[str, Tensor], *extra: Tensor) -> Tensor:
        """``fn(obs_slice, *extra_slices)`` over minibatch-sized slices, concatenated (float32)."""
        bs = self.config.minibatch_size
        n = next(iter(obs.values())).shape[0]
        return torch.cat(
            [
                fn({k: v[s : s + bs] for k, v in obs.items()}, *(t[s : s + bs] for t in extra)).float()
                for s in range(0, n, bs)
            ]
        )

    @torch.no_grad()
    def prepare_rollout(self, batch: TransitionBatch, preprocessor=None) -> Rollout:
        """Normalise observations, compute values under the current critic and the advantages."""
        return self.score_rollout(self.rollout_inputs(batch, preprocessor))

    def rollout_inputs(self, batch: TransitionBatch, preprocessor=None) -> RolloutInputs:
        """The policy inputs a rollout's values are computed from: the normalised observations, and the
        normalised final observations of the transitions GAE bootstraps from. (Under FSDP rank 0 makes
        them and every process scores them.)"""
        device = self.policy.config.device
        # The same call the actor makes (batch -> transition -> steps -> batch), so both sides see the
        # same normalised (and tokenised) inputs.
        norm = preprocessor if preprocessor is not None else (lambda o: o)
        obs = _policy_inputs(norm(dict(batch.state)), device)
        boot_obs = None
        boot = bootstrap_rows(batch)
        if self.config.estimator == "gae" and boot.numel():
            boot_obs = _policy_inputs(norm({k: _take(v, boot) for k, v in batch.next_state.items()}), device)
        tasks = batch.state.get(TASK)
        light = replace(batch, state={TASK: tasks} if tasks is not None else {}, next_state={})
        return RolloutInputs(light, obs, boot, boot_obs)

    @torch.no_grad()
    def score_rollout(self, inputs: RolloutInputs) -> Rollout:
        """Values under the current critic, then the advantages and returns of a rollout."""
        batch, device = inputs.batch, self.policy.config.device
        obs = inputs.obs
        chain, denoise_index = batch.chain.to(device), batch.denoise_index.to(device)
        values = self._in_minibatches(self._values, obs, chain, denoise_index).cpu()

        self._estimator_stats = {}
        if self.config.estimator == "gae":
            advantages, returns = self._gae(batch, values, inputs)
            graded = torch.ones(len(batch), dtype=torch.bool)
        else:
            advantages, returns, graded = self._grpo(batch, values)
        # A chunk a human teleoperated says nothing about the sampled chain, nor does one GRPO could not
        # grade (its group was dropped or its episode cut): no policy-gradient credit, exactly 0 (their
        # rewards still train the critic through the returns); the graded chunks are normalised alone.
        graded &= ~batch.intervention
        if self.config.normalize_advantages and int(graded.sum()) > 1:
            tasks = task_ids(batch) if self.config.normalize_advantages_per_task else None
            advantages[graded] = (
                normalize(advantages[graded])
                if tasks is None
                else normalize_per_group(
                    advantages[graded],
                    tasks[graded],
                    std="group" if self.config.per_task_advantage_std == "task" else "all",
                )
            )
        advantages = advantages.masked_fill(~graded, 0.0)
        return Rollout(
            obs=obs,
            chain=chain,
            denoise_index=denoise_index,
            old_logprob=batch.logprob.to(device),
            old_values=values.to(device),
            advantages=advantages.to(device),
            returns=returns.to(device),
            on_policy=(batch.version == self.policy_version).to(device),
        )

    def _gae(self, batch: TransitionBatch, values: Tensor, inputs: RolloutInputs) -> tuple[Tensor, Tensor]:
        cfg = self.config
        n = len(batch)
        cut = batch.truncated | batch.gap_after
        next_values = torch.zeros(n)
        # Continuing steps read the value of the next transition of their column ...
        cols = batch.columns
        for e in range(cols.shape[1]):
            col = cols[:, e][cols[:, e] >= 0]
            if col.numel() > 1:
                next_values[col[:-1]] = values[col[1:]]
        # ... truncated steps and stream ends bootstrap from the value of their final observation.
        if inputs.boot_obs is not None:
            next_values[inputs.boot_rows] = self._in_minibatches(self._next_values, inputs.boot_obs).cpu()
        pad = cols < 0
        idx = cols.clamp_min(0)

        def column(x: Tensor) -> Tensor:
            return torch.where(pad, torch.zeros((), dtype=x.dtype), x[idx])

        adv_tb, _ = compute_gae(
            column(batch.reward),
            column(values),
            column(next_values),
            column(batch.terminated),
            column(cut),
            cfg.gamma,
            cfg.gae_lambda,
        )
        advantages = torch.zeros(n)
        advantages[cols[~pad]] = adv_tb[~pad]
        return advantages, advantages + values

    def _grpo(self, batch: TransitionBatch, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Group-relative advantages; every chunk of an episode gets its episode's advantage.

        Only episodes the rollout holds whole (see :func:`whole_episodes`) take part. A group is the
        episodes with one episode id of ``grpo_group_size`` consecutive env ids of one actor: envs that
        reset together (``env.group_size``). Returns are left to the values: GRPO trains no critic.
        Also returns which chunks were graded (their episode is whole and its group kept).
        """
        cfg = self.config
        episodes = whole_episodes(batch)
        advantages = torch.zeros(len(batch))
        graded = torch.zeros(len(batch), dtype=torch.bool)
        self._estimator_stats = dict.fromkeys(
            ("grpo_groups", "grpo_groups_kept", "grpo_groups_kept_fraction"), 0.0
        )
        self._estimator_stats["grpo_episodes"] = float(len(episodes))
        if not episodes:
            return advantages, values.clone(), graded
        keys = list(episodes)
        groups: dict[tuple[int, int, int], int] = {}
        group_ids = [groups.setdefault((a, e // cfg.grpo_group_size, ep), len(groups)) for a, e, ep in keys]
        adv_ep, keep_ep = grpo_advantages(
            torch.tensor([float(batch.reward[episodes[k]].sum()) for k in keys]),
            torch.tensor(group_ids),
            torch.tensor([float(batch.success[episodes[k]].max()) for k in keys]),
            (cfg.grpo_success_low, cfg.grpo_success_high) if cfg.grpo_success_filter else None,
        )
        for j, key in enumerate(keys):
            if keep_ep[j]:
                advantages[episodes[key]] = adv_ep[j]
                graded[episodes[key]] = True
        kept = len({g for g, k in zip(group_ids, keep_ep.tolist(), strict=True) if k})
        self._estimator_stats.update(
            grpo_groups=float(len(groups)),
            grpo_groups_kept=float(kept),
            grpo_groups_kept_fraction=kept / len(groups),
        )
        return advantages, values.clone(), graded

    # ------------------------------------------------------------------ the update
    def configure_data_iterator(
        self,
        data_mixer: RolloutSource,
        batch_size: int | None = None,
        *,
        async_prefetch: bool = False,
        queue_size: int = 2,
    ) -> Iterator[dict[str, Any]]:
        """Not a replay sampler: ``update_epochs`` shuffled passes over the prepared on-policy rollout."""
        if not isinstance(data_mixer, RolloutSource):
            raise TypeError(
                f"pi_rl trains on a RolloutSource (an on-policy rollout), got {type(data_mixer).__name__}"
            )
        return rollout_minibatches(
            data_mixer.rollout,
            self.config.minibatch_size,
            self.config.update_epochs,
            self._generator,
            self.ranks.rank,
            self.ranks.world,
        )

    def update_on(self, rollout: Rollout) -> TrainingStats:
        """One update on a prepared rollout, then the next policy version (what every learner process runs)."""
        stats = self.update(self.configure_data_iterator(RolloutSource(rollout)))
        self.policy_version += 1
        return stats

    def update(self, batch_iterator: Iterator[dict[str, Any]]) -> TrainingStats:
        """The PPO update: ``update_epochs`` passes over the rollout in minibatches, one gradient step per
        minibatch; with ``target_kl`` set, no further epoch runs after one in which a minibatch's approx_kl
        exceeded ``1.5 * target_kl``. During the first ``critic_warmup_updates`` updates only the value
        head trains. Run as several processes (:meth:`distribute`), each minibatch's diagnostics are
        combined over the processes before they decide anything."""
        cfg = self.config
        log = UpdateLog(critic_warmup=self.optimization_step < cfg.critic_warmup_updates)
        for epoch, minibatches in itertools.groupby(batch_iterator, key=lambda mb: mb["epoch"]):
            epoch_kl = 0.0
            for mb in minibatches:
                first = log.minibatches == 0
                step = self._ppo_step(mb, first=first, critic_only=log.critic_warmup)
                step = self.ranks.combine(step, int(mb["advantages"].shape[0]))
                if first:
                    self._report_ratio_guard(step["ratio_guard_max_dev"])
                log.add(step)
                epoch_kl = max(epoch_kl, step["approx_kl"])
            log.epochs_run = epoch + 1
            if cfg.target_kl is not None and epoch_kl > 1.5 * cfg.target_kl:
                log.early_stopped = True
                break
        self.optimization_step = self.optimization_step + 1
        return log.training_stats()

    def _ppo_step(self, mb: dict[str, Any], first: bool, critic_only: bool = False) -> dict[str, float]:
        """One gradient step on a minibatch: re-score its stored chains under the current weights, then
        the clipped PPO loss + value loss - entropy bonus (+ the offline flow-matching loss), or the value loss
        alone for the value head alone (``critic_only``). Returns the minibatch's diagnostics; the first
        minibatch also checks the ratio guard."""
        cfg = self.config
        score = self._score(mb["obs"], mb["chain"], mb["denoise_index"])
        actor_loss, ratio_stats = ppo_actor_loss(
            score.logprob, mb["old_logprob"], mb["advantages"], cfg.clip_ratio_low, cfg.clip_ratio_high
        )
        diagnostics = {k: float(v) for k, v in ratio_stats.items()}
        if first:
            diagnostics["ratio_guard_max_dev"] = self._ratio_guard(
                score.logprob, mb["old_logprob"], mb["on_policy"]
            )
        critic_loss = value_loss(
            score.value, mb["old_values"], mb["returns"], cfg.value_clip, cfg.huber_delta
        )
        entropy = entropy_bonus(score.entropy)
        # Each process's losses are means over its share of the minibatch; weighted by that share's size,
        # the engine's gradient average is the gradient of the whole minibatch's mean (1 in one process).
        share = (
            mb["advantages"].shape[0] * self.ranks.world / mb.get("global_size", mb["advantages"].shape[0])
        )
        if critic_only:
            # The actor terms enter with weight 0: the same parameters take part in every backward, as DDP
            # requires, and only the value head's optimiser steps.
            loss = cfg.value_loss_coef * critic_loss + 0.0 * (actor_loss - entropy)
            diagnostics.update(self._gradient_step(share * loss, groups=("value_head",)))
        else:
            loss = actor_loss + cfg.value_loss_coef * critic_loss - cfg.entropy_coef * entropy
            offline = self._offline_loss()
            weighted = None
            if offline is not None:
                diagnostics["offline_loss"] = offline.loss.item()
                diagnostics["offline_weight"] = offline.weight
                diagnostics["offline_batch_size"] = offline.batch_size
                weighted = offline.weight * offline.share * offline.loss
            diagnostics.update(self._gradient_step(share * loss, offline=weighted))
        diagnostics.update(
            actor_loss=actor_loss.item(),
            value_loss=critic_loss.item(),
            entropy=entropy.item(),
            noise_std=score.noise_std.mean().item(),
        )
        return diagnostics

    def _gradient_step(
        self, loss: Tensor, groups: tuple[str, ...] | None = None, offline: Tensor | None = None
    ) -> dict[str, float]:
        """Backward (of ``loss``, then of the weighted ``offline`` loss into the offline parameters only),
        then per parameter group (all, or ``groups``): clip the gradient norm and step its optimiser.
        Returns the groups' gradient norms before clipping (``grad_norm/<group>``)."""
        accelerator = self.ranks.accelerator
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        norms = self._add_offline_gradient(offline) if offline is not None else {}
        # accelerate clips whole FSDP models only; torch's clipping takes the norm of sharded gradients whole.
        engine = accelerator is not None and not self.sharded
        clip = accelerator.clip_grad_norm_ if engine else torch.nn.utils.clip_grad_norm_
        for name, opt in self.optimizers.items():
            if groups is not None and name not in groups:
                continue
            params = [p for g in opt.param_groups for p in g["params"]]
            norms[f"grad_norm/{name}"] = float(full(clip(params, self.config.max_grad_norm)))
            opt.step()
        return norms

    def _ratio_guard(self, logprob: Tensor, old_logprob: Tensor, on_policy: Tensor) -> float:
        """Before any gradient step, on data the current weights sampled, the ratio must be 1."""
        if not bool(on_policy.any()):
            return float("nan")
        return (torch.exp(logprob.detach() - old_logprob)[on_policy] - 1.0).abs().max().item()

    def _report_ratio_guard(self, dev: float) -> None:
        if dev > self.config.ratio_guard_tol:
            logger.error(
                "[LEARNER] ratio guard: max |ratio - 1| = %.3g > %.3g on on-policy data at the first minibatch: "
                "actor and learner compute different log-probs",
                dev,
                self.config.ratio_guard_tol,
            )

    def offline_weight(self) -> float:
        """The offline loss weight of the current update (its schedule over ``optimization_step``)."""
        cfg = self.config
        return offline_loss_weight(
            cfg.offline_loss_coef,
            cfg.offline_loss_coef_final,
            cfg.offline_loss_schedule,
            cfg.offline_loss_decay_updates,
            self.optimization_step,
        )

    def _offline_loss(self) -> OfflineTerm | None:
        """The base's flow-matching loss on (this process's share of) a fresh offline batch; None when
        hybrid is off, its weight has decayed to 0 or the buffer is still empty."""
        weight = self.offline_weight()
        if weight <= 0:
            return None
        batch, total = self._offline_share()
        if batch is None:
            return None
        loss, _ = self.policy.forward(batch)
        return OfflineTerm(loss, weight, total, int(batch[ACTION].shape[0]) * self.ranks.world / total)

    def _offline_share(self) -> tuple[dict[str, Any] | None, int]:
        """This process's share of a fresh offline batch, and the batch's size. Rank 0 alone holds the
        offline buffer: it draws the batch and, run as several processes, broadcasts it; every rank then
        keeps every ``world``-th chunk from its rank on, as with the online minibatches."""
        batch = self.offline_source(self.config.offline_batch_size) if self.offline_source else None
        if not self.ranks.distributed:
            return batch, 0 if batch is None else int(batch[ACTION].shape[0])
        on_cpu = None if batch is None else {k: _to(v, "cpu") for k, v in batch.items()}
        on_cpu = self.ranks.broadcast(on_cpu)
        if on_cpu is None:
            return None, 0
        total = int(on_cpu[ACTION].shape[0])
        idx = torch.arange(self.ranks.rank, total, self.ranks.world)
        device = next(self.policy.parameters()).device
        return {k: _to(_take(v, idx), device) for k, v in on_cpu.items()}, total

    def offline_parameters(self) -> list[torch.nn.Parameter]:
        """What the offline loss may move: PPO's trainable base parameters, or only the action expert's."""
        base = self.policy.param_groups().get("base", [])
        if self.config.offline_params == "actor":
            return base
        trainable = {id(p) for p in base}
        return [p for p in self.policy.adapter.expert_parameters() if id(p) in trainable]

    def _add_offline_gradient(self, weighted_loss: Tensor) -> dict[str, float]:
        """Add the offline loss's gradient to the offline parameters' PPO gradients; log its norm and its
        share ``|g_offline| / (|g_ppo| + |g_offline|)`` over those parameters."""
        params = self.offline_parameters()
        if not params:
            return {}
        grads = torch.autograd.grad(weighted_loss, params, allow_unused=True)
        grads = self.ranks.mean_gradients(params, grads)  # over the processes, when there are several
        online = [p.grad for p in params if p.grad is not None]
        offline = [g for g in grads if g is not None]
        on_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in online]))) if online else 0.0
        off_norm = (
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in offline]))) if offline else 0.0
        )
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.grad = g.detach() if p.grad is None else p.grad + g
        return {
            "offline_grad_norm": off_norm,
            "offline_grad_share": off_norm / max(on_norm + off_norm, 1e-12),
        }

    def rollout_stats(self, rollout: Rollout, batch: TransitionBatch, dropped: int) -> dict[str, float]:
        """Diagnostics of a prepared rollout (logged next to the update's TrainingStats); with GRPO also how
        many whole episodes and groups the rollout held and the share of groups its success filter kept."""
        return {
            **self._estimator_stats,
            "advantage_mean": float(rollout.advantages.mean()),
            "advantage_std": float(rollout.advantages.std(unbiased=False)),
            "advantage_nonzero_fraction": float((rollout.advantages != 0).float().mean()),
            "value_mean": float(rollout.old_values.mean()),
            "return_mean": float(rollout.returns.mean()),
            "explained_variance": explained_variance(rollout.old_values, rollout.returns),
            "transitions_used": float(len(rollout)),
            "transitions_dropped": float(dropped),
            "on_policy_fraction": float(rollout.on_policy.float().mean()),
            "reward_mean": float(batch.reward.mean()),
            "intervention_fraction": float(batch.intervention.float().mean()),
            "actors": float(len(torch.unique(batch.actor_id))),
            "streams": float(batch.columns.shape[1]),
            "rollout_version_min": float(batch.version.min()),
            "rollout_version_max": float(batch.version.max()),
            "policy_version": float(self.policy_version),
            "learner_processes": float(self.ranks.world),
        }
