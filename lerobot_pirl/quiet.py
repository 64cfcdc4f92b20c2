"""One log line instead of torchcodec's ~100-line load failure.

Where FFmpeg's shared libraries are missing, LeRobot logs torchcodec's whole loader report (one traceback
per FFmpeg version) on import, before anything the user asked for; the message a user needs scrolls away.
:func:`install` (run when this module is imported, first thing on ``import lerobot_pirl``) shortens that record to one line saying what is
unavailable and what it affects. Nothing else is filtered.
"""

from __future__ import annotations

import logging

TORCHCODEC_MARK = "'torchcodec' is installed but cannot be loaded"
TORCHCODEC_LINE = (
    "torchcodec cannot load FFmpeg's shared libraries: LeRobot decodes dataset videos with pyav instead "
    "(image datasets and training are unaffected); install FFmpeg 4-8 (e.g. apt-get install ffmpeg) to use torchcodec"
)


class OneLineTorchcodec(logging.Filter):
    """Replace LeRobot's torchcodec load-failure record by :data:`TORCHCODEC_LINE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if TORCHCODEC_MARK in str(record.msg):
            record.msg, record.args, record.exc_info = TORCHCODEC_LINE, (), None
        return True


def install() -> None:
    """Attach the filter to the logger LeRobot reports it on (idempotent)."""
    logger = logging.getLogger("lerobot.utils.import_utils")
    if not any(isinstance(f, OneLineTorchcodec) for f in logger.filters):
        logger.addFilter(OneLineTorchcodec())


install()
