"""Caches of the api: a least-recently-used one bounded by the bytes its entries hold, and one that keeps
what a slower store answered for a few seconds."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class ByteBudgetCache(Generic[V]):
    """Least recently used entries within `max_bytes` in all (`size` tells an entry's bytes). An entry larger
    than `max_entry_bytes` (default a quarter of the budget) is not kept, so one large entry cannot flush
    everything else. ``get_or_load`` loads a missing entry once however many callers ask for it at the
    same time."""

    def __init__(self, max_bytes: int, size: Callable[[V], int], max_entry_bytes: int | None = None) -> None:
        self._max = max_bytes
        self._max_entry = max_bytes // 4 if max_entry_bytes is None else max_entry_bytes
        self._size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[Hashable, Future] = {}

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The entry for `key`; if there is none, `load()`'s value, kept if it fits. Callers that ask while
        another is loading the same key wait for its value (or its exception) instead of loading it again,
        even when the value is too large to keep."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
                return value
            pending = self._loading.get(key)
            loading = pending is None
            if loading:
                pending = self._loading[key] = Future()
        if not loading:
            return pending.result()
        try:
            value = load()
            self.put(key, value)
            pending.set_result(value)
            return value
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._loading[key]

    def put(self, key: Hashable, value: V) -> None:
        size = self._size(value)
        if size > self._max_entry:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self._max:
                _, old = self._entries.popitem(last=False)
                self._bytes -= self._size(old)

    def pop(self, key: Hashable) -> None:
        with self._lock:
            value = self._entries.pop(key, None)
            if value is not None:
                self._bytes -= self._size(value)


class ReadThroughCache(Generic[V]):
    """What a store answered for a key (None included), kept `seconds` after it was read: a change in the
    store takes effect within that time, and a key asked for often costs one read per period. At most
    `max_entries` keys: beyond that the cache starts again, so keys that do not exist cannot grow it."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, read: Callable[[], V]) -> V:
        """The value read for `key` less than `seconds` ago, else `read()`'s, kept (what `read` raises goes
        to the caller, and the last value stays as it was)."""
        now = time.monotonic()
        with self._lock:
            kept = self._entries.get(key)
        if kept is not None and now - kept[0] < self._seconds:
            return kept[1]
        value = read()
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value

    def last(self, key: Hashable) -> Optional[V]:
        """The value last read for `key`, however old; None if none was."""
        with self._lock:
            kept = self._entries.get(key)
        return kept[1] if kept is not None else None
