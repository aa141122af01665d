"""The package's single logger.

Everything logs through ``logging.getLogger("dataflow")``. A stderr handler is attached once, unless the
application already configured the logger, so library users keep control of logging.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "dataflow"


def get_logger() -> logging.Logger:
    """Return the ``dataflow`` logger, adding a plain stderr handler the first time."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
