"""Entry-point plumbing: start-up errors (bad config, missing file) as one line, run-time errors with
their traceback.

An entry point's start-up parses and checks its configuration and returns the run as a callable. A user
error during start-up ends with ``error: <cause>`` and exit code 2 (``LEROBOT_PIRL_DEBUG=1`` shows the
traceback instead). Once the run has started, an unexpected exception is logged with its full traceback
and the process exits 1: a ``KeyError`` after hours of training is a bug to report, not a typo.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)


def _user_errors() -> tuple[type[BaseException], ...]:
    try:
        from lerobot.configs.parser import PluginLoadError
    except ImportError:  # pragma: no cover
        return USER_ERRORS
    return (*USER_ERRORS, PluginLoadError)


def run_cli(startup: Callable[[], Callable[[], object] | None]) -> None:
    """Run ``startup`` (configuration and file checks), then the run it returns (if any)."""
    try:
        run = startup()
    except KeyboardInterrupt:
        sys.exit(130)
    except _user_errors() as e:
        if os.environ.get("LEROBOT_PIRL_DEBUG"):
            raise
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)
    if run is None:
        return
    try:
        run()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        logger.exception("run failed")  # with no logging set up, Python's last-resort handler prints it
        sys.exit(1)
