"""The ``pi_rl`` RL algorithm: configuration, rollout assembly, advantages, losses and the PPO update."""

from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig

__all__ = ["PiRLAlgorithmConfig"]
