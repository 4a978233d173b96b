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
    max_image_pixels: int = Field(
        default=2048 * 2048, ge=1, description="largest width × height of one image, checked before decoding"
    )
    api_token: SecretStr | None = Field(default=None, description="bearer token for the admin endpoints")
    torch_threads: int | None = Field(default=None, ge=1, description="default: torch's own choice")
    explain_default: int = Field(default=3, ge=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
