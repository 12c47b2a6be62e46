"""A least-recently-used cache bounded by the bytes its entries hold, not by their number."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class ByteBudgetCache(Generic[V]):
    """Least recently used entries within `max_bytes` in all (`size` tells an entry's bytes). An entry larger
    than `max_entry_bytes` (default a quarter of the budget) is not kept, so one large entry cannot flush
    everything else."""

    def __init__(self, max_bytes: int, size: Callable[[V], int], max_entry_bytes: int | None = None) -> None:
        self._max = max_bytes
        self._max_entry = max_bytes // 4 if max_entry_bytes is None else max_entry_bytes
        self._size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

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
