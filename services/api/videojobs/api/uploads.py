"""Bounds on upload streams, so a client holding streams open cannot starve everyone else.

The gRPC server runs handlers on a thread pool. Without bounds, 16 Submit streams
that never finish would hold every thread and GetStatus would wait behind them.
So: at most `max_concurrent` uploads at once (more is RESOURCE_EXHAUSTED at once,
before reading a byte), and a watchdog cancels a stream that sent nothing for
`idle_timeout` seconds or is still open after `total_timeout`; the pool is sized
so the other RPCs keep threads of their own whatever the uploads do.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from videojobs.common.errors import TooManyUploads

log = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


@dataclass
class _Upload:
    context: Cancellable
    started: float
    last_activity: float = field(default=0.0)
    cut: bool = False


class UploadLimiter:
    def __init__(self, max_concurrent: int, idle_timeout: float, total_timeout: float,
                 tick_seconds: float = 0.5) -> None:
        self.max_concurrent = max_concurrent
        self._idle = idle_timeout
        self._total = total_timeout
        self._tick = tick_seconds
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._active: dict[int, _Upload] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.cancelled = 0  # streams cut by the watchdog

    def start(self) -> None:
        self._watchdog = threading.Thread(target=self._watch, name="upload-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def upload(self, context: Cancellable) -> Iterator[int]:
        """Hold one upload slot for the stream (TooManyUploads if none is free)."""
        if not self._slots.acquire(blocking=False):
            raise TooManyUploads(self.max_concurrent)
        now = time.monotonic()
        with self._lock:
            handle = next(self._ids)
            self._active[handle] = _Upload(context, now, now)
        try:
            yield handle
        finally:
            with self._lock:
                del self._active[handle]
            self._slots.release()

    def touch(self, handle: int) -> None:
        """The stream delivered a message."""
        with self._lock:
            upload = self._active.get(handle)
            if upload is not None:
                upload.last_activity = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                stale = [(h, u) for h, u in self._active.items()
                         if not u.cut and (now - u.last_activity > self._idle or now - u.started > self._total)]
                for _, upload in stale:
                    upload.cut = True
            for handle, upload in stale:
                log.warning("upload stream %d cut: idle %.0fs, open %.0fs", handle, now - upload.last_activity,
                            now - upload.started)
                self.cancelled += 1
                upload.context.cancel()
