"""Logging for ``manage.py serve``: uvicorn's own format, with query strings kept out of access logs.

A client may (wrongly) put a token in the query string; it must never reach a log line, so access log
lines show the path only.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG


class RedactQueryString(logging.Filter):
    """Drop the query string from uvicorn access records (``args[2]`` is the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config with the redaction filter on the access log and ``level`` for the app."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_query": {"()": RedactQueryString}}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    config["loggers"]["uvicorn"]["level"] = level
    config["loggers"]["uvicorn.access"]["level"] = level  # LOG_LEVEL=WARNING: no line per request
    config["loggers"]["app"] = {"handlers": ["default"], "level": level, "propagate": False}
    return config
