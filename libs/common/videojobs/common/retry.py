"""Backoff for temporary faults: capped exponential, with jitter so retries of many jobs spread out."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Backoff:
    """The n-th retry (n >= 1) waits a random time between half and all of min(cap, base * 2**(n-1))."""

    base: float = 1.0
    cap: float = 30.0

    def delay(self, n: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, n - 1))
        return ceiling * (0.5 + 0.5 * rand())
