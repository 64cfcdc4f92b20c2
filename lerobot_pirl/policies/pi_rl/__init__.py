"""The ``pi_rl`` policy: a flow-matching base policy wrapped for πRL (LeRobot triple)."""

from lerobot_pirl.policies.pi_rl.configuration_pi_rl import PiRLConfig

__all__ = ["PiRLConfig"]
