"""CapabilityStore: where workers publish what they can do, and where the api reads it."""

from __future__ import annotations

from abc import ABC, abstractmethod

from videojobs.common.resources import WorkerCapabilities


class CapabilityStore(ABC):
    """Workers publish their model and OCR languages; the api validates submits against the newest."""

    @abstractmethod
    def publish(self, capabilities: WorkerCapabilities) -> None:
        """Insert or replace this worker's entry."""
        raise NotImplementedError

    @abstractmethod
    def latest(self) -> WorkerCapabilities | None:
        """The most recently published entry, or None if no worker has published."""
        raise NotImplementedError
