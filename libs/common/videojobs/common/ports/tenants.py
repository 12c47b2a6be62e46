"""TenantStore: tenants, their webhook secrets, their own limits and their API keys (hashes only)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from videojobs.common.tenants import ApiKeyRecord, Tenant, TenantLimits


class TenantStore(ABC):
    @abstractmethod
    def ensure_tenant(self, tenant_id: str) -> Tenant:
        """The tenant, created with a new webhook secret if it did not exist."""
        raise NotImplementedError

    @abstractmethod
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        raise NotImplementedError

    @abstractmethod
    def list_tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        raise NotImplementedError

    @abstractmethod
    def set_limits(self, tenant_id: str, limits: TenantLimits) -> Tenant | None:
        """Replace the tenant's own limits (None fields: the service's defaults); None if there is no such tenant."""
        raise NotImplementedError

    @abstractmethod
    def add_key(self, record: ApiKeyRecord) -> None:
        raise NotImplementedError

    @abstractmethod
    def find_key(self, prefix: str) -> ApiKeyRecord | None:
        raise NotImplementedError

    @abstractmethod
    def list_keys(self) -> list[ApiKeyRecord]:
        raise NotImplementedError

    @abstractmethod
    def revoke_key(self, prefix: str) -> bool:
        """Revoke an active key; False if there is no such active key."""
        raise NotImplementedError
