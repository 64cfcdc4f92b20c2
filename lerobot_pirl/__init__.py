"""lerobot-pirl: πRL (online RL fine-tuning of flow-matching policies) for LeRobot.

Importing the package registers its configs with LeRobot's registries (idempotently, without
touching LeRobot's files):
- policies ``flow_mlp`` and ``pi_rl`` (``PreTrainedConfig``),
- the algorithm ``pi_rl`` (``RLAlgorithmConfig``),
- the env ``pirl_metaworld`` (``EnvConfig``),
- the πRL adapters of the supported base policies.
Vanilla LeRobot scripts reach it with ``--policy.discover_packages_path=lerobot_pirl``.
"""

from lerobot_pirl import quiet as _quiet  # noqa: F401  (first: shortens torchcodec's load report)
from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig
from lerobot_pirl.envs.metaworld import MetaWorldStateEnvConfig
from lerobot_pirl.flow import adapters as _adapters  # noqa: F401  (registers the adapters)
from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig
from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig

__version__ = "0.1.0"
__all__ = ["FlowMLPConfig", "MetaWorldStateEnvConfig", "PiRLAlgorithmConfig", "PiRLConfig", "__version__"]
