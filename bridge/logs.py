"""How the processes log to stderr: lines of text (the default), or one JSON object per line
(``--log-format json``) for a log collector: ``time``, ``level``, ``logger``, ``message``, and
``group``, ``target`` and ``listing`` where the call names them (``extra=about(...)``)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
# Read by each web process of ``bridge serve --workers N`` (they start afresh).
LOG_FORMAT_ENV = "BRIDGE_LOG_FORMAT"
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("group", "target", "listing")


def about(group: str | None = None, target: str | None = None,
          listing: str | None = None) -> dict[str, str]:
    """What a log line is about, as ``extra`` for a log call: fields of the JSON line."""
    named = {"group": group, "target": target, "listing": listing}
    return {key: value for key, value in named.items() if value is not None}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure(log_format: str, level: int | None = None) -> None:
    """One handler on the root logger, to stderr, in ``log_format``; ``level`` defaults to the
    root's current one (``-v`` has set it) or INFO."""
    root = logging.getLogger()
    if level is None:
        level = root.level if root.handlers and root.level != logging.NOTSET else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Python's own warnings become log lines too, so that stderr stays one format.
    logging.captureWarnings(log_format == "json")
