"""Logging for every videojobs process: one JSON object per line, or readable text for a terminal.

Every line carries the time, level, service and logger; lines written while a job
is handled also carry the worker id, job id and attempt (bound with ``bind``), and
the trace and span ids of the current OpenTelemetry span when there is one.
Third-party loggers (uvicorn, grpc, ultralytics, ...) go through the same handler.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import faulthandler
import io
import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator, TextIO, TypeVar

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

T = TypeVar("T")

FORMATS = ("json", "text")
# Context fields in the order they are shown; only these are bound per job or thread.
CONTEXT_FIELDS = ("worker_id", "job_id", "attempt")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("videojobs_log_context", default={})
_service = "videojobs"


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields (worker_id, job_id, attempt) to every line logged in this context."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def context_fields() -> dict[str, Any]:
    return dict(_context.get())


def in_current_context(target: Callable[..., T]) -> Callable[..., T]:
    """`target` to run on another thread with this thread's log and trace context."""
    ctx = contextvars.copy_context()
    return lambda *args, **kwargs: ctx.run(target, *args, **kwargs)


class ContextFilter(logging.Filter):
    """Stamps each record with the service, the bound context and the current trace ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = _service
        for key, value in _context.get().items():
            setattr(record, key, value)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True


def _utc_time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, service, logger, message, then the context fields."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
            # uvicorn adds an ANSI-coloured copy of some messages; one message is enough.
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "taskName"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_time(record)


class TextFormatter(logging.Formatter):
    """`time LEVEL service logger: message [job_id=... attempt=... trace_id=...]` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _utc_time(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        keys = [*CONTEXT_FIELDS, "trace_id"]
        extra = " ".join(f"{k}={getattr(record, k)}" for k in keys if getattr(record, k, None) is not None)
        if not extra:
            return text
        first, sep, rest = text.partition("\n")  # keep a traceback below the line it belongs to
        return f"{first} [{extra}]{sep}{rest}"


def configure_logging(service: str, level: str = "INFO", fmt: str = "text", stream: TextIO | None = None,
                      capture_native: bool = False) -> None:
    """Route every logger of the process through one handler in `fmt` ("json" or "text").

    Replaces handlers set up before (basicConfig, libraries that install their own);
    uncaught exceptions in any thread are logged through it too. With `capture_native`
    (a service process in json mode), what native libraries write to the process's
    stdout and stderr (FFmpeg, Leptonica, gRPC core...) becomes log lines as well.
    """
    global _service
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _service = service
    if capture_native and stream is None:
        stream = _capture_native_output()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "ultralytics"):
        adopt(logging.getLogger(name))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback,
                                                      args.thread.name if args.thread else "?")


def adopt(logger: logging.Logger) -> None:
    """Make a library's logger (one that installed its own handler) write through ours."""
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.propagate = True


def _capture_native_output() -> TextIO:
    """Point file descriptors 1 and 2 at a pipe whose lines are logged; return a stream on the real stderr.

    Native code writes to the descriptors directly, beyond Python's logging. A fatal
    error's traceback (faulthandler) still goes straight to the real stderr.
    """
    real_stderr = io.TextIOWrapper(os.fdopen(os.dup(2), "wb", buffering=0), encoding="utf-8",
                                   errors="replace", line_buffering=True, write_through=True)
    faulthandler.enable(file=real_stderr)
    read_fd, write_fd = os.pipe()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    for fd in (1, 2):
        os.dup2(write_fd, fd)
    os.close(write_fd)
    native = logging.getLogger("videojobs.native")

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as lines:
            for raw in lines:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    native.warning(text)

    thread = threading.Thread(target=pump, name="native-output", daemon=True)
    thread.start()

    def restore() -> None:  # at exit: give the descriptors back, let the pump drain the pipe
        for stream_ in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream_.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
        thread.join(timeout=2)

    atexit.register(restore)
    return real_stderr


def _log_uncaught(exc_type, exc, tb, thread: str = "main") -> None:  # noqa: ANN001
    if issubclass(exc_type, KeyboardInterrupt):
        return
    logging.getLogger("videojobs").critical("uncaught exception in thread %s", thread, exc_info=(exc_type, exc, tb))


class Throttle:
    """``due()`` is True at most once per `seconds`: a warning repeated while a condition lasts (a store that
    cannot be reached) is logged once a minute, not on every call."""

    def __init__(self, seconds: float = 60.0) -> None:
        self._seconds = seconds
        self._last = -float("inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._seconds:
                return False
            self._last = now
            return True
