"""Adapter plug-ins: another package registers a base-model adapter through the ``lerobot_pirl.adapters``
entry-point group, without editing this package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PLUGIN = '''
from lerobot_pirl.flow.adapters import FlowAdapter, register_adapter


@register_adapter("toy_flow")
class ToyFlowAdapter(FlowAdapter):
    """An out-of-tree adapter (abstract methods left out: the test only builds its registry entry)."""
'''

CHECK = """
import lerobot_pirl
from lerobot_pirl.flow.adapters import supported_base_types
from lerobot_pirl.flow.adapters.base import _ADAPTERS
types = supported_base_types()
assert "toy_flow" in types, types
assert {"flow_mlp", "pi0", "pi05", "smolvla"} <= set(types), types
print(_ADAPTERS["toy_flow"].__module__)
"""


def _install(site: Path, name: str, module: str, source: str, target: str) -> None:
    """Install a one-module distribution into ``site`` as pip would lay it out (module + dist-info with an
    entry point in the ``lerobot_pirl.adapters`` group)."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lerobot_pirl.adapters]\ntoy_flow = {target}\n")
    (info / "RECORD").write_text("")


def _run(site: Path) -> subprocess.CompletedProcess:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(repo)]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=300)


def test_an_installed_plugin_registers_its_adapter(tmp_path):
    _install(tmp_path, "toy-flow-adapter", "toy_flow_adapter", PLUGIN, "toy_flow_adapter")
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "toy_flow_adapter"


def test_a_broken_plugin_is_logged_and_skipped(tmp_path):
    _install(
        tmp_path, "broken-adapter", "broken_adapter", "raise ImportError('no such model')\n", "broken_adapter"
    )
    proc = _run(tmp_path)
    assert proc.returncode != 0 and "toy_flow" in proc.stderr  # the assertion in CHECK, not an import crash
    assert "adapter plug-in 'toy_flow' (broken_adapter) failed to load: no such model" in proc.stderr
