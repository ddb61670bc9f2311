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
# Libraries that log a line per request or job at INFO: an operator's log would be mostly theirs
# (a dev.log once had 262 of 424 lines from httpx alone). WARNING and up unless ``-v``.
CHATTY = ("httpx", "httpcore", "uvicorn.access", "arq.jobs")


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
    quiet_libraries(verbose=level <= logging.DEBUG)
    # Python's own warnings become log lines too, so that stderr stays one format.
    logging.captureWarnings(log_format == "json")


def be_verbose() -> None:
    """``-v``: DEBUG and every library's lines, in whatever format is configured."""
    logging.getLogger().setLevel(logging.DEBUG)
    quiet_libraries(verbose=True)


def quiet_libraries(verbose: bool) -> None:
    """The libraries' per-request and per-job lines at WARNING, unless ``verbose``. arq's
    worker logger also says when the worker starts and stops: those lines pass."""
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    arq = logging.getLogger("arq.worker")
    arq.removeFilter(_per_job)
    if not verbose:
        arq.addFilter(_per_job)


def _per_job(record: logging.LogRecord) -> bool:
    """False for arq's per-job lines (``  0.01s → job:flush()``) and its health records."""
    if record.levelno >= logging.WARNING:
        return True
    message = str(record.msg)
    return not (message.startswith("%6.2fs") or message.startswith("recording health"))
