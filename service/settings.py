"""Service settings from the environment (prefix `VAE_ANOMALY_`), read once and cached."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    model_name: str = Field(
        default="vae-anomaly",
        min_length=1,
        description="the model's name on the Open Inference Protocol routes (/v2/models/{name}); "
        "under KServe, the InferenceService's name",
    )
    thresholds_file: Path | None = Field(
        default=None,
        description="JSON thresholds applied over the artifact's and watched for changes (a ConfigMap); "
        "PUT /thresholds writes through to it (see README, Scaling out)",
    )
    thresholds_poll_seconds: float = Field(default=1.0, gt=0, le=60, description="how often the file is checked")
    max_request_pixels: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="most decoded pixels of all the images of one request together, read from each image's header "
        "before it is decoded (10,000 28×28 images, or two 2048×2048 ones): bounds the compute one request costs",
    )
    api_token: SecretStr | None = Field(default=None, description="bearer token for the admin endpoints")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op (OpenMP) threads per worker; `serve` defaults it to the cores available ÷ "
        "workers less one for the worker's event loop (at least 1), so workers do not oversubscribe the machine "
        "(service/server.py)",
    )
    switch_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        le=0.1,
        description="Python's GIL switch interval in the workers (`sys.setswitchinterval`); null keeps Python's "
        "0.005. The compute thread gives up the GIL in every torch call and waits up to this long to get it back "
        "from the event loop; 0.0005 won on the loaded VM but lost on the quiet one (docs/BENCHMARKS.md, issue 15)",
    )
    http_stack: Literal["auto", "httptools", "h11"] = Field(
        default="auto",
        description="uvicorn's HTTP parser and event loop: 'httptools' (httptools + uvloop, the `uvicorn[standard]` "
        "stack), 'h11' (h11 + asyncio, pure Python); auto: httptools when httptools and uvloop are installed",
    )
    explain_default: int = Field(default=3, ge=0)
    score_fast_path: bool = Field(
        default=True,
        description="answer POST /score before FastAPI's routing (service/score_path.py); false: through the route",
    )
    micro_batch: bool = Field(default=True, description="gather concurrent small /score requests into one pass")
    micro_batch_max_records: int = Field(
        default=64, ge=1, description="most records in one gathered batch; larger requests are scored alone"
    )
    micro_batch_max_wait_seconds: float = Field(
        default=0.0, ge=0.0, le=1.0, description="how long a batch waits for more requests after its first"
    )

    # -- the serving process (see README "Operations") ------------------------------------------
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes (`serve --workers` overrides it)")
    worker_healthcheck_seconds: int = Field(
        default=30,
        ge=1,
        description="how long uvicorn's supervisor waits for a worker to answer or, on SIGHUP, to become ready; "
        "uvicorn's own 5 s kills workers still importing torch on a busy machine",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="one JSON object per line, or plain text; auto: text when stderr is a terminal, else JSON",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_payloads: bool = Field(default=False, description="add request bodies (truncated) to the access log")
    drain_seconds: float = Field(
        default=1.0,
        ge=0.0,
        le=60.0,
        description="after SIGTERM, keep serving this long with `Connection: close` on every response (and /readyz "
        "503) before closing connections, so keep-alive clients lose no request (service/shutdown.py)",
    )
    graceful_shutdown_seconds: int = Field(
        default=20,
        ge=1,
        description="after the drain, how long uvicorn waits for requests in flight before cancelling them: "
        "a pod stops before Kubernetes' 30 s grace period runs out",
    )
    read_timeout_seconds: float = Field(
        default=30.0,
        gt=0.0,
        description="a request's headers, and then its body, must arrive within this many seconds (else 408)",
    )
    limit_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="most connections plus requests in flight per worker; beyond it uvicorn answers 503 at once",
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="larger request bodies get a 413")
    drift_window: int = Field(default=1000, ge=1, description="records in the sliding window of the drift gauges")
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="prometheus-client's own variable (no prefix); `serve --workers N` (N > 1) sets it",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
