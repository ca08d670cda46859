"""Logging for the host: one format, with the request id of the current request."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("chutes_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` so every log line can name its request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(level: str | None = None) -> None:
    """Log to stderr as ``time level logger [request id] message``."""
    level = (level or os.environ.get("CHUTES_LOG_LEVEL") or "INFO").upper()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "formatters": {
                "host": {
                    "format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
                }
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "host",
                    "filters": ["request_id"],
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {
                "uvicorn": {"level": level, "handlers": [], "propagate": True},
                "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
                "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
            },
        }
    )
