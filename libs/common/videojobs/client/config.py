"""Client settings: where the JobService is and the API key, from VIDEOJOBS_* variables (or `.env`)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """What a client of the service reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="VIDEOJOBS_", env_file=".env", extra="ignore", frozen=True)

    # The gRPC JobService, host:port.
    server: str = "localhost:50051"
    # Sent as `authorization: Bearer <key>` metadata on every call when set.
    api_key: SecretStr = SecretStr("")
