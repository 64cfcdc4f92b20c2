from lerobot_pirl.algorithms.pi_rl.configuration_pi_rl import PiRLAlgorithmConfig

__all__ = ["PiRLAlgorithmConfig"]
