"""The small built-in flow-matching policy (LeRobot triple: configuration, modeling, processor)."""

from lerobot_pirl.policies.flow_mlp.configuration_flow_mlp import FlowMLPConfig

__all__ = ["FlowMLPConfig"]
