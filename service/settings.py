"""Service settings from the environment (prefix `VAE_ANOMALY_`), read once and cached."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server. `VAE_ANOMALY_MODEL_DIR=/model` sets `model_dir`, and so on."""

    model_config = SettingsConfigDict(env_prefix="VAE_ANOMALY_", extra="ignore", protected_namespaces=())

    model_dir: Path = Path("/model")
    device: str = "auto"
    max_batch: int = Field(default=10_000, ge=1, description="most records in one /score or /reconstruct")
    max_samples: int = Field(default=10_000, ge=1, description="most records one /sample call may ask for")
    api_token: SecretStr | None = Field(default=None, description="bearer token for the admin endpoints")
    torch_threads: int | None = Field(default=None, ge=1, description="default: torch's own choice")
    explain_default: int = Field(default=3, ge=0)
    micro_batch: bool = Field(default=True, description="gather concurrent small /score requests into one pass")
    micro_batch_max_records: int = Field(
        default=64, ge=1, description="most records in one gathered batch; larger requests are scored alone"
    )
    micro_batch_max_wait_seconds: float = Field(
        default=0.0, ge=0.0, le=1.0, description="how long a batch waits for more requests after its first"
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
