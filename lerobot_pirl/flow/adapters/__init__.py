"""Per-family adapters; importing this package registers them."""

from lerobot_pirl.flow.adapters import flow_mlp  # noqa: F401
from lerobot_pirl.flow.adapters.base import FlowAdapter, Prefix, make_adapter, supported_base_types

__all__ = ["FlowAdapter", "Prefix", "make_adapter", "supported_base_types"]
