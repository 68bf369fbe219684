"""Logging set-up: one line per event, as text, JSON objects or logfmt (helper/ops/golog.py)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json", "logfmt")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    elif fmt == "logfmt":
        from helper.ops.golog import LogfmtFormatter

        handler.setFormatter(LogfmtFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)-5s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger("spiffe_helper")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False
