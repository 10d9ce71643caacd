"""Logs: one line per record on stderr, each naming the request and the run it belongs to.

Why it looks the way it does:

- **Ids travel in contextvars.** The API's request-id middleware binds the request id for the
  request's task and :func:`bind_run` binds the run in the task that drives it; tasks created
  inside inherit both, so every line logged on their behalf, uvicorn's access line included,
  carries them without being passed around.
- **One handler, two formats.** JSON lines (:class:`JsonFormatter`) for log collectors, the
  default in production; plain text (:class:`TextFormatter`) for a terminal. Each app adds
  the ring buffer ``GET /admin/logs`` reads (:mod:`~.log_buffer`).
- **The ids go out too.** :func:`propagate_ids`, an httpx request hook, sends them to the model
  and embedding servers, so their logs can be joined with ours.
- **Nothing secret.** Only what a call site passes is logged, and no header; and both
  formatters pass every line through a :class:`~.redaction.Redactor`, for what libraries
  log (httpx's URLs, uvicorn's query strings, exceptions quoting a DSN).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from agent_server.observability.redaction import Redactor, secrets_of

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
    exception if any, then the ``extra=`` fields (those JSON cannot hold, by their repr);
    secrets redacted by ``redactor`` (the patterns alone by default)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line as plain JSON data, redacted: what :meth:`format` writes."""
        head = {"time": iso_time(record.created), "level": record.levelname, "logger": record.name}
        told: dict[str, Any] = {"message": _message(record), **current_ids()}
        if record.exc_info:
            told["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            told["stack"] = self.formatStack(record.stack_info)
        extra = {
            key: value
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and key not in head and key not in told
        }
        # The head is ours; what the call site and the client told us may hold secrets.
        return head | self.redactor.data((told | _plain(extra)) if extra else told)

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(self.fields(record)).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: ``time LEVEL logger [req=… thread=… run=…]: message``, redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {record.name}"
        ids = " ".join(f"{_TEXT_LABELS[key]}={value}" for key, value in current_ids().items())
        text = f"{head} [{ids}]: " if ids else f"{head}: "
        text += _message(record)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return self.redactor(text)


def configure_logging(settings: Settings) -> None:
    """Send every record, uvicorn's too (start uvicorn with ``log_config=None``), to one stderr
    handler at ``CITADEL_LOG_LEVEL``, as JSON lines or text per ``CITADEL_LOG_FORMAT``."""
    handler = logging.StreamHandler(sys.stderr)
    as_json = (settings.log_format or _default_format(settings)) == "json"
    redactor = Redactor(secrets_of(settings))
    handler.setFormatter(JsonFormatter(redactor) if as_json else TextFormatter(redactor))
    logging.getLogger().handlers = [handler]
    set_log_level(settings.log_level)


def set_log_level(level: str) -> None:
    """Records below ``level`` are dropped, uvicorn's too (it gives its loggers their own
    level at start)."""
    for name in ("", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logging.getLogger(name).setLevel(level.upper())


def reconfigure_logging(settings: Settings) -> None:
    """A reloaded configuration's level, and its secrets hidden by every handler that
    redacts (stderr and the log buffers); the handlers themselves stay."""
    set_log_level(settings.log_level)
    known = secrets_of(settings)
    for handler in logging.getLogger().handlers:
        redactor = getattr(handler, "redactor", None) or getattr(
            handler.formatter, "redactor", None
        )
        if isinstance(redactor, Redactor):
            redactor.learn(known)


def iso_time(created: float) -> str:
    """A record's time as its lines show it: UTC, to the millisecond."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _default_format(settings: Settings) -> str:
    return "json" if settings.env == "production" else "text"


def _message(record: logging.LogRecord) -> str:
    """The record's message; when its arguments do not fit it, the template and the error,
    rather than logging's own report, which prints the arguments unredacted."""
    try:
        return record.getMessage()
    except Exception as error:  # any argument may break %-formatting
        return f"{record.msg!s} (arguments do not fit: {type(error).__name__})"


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` as plain JSON data, taken now (the objects may change later); what JSON
    cannot hold, by its repr."""
    try:
        return orjson.loads(orjson.dumps(extra, default=repr, option=orjson.OPT_NON_STR_KEYS))
    except Exception:  # integers beyond 64 bits, a repr that raises
        return {key: _repr(value) for key, value in extra.items()}


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as error:  # a broken __repr__
        return f"<{type(value).__name__}: repr failed: {type(error).__name__}>"
