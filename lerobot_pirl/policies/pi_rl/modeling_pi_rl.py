"""``pi_rl``: a flow-matching base policy plus the πRL noise and value heads.

- ``sample_chain`` (training rollouts): stochastic chain, behaviour log-prob, chain to store.
- ``score_chain`` (learner): log-prob, entropy and value of stored chains under the current weights.
- ``select_action`` / ``predict_action_chunk`` (deployment, eval): the deterministic ODE sampler.
- ``export_base``: the base policy as a plain checkpoint of its own type.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from lerobot.configs import PreTrainedConfig
from lerobot.configs.default import PeftConfig
from lerobot.policies.factory import get_policy_class
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor, nn

from lerobot_pirl.flow.adapters import make_adapter, supported_base_types
from lerobot_pirl.flow.heads import NoiseHead, ValueHead
from lerobot_pirl.flow.sampler import ChainSample, ChainScore, FlowChainSampler
from lerobot_pirl.flow.steps import make_step_rule
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig, encode_base_config


def load_base_policy(config: PiRLConfig) -> PreTrainedPolicy:
    """Build the base policy from the inline config, or load it from ``base_policy_path``."""
    if config.base is not None:
        base_cfg = config.base_config()
        _check_base_type(base_cfg.type, "base")
        return get_policy_class(base_cfg.type)(base_cfg)
    path = config.base_policy_path
    looks_local = Path(path).is_absolute() or path.startswith((".", "~")) or Path(path).exists()
    if looks_local and not Path(path).expanduser().is_dir():
        raise ValueError(
            f"base_policy_path: {path!r} is not a directory (expected a LeRobot policy checkpoint)"
        )
    try:
        base_cfg = PreTrainedConfig.from_pretrained(path)
    except (OSError, ValueError) as e:  # missing files, Hub unreachable, invalid repo id
        raise ValueError(f"base_policy_path: cannot read a LeRobot policy config from {path!r}: {e}") from e
    _check_base_type(base_cfg.type, "base_policy_path")
    _require_base_weights(path)
    base_cfg.device = config.device
    policy = get_policy_class(base_cfg.type).from_pretrained(path, config=base_cfg)
    config.base = encode_base_config(policy.config)
    config.adopt_base_features(policy.config)
    return policy


def _require_base_weights(path: str) -> None:
    """Fail loudly when the checkpoint has no weights file: LeRobot's pi0 / pi05 ``from_pretrained``
    print a message and return a randomly initialised model when ``model.safetensors`` cannot be resolved."""
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / SAFETENSORS_SINGLE_FILE).is_file():
            raise ValueError(f"base_policy_path: {path!r} has no {SAFETENSORS_SINGLE_FILE}")
        return
    try:
        hf_hub_download(repo_id=path, filename=SAFETENSORS_SINGLE_FILE)
    except Exception as e:  # not found, offline without a cached copy, invalid repo id
        raise ValueError(
            f"base_policy_path: cannot fetch {SAFETENSORS_SINGLE_FILE} of {path!r} from the Hub: {e}"
        ) from e


def _check_base_type(policy_type: str, field_name: str) -> None:
    if policy_type not in supported_base_types():
        raise ValueError(
            f"{field_name}: policy type {policy_type!r} is not a flow-matching policy supported by pi_rl; "
            f"expected one of {supported_base_types()}"
        )


class PiRLPolicy(PreTrainedPolicy):
    config_class = PiRLConfig
    name = "pi_rl"

    def __init__(self, config: PiRLConfig, **kwargs):
        super().__init__(config)
        self.config = config
        self.base = load_base_policy(config)
        self.__dict__["_peft_model"] = None  # PEFT's wrapper of self.base (not a submodule: same parameters)
        if config.peft is not None:
            self._add_peft_adapters(config.peft)
        self.adapter = make_adapter(self.base)
        scfg = config.sampler
        action_chunk = scfg.action_chunk if scfg.action_chunk is not None else self.adapter.n_action_steps
        if action_chunk > self.adapter.chunk_size:
            raise ValueError(
                f"sampler.action_chunk ({action_chunk}) must be <= the base policy's chunk size "
                f"({self.adapter.chunk_size})"
            )
        self.action_chunk = action_chunk
        self.sampler = FlowChainSampler(scfg, action_chunk, self.adapter.real_action_dim)
        self.noise_head = (
            NoiseHead(
                self.adapter.hidden_dim,
                self.adapter.action_dim,
                config.noise_head.hidden_dims,
                scfg.noise_std_min,
                scfg.noise_std_max,
            )
            if make_step_rule(scfg.noise_method, scfg.noise_level).learned_std
            else None
        )
        self.value_placement = config.value_head.placement or self.adapter.default_value_placement
        self.value_head = ValueHead(
            self.adapter.prefix_dim, self.adapter.hidden_dim, config.value_head, self.value_placement
        )
        if config.train_expert_only:
            for p in self.adapter.backbone_parameters():
                p.requires_grad_(False)
        self.to(config.device)
        self.reset()

    def _add_peft_adapters(self, peft: PeftConfig) -> None:
        """LoRA (or another PEFT method) on the base through LeRobot's ``wrap_with_peft``: the base's own
        parameters freeze, the adapters (zero-initialised LoRA ``B``: the policy is unchanged) train.
        The adapters are injected into ``self.base`` in place, so every adapter call goes through them."""
        base_cfg = self.base.config
        if getattr(base_cfg, "pretrained_path", None) is None and self.config.base_policy_path:
            base_cfg.pretrained_path = self.config.base_policy_path  # what LeRobot's PEFT check asks for
        overrides = {k: v for k, v in dataclasses.asdict(peft).items() if v is not None}
        self.__dict__["_peft_model"] = self.base.wrap_with_peft(peft_cli_overrides=overrides)
        base_cfg.use_peft = False  # the pi_rl checkpoint holds the adapters; the base config stays plain

    def merge_peft_adapters(self) -> None:
        """Fold the PEFT adapters into the base's weights (``merge_and_unload``): the base becomes a plain
        policy of its type. In place; for export, on a policy that is discarded afterwards."""
        if self._peft_model is not None:
            self._peft_model.merge_and_unload()
            self.__dict__["_peft_model"] = None

    # ------------------------------------------------------------------ parameter groups
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: ``base``, ``noise_head``, ``value_head``."""
        groups = {
            "base": [p for p in self.base.parameters() if p.requires_grad],
            "noise_head": list(self.noise_head.parameters()) if self.noise_head is not None else [],
            "value_head": list(self.value_head.parameters()),
        }
        return {k: v for k, v in groups.items() if v}

    def get_optim_params(self) -> list[dict]:
        return [{"params": ps} for ps in self.param_groups().values()]

    def actor_state_dict(self) -> dict[str, Tensor]:
        """What an actor needs to sample: the base and the noise head (no value head)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("value_head.")}

    # ------------------------------------------------------------------ training-time sampling
    def sample_chain(
        self,
        batch: dict[str, Tensor],
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        with_value: bool = True,
    ) -> ChainSample:
        return self.sampler.sample(
            self.adapter, self.value_head, self.noise_head, batch, noise, generator, with_value=with_value
        )

    def score_chain(self, batch: dict[str, Tensor], chain: Tensor, denoise_index: Tensor) -> ChainScore:
        return self.sampler.score(self.adapter, self.value_head, self.noise_head, batch, chain, denoise_index)

    @torch.no_grad()
    def chain_value(self, batch: dict[str, Tensor], chain: Tensor, denoise_index: Tensor) -> Tensor:
        """``V(s)`` of observations with a stored chain, as ``score_chain`` computes it: the prefix critic
        needs only the encoding; the expert critic re-runs the velocity at the stored step(s)."""
        if self.value_placement == "prefix":
            return self.value_of(batch)
        return self.score_chain(batch, chain, denoise_index).value

    @torch.no_grad()
    def value_of(self, batch: dict[str, Tensor]) -> Tensor:
        """``V(s)`` for observations without a stored chain (bootstrap values)."""
        if self.value_placement == "prefix":
            return self.value_head(self.adapter.encode(batch).features, None).float()
        return self.sample_chain(batch).value

    # ------------------------------------------------------------------ LeRobot policy API
    def reset(self) -> None:
        self._action_queue: deque[Tensor] = deque(maxlen=self.action_chunk)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        """The base policy's own supervised (flow-matching) loss: used for demo regularisation."""
        return self.base.forward(batch)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        """Deterministic ODE sampling: the executed chunk ``[B, H, action_dim]``."""
        actions = self.sampler.sample_ode(self.adapter, batch, noise)
        return actions[:, : self.action_chunk, : self.adapter.real_action_dim]

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None) -> Tensor:
        if len(self._action_queue) == 0:
            self._action_queue.extend(self.predict_action_chunk(batch, noise=noise).transpose(0, 1))
        return self._action_queue.popleft()

    # ------------------------------------------------------------------ export
    def export_base(self, save_directory: str | Path) -> Path:
        """Write the (fine-tuned) base policy as a plain checkpoint of its own type.

        The deployed policy is the ODE sampler with ``num_denoise_steps`` steps and ``action_chunk``
        executed actions, so those are written into the exported config where the base has them.
        """
        save_directory = Path(save_directory)
        self.merge_peft_adapters()
        base_cfg = self.base.config
        saved = {}
        overrides = self.adapter.export_overrides(self.config.sampler.num_denoise_steps, self.action_chunk)
        for name, value in overrides.items():
            if hasattr(base_cfg, name):
                saved[name] = getattr(base_cfg, name)
                setattr(base_cfg, name, value)
        try:
            self.base.save_pretrained(save_directory)
        finally:
            for name, value in saved.items():
                setattr(base_cfg, name, value)
        return save_directory
