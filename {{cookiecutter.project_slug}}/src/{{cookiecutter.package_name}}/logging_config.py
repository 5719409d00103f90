"""Logging, configured once by the entry point (the CLI, or each server worker)."""

from __future__ import annotations

import logging
from typing import Any

from .errors import mask_urls

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MaskSecrets(logging.Filter):
    """Every log line with the passwords of the URLs in it masked, whoever logs it (this
    package, SQLAlchemy, MLflow, uvicorn)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_urls(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


# uvicorn's parent process and every worker log in the CLI's format; access lines are short.
UVICORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"mask_secrets": {"()": MaskSecrets}},
    "formatters": {
        "default": {"format": LOG_FORMAT},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(asctime)s %(levelname)s access: %(client_addr)s "%(request_line)s" '
            "%(status_code)s",
            "use_colors": False,
        },
    },
    "handlers": {
        name: {"class": "logging.StreamHandler", "formatter": name, "filters": ["mask_secrets"]}
        for name in ("default", "access")
    },
    "loggers": {
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["default"], "level": "INFO"},
}


def setup_logging() -> None:
    """INFO lines in LOG_FORMAT, secrets masked; HTTP clients log one line per request, so
    only their warnings."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskSecrets) for f in handler.filters):
            handler.addFilter(MaskSecrets())
    logging.getLogger("httpx").setLevel(logging.WARNING)
