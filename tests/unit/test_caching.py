"""The api's byte-bounded LRU cache (frame images, indexed results documents)."""

from __future__ import annotations

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
