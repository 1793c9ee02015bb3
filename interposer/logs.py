"""One log format for every process the interposer runs: the mount, its span export process, the CSI driver."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log at ``level`` (a logging level name) to stderr, which the supervisor of the process collects."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
