"""Entry-point plumbing: one-line errors for bad invocations instead of a traceback wall."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    OSError,
)


def run_cli(fn: Callable[[], object]) -> None:
    """Run ``fn``; a user error (bad config, missing file, unknown type) ends with ``error: <cause>``
    and exit code 2. ``LEROBOT_PIRL_DEBUG=1`` shows the full traceback instead."""
    try:
        from lerobot.configs.parser import PluginLoadError

        errors = (*USER_ERRORS, PluginLoadError)
    except ImportError:  # pragma: no cover
        errors = USER_ERRORS
    try:
        fn()
    except KeyboardInterrupt:
        sys.exit(130)
    except errors as e:
        if os.environ.get("LEROBOT_PIRL_DEBUG"):
            raise
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
