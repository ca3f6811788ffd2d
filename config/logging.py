"""Logging for ``manage.py serve``: one format for every logger, the request id on every line.

``LOG_FORMAT=json`` writes one JSON object per line (``time``, ``level``, ``logger``, ``message``,
``request_id`` and, on the access line, ``method``, ``route``, ``status``, ``duration_ms`` and ``user``);
``text`` writes ``time level logger [request id] message``. The request id of the request being served
lives in :data:`REQUEST_ID` (set by ``app/edge.py``); :class:`RequestIdFilter` copies it onto every record a
handler writes, so a line logged anywhere during a request carries it.

The access line is the application's own (``app.access``, written by ``app/edge.py``), not uvicorn's: it
names the route template rather than the raw path (which holds user ids) and never the query string.

Nothing here imports the application, the database layer or uvicorn.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from config.settings import LogFormat

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request this code runs for (``None`` outside a request)."""
ACCESS_LOGGER = "app.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_encode = msgspec.json.Encoder().encode


def new_request_id() -> str:
    """A fresh request id: 16 random bytes in hex (what a uuid4 carries, without building a UUID)."""
    return os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    """Put the current request id on each record as ``record.request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access record's ``http`` fields join the top level."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        seconds = record.created
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            entry.update(http)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server (uvicorn applies it in each worker before the app loads)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT, "datefmt": "%Y-%m-%dT%H:%M:%S%z"}
    )
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "main"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {"main": {**handler, "filters": ["request_id"]}},
        "root": {"handlers": ["main"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["main"], "level": level, "propagate": False},
            # Start and stop lines (a few per process) stay at INFO whatever LOG_LEVEL, as uvicorn's own config has it.
            "uvicorn.error": {"level": "INFO" if level in {"DEBUG", "INFO", "WARNING"} else level},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},  # ours is app.access
            "app": {"handlers": ["main"], "level": level, "propagate": False},
            "db": {"handlers": ["main"], "level": level, "propagate": False},
        },
    }
