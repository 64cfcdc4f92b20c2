from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig

__all__ = ["PiRLConfig"]
