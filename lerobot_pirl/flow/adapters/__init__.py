"""Per-family adapters; importing this package registers them.

The VLA adapters (``pi0``, ``pi05``, ``smolvla``) import LeRobot's modeling code (and transformers) only
when they are used, so registering them needs neither the ``pi`` nor the ``smolvla`` extra.
"""

from lerobot_pirl.flow.adapters import flow_mlp, pi0, pi05, smolvla  # noqa: F401
from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix, make_adapter, supported_base_types

__all__ = ["FlowAdapter", "Prefix", "make_adapter", "supported_base_types"]
