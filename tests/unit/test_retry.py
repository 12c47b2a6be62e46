from videojobs.common.retry import Backoff


def test_backoff_is_exponential_capped_and_jittered():
    b = Backoff(base=1.0, cap=30.0)
    assert [b.delay(n, rand=lambda: 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert [b.delay(n, rand=lambda: 0.0) for n in (1, 6)] == [0.5, 15]
    assert len({round(b.delay(5), 6) for _ in range(50)}) > 10  # retries of many jobs spread out
