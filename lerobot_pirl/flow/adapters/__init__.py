"""Per-family adapters; importing this package registers them.

Adapters are plug-ins: every module named in the ``lerobot_pirl.adapters`` entry-point group (ours are
declared in ``pyproject.toml``; another package declares its own, e.g. a GR00T adapter) is imported here,
and its ``@register_adapter("<policy type>")`` classes become available to ``pi_rl``. A plug-in that fails
to import is logged and skipped; the built-in adapters are also imported directly, so a source checkout
whose installed metadata predates them works too.

The VLA adapters (``pi0``, ``pi05``, ``smolvla``) import LeRobot's modeling code (and transformers) only
when they are used, so registering them needs neither the ``pi`` nor the ``smolvla`` extra.
"""

from lerobot_pirl.flow.adapters.base import (
    FlowAdapter,
    Prefix,
    load_adapter_plugins,
    make_adapter,
    register_adapter,
    supported_base_types,
)

load_adapter_plugins()

from lerobot_pirl.flow.adapters import flow_mlp, pi0, pi05, smolvla  # noqa: E402, F401  (built-ins)

__all__ = ["FlowAdapter", "Prefix", "make_adapter", "register_adapter", "supported_base_types"]
