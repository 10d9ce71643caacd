"""Logs: one line per record on stderr, each naming the request and the run it belongs to.

Why it looks the way it does:

- **Ids travel in contextvars.** The API's request-id middleware binds the request id for the
  request's task and :func:`bind_run` binds the run in the task that drives it; tasks created
  inside inherit both, so every line logged on their behalf, uvicorn's access line included,
  carries them without being passed around.
- **One handler, two formats.** JSON lines (:class:`JsonFormatter`) for log collectors, the
  default in production; plain text (:class:`TextFormatter`) for a terminal.
- **The ids go out too.** :func:`propagate_ids`, an httpx request hook, sends them to the model
  and embedding servers, so their logs can be joined with ours.
- **Nothing secret.** Only what a call site passes is logged; no header is ever logged.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import httpx

    from agent_server.config import Settings

REQUEST_ID_HEADER = "X-Request-ID"
RUN_ID_HEADER = "X-Citadel-Run-ID"

_request_id: ContextVar[str | None] = ContextVar("citadel_request_id", default=None)
_run: ContextVar[tuple[str, str] | None] = ContextVar("citadel_run", default=None)

# What every LogRecord has (and uvicorn's ANSI-coloured copy of its messages); anything else
# on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}
_TEXT_LABELS = {"requestId": "req", "threadId": "thread", "runId": "run"}


def bind_request(request_id: str) -> Token[str | None]:
    """Name the request the current task serves (the middleware does this for each request)."""
    return _request_id.set(request_id)


def unbind_request(token: Token[str | None]) -> None:
    _request_id.reset(token)


def bind_run(thread_id: str, run_id: str) -> None:
    """Name the run the current task drives: call it first thing in that task. A task runs in
    its own copy of the context, so the binding ends with the task and never reaches the
    request that started it; tasks created inside inherit it."""
    _run.set((thread_id, run_id))


def current_ids() -> dict[str, str]:
    """The ids bound here and now (``requestId``, ``threadId``, ``runId``), the unset left out."""
    ids: dict[str, str] = {}
    if (request_id := _request_id.get()) is not None:
        ids["requestId"] = request_id
    if (run := _run.get()) is not None:
        ids["threadId"], ids["runId"] = run
    return ids


async def propagate_ids(request: httpx.Request) -> None:
    """httpx request hook: tells a model or embedding server which request and run it serves."""
    ids = current_ids()
    if "requestId" in ids:
        request.headers[REQUEST_ID_HEADER] = ids["requestId"]
    if "runId" in ids:
        request.headers[RUN_ID_HEADER] = ids["runId"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the bound ids, the
    exception if any, then the ``extra=`` fields (those JSON cannot hold, by their repr)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_ids(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        extra = {
            key: value
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and key not in line
        }
        try:
            return _dumps({**line, **extra})
        except TypeError:  # orjson refuses some values outright (integers beyond 64 bits)
            return _dumps({**line, **{key: repr(value) for key, value in extra.items()}})


class TextFormatter(logging.Formatter):
    """For a terminal: ``time LEVEL logger [req=… thread=… run=…]: message``."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {record.name}"
        ids = " ".join(f"{_TEXT_LABELS[key]}={value}" for key, value in current_ids().items())
        return f"{head} [{ids}]: {record.message}" if ids else f"{head}: {record.message}"


def configure_logging(settings: Settings) -> None:
    """Send every record, uvicorn's too (start uvicorn with ``log_config=None``), to one stderr
    handler at ``CITADEL_LOG_LEVEL``, as JSON lines or text per ``CITADEL_LOG_FORMAT``."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = (settings.log_format or _default_format(settings)) == "json"
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    logging.getLogger().handlers = [handler]
    set_log_level(settings.log_level)


def set_log_level(level: str) -> None:
    """Records below ``level`` are dropped, uvicorn's too (it gives its loggers their own
    level at start); a configuration reload calls this."""
    for name in ("", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(name).setLevel(level.upper())


def _default_format(settings: Settings) -> str:
    return "json" if settings.env == "production" else "text"


def _dumps(line: dict[str, Any]) -> str:
    return orjson.dumps(line, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
