"""Test-session defaults: MuJoCo renders headless with EGL (as ``make test`` sets it) unless told otherwise."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
