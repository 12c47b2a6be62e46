"""The api's byte-bounded LRU cache (frame images, indexed results documents)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from videojobs.api import caching
from videojobs.api.caching import ByteBudgetCache


def test_entries_are_kept_within_the_byte_budget_least_recently_used_first_out():
    cache: ByteBudgetCache[bytes] = ByteBudgetCache(100, len, max_entry_bytes=60)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.get("a") == b"x" * 40  # a is now the most recently used
    cache.put("c", b"x" * 40)  # 120 > 100: b goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c") and cache.nbytes == 80
    cache.put("big", b"x" * 61)  # larger than one entry may be: not kept, nothing evicted
    assert cache.get("big") is None and cache.nbytes == 80
    cache.pop("a")
    cache.pop("a")  # popping what is not there is fine
    assert cache.get("a") is None and cache.nbytes == 40


def test_an_entry_may_take_a_quarter_of_the_budget_by_default():
    cache: ByteBudgetCache[bytes] = ByteBudgetCache(100, len)
    cache.put("quarter", b"x" * 25)
    cache.put("more", b"x" * 26)
    assert cache.get("quarter") and cache.get("more") is None


class _Loads:
    """A loader that blocks until released, counting its calls; and a Future that says when a caller waits on it."""

    def __init__(self, monkeypatch, value=b"x" * 10, error: Exception | None = None) -> None:
        self.value, self.error, self.calls = value, error, 0
        self.started, self.release, self.waiting = threading.Event(), threading.Event(), threading.Semaphore(0)
        waiting = self.waiting

        class WatchedFuture(Future):
            def result(self, timeout=None):
                waiting.release()
                return super().result(timeout)

        monkeypatch.setattr(caching, "Future", WatchedFuture)

    def __call__(self) -> bytes:
        self.calls += 1
        self.started.set()
        self.release.wait()
        if self.error is not None:
            raise self.error
        return self.value


def _together(cache, load, callers: int) -> list:
    """`callers` calls of get_or_load("k"): the first loads, the others ask while it does."""
    got: list = [None] * callers

    def call(i: int) -> None:
        try:
            got[i] = cache.get_or_load("k", load)
        except Exception as exc:  # noqa: BLE001 - what each caller got is the point
            got[i] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(callers)]
    threads[0].start()
    assert load.started.wait(30)
    for t in threads[1:]:
        t.start()
    try:
        for _ in range(callers - 1):  # every other caller waits for the first one's load (or, if it loads
            if not load.waiting.acquire(timeout=30):  # itself, never says so: a second load is counted below)
                break
    finally:
        load.release.set()
    for t in threads:
        t.join(30)
    return got


def test_callers_asking_together_for_a_missing_entry_share_one_load(monkeypatch):
    cache: ByteBudgetCache[bytes] = ByteBudgetCache(100, len)
    load = _Loads(monkeypatch)
    got = _together(cache, load, 4)
    assert load.calls == 1 and all(value is got[0] for value in got) and got[0] == b"x" * 10
    assert cache.get("k") is got[0]  # kept: the next caller does not load
    assert cache.get_or_load("k", lambda: b"other") is got[0]


def test_a_value_too_large_to_keep_is_still_shared_by_the_callers_waiting_for_it(monkeypatch):
    cache: ByteBudgetCache[bytes] = ByteBudgetCache(100, len, max_entry_bytes=5)
    load = _Loads(monkeypatch)
    got = _together(cache, load, 3)
    assert load.calls == 1 and all(value is got[0] for value in got)
    assert cache.get("k") is None and cache.get_or_load("k", lambda: b"again") == b"again"  # not kept


def test_a_failed_load_fails_every_caller_waiting_for_it_and_is_not_kept(monkeypatch):
    cache: ByteBudgetCache[bytes] = ByteBudgetCache(100, len)
    load = _Loads(monkeypatch, error=OSError("storage unavailable"))
    got = _together(cache, load, 3)
    assert load.calls == 1 and all(isinstance(e, OSError) and str(e) == "storage unavailable" for e in got)
    assert cache.get_or_load("k", lambda: b"later") == b"later"  # the next caller loads again
