"""Structured (JSON) logging shared by services, workers and flows.

Every record carries the service name; records about work carry ``job_id``, ``tile_id`` or
``batch_id`` (pass them with ``extra=``) so one tile can be followed across processes.
"""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

CONTEXT_KEYS = ("job_id", "tile_id", "batch_id")


def configure(service: str, level: str | None = None) -> logging.Logger:
    """Send JSON log lines to stderr for ``service`` and return its logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("URBANFABRIC_LOG_LEVEL", "INFO"))
    # Chatty libraries stay quiet unless asked.
    for noisy in ("kafka", "urllib3", "botocore", "rasterio", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(service)
