"""WebhookOutbox: completion notices waiting to be delivered, and their attempts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Delivery:
    delivery_id: str  # the Standard Webhooks `webhook-id`, the same on every attempt
    tenant_id: str
    job_id: str
    url: str
    event: dict[str, Any]
    attempts: int
    created_at: datetime


class WebhookOutbox(ABC):
    """Rows are written by JobRepository.save with the final state; a dispatcher drains them."""

    @abstractmethod
    def claim_due(self, now: datetime, limit: int, hold_until: datetime) -> list[Delivery]:
        """Pending deliveries due by `now`, each claimed (attempts + 1, not due again before
        `hold_until`) with a compare-and-set, so two dispatchers never send the same attempt."""
        raise NotImplementedError

    @abstractmethod
    def delivered(self, delivery_id: str, at: datetime) -> None:
        raise NotImplementedError

    @abstractmethod
    def retry_at(self, delivery_id: str, when: datetime, error: str) -> None:
        raise NotImplementedError

    @abstractmethod
    def give_up(self, delivery_id: str, at: datetime, error: str) -> None:
        raise NotImplementedError

    @abstractmethod
    def deliveries_of(self, job_id: str) -> list[dict[str, Any]]:
        """Every delivery row of a job (state, attempts, last_error): for operators and tests."""
        raise NotImplementedError
