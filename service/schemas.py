"""Request and response models of the HTTP API, with their limits.

The request bodies that carry inputs (`/score`, `/reconstruct`) belong to each data kind
(`model.kinds.<kind>.requests`), which also checks the inputs inside them; these models are the rest.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vae_anomaly.model.latent import MAX_INTERPOLATION_STEPS
from vae_anomaly.model.thresholds import THRESHOLD_NAME

Record = dict[str, Any]


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=10, ge=1, description="records to draw (at most VAE_ANOMALY_MAX_SAMPLES)")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="fixed seed → repeatable samples")
    temperature: float = Field(default=1.0, gt=0, le=10, description="scales the latent prior's spread")
    grid: bool = Field(default=False, description="image models: one PNG with all samples tiled")
    condition: Any = Field(
        default=None,
        description="conditional models (cvae), required there: the context to draw under, an object of the "
        'condition columns (tabular, e.g. {"segment": "b"}) or the label (images); samples carry it',
        examples=[{"segment": "b"}],
    )


class ThresholdUpdate(BaseModel):
    """Exactly one of `value` (a score) or `target_fpr` (re-derived from the calibration scores)."""

    model_config = ConfigDict(extra="forbid")

    value: float | None = None
    target_fpr: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ThresholdUpdate:
        if (self.value is None) == (self.target_fpr is None):
            raise ValueError("give exactly one of 'value' or 'target_fpr'")
        return self


class ActiveThresholdUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=THRESHOLD_NAME.pattern)


class ModelRef(BaseModel):
    id: str
    version: str


class TopFeature(BaseModel):
    feature: str
    contribution: float = Field(description="-log p(x_f | z = posterior mean), nats")
    value: Any
    expected: Any = Field(description="the reconstruction of this feature at the posterior mean (original units)")


class TopRegion(BaseModel):
    x: int = Field(description="left edge, pixels of the input image")
    y: int = Field(description="top edge, pixels of the input image")
    width: int
    height: int
    contribution: float = Field(description="summed excess -log p(pixel | z = mean) over normal images, nats")


class ScoreResult(BaseModel):
    id: str | int | None = Field(default=None, description="the request's `ids[i]`, when the body had `ids`")
    score: float = Field(description="anomaly score, higher = more anomalous (negative ELBO, nats)")
    elbo: float
    reconstruction_error: float
    p_value: float = Field(description="conformal p-value against the calibration scores")
    is_anomaly: bool = Field(description="score > the active threshold")
    thresholds_exceeded: list[str]
    missing: list[str] | None = Field(default=None, description="tabular models: features sent as null")
    top_features: list[TopFeature] | None = Field(default=None, description="tabular models")
    top_regions: list[TopRegion] | None = Field(default=None, description="image models")


class ScoreResponse(BaseModel):
    model: ModelRef
    results: list[ScoreResult]


class ReconstructResult(BaseModel):
    id: str | int | None = Field(default=None, description="the request's `ids[i]`, when the body had `ids`")
    reconstruction: Record | str = Field(description="a record (tabular) or a base64 PNG (image)")
    feature_errors: dict[str, float | None] | None = Field(
        default=None, description="tabular: per-feature -log p(x_f | z); null where missing"
    )
    imputed: list[str] | None = Field(default=None, description="tabular: features that were missing")
    heatmap: str | None = Field(default=None, description="image: base64 PNG, per-pixel error over the input")
    reconstruction_error: float | None = Field(default=None, description="image: -log p(x | z = mean), nats")


class ReconstructResponse(BaseModel):
    model: ModelRef
    results: list[ReconstructResult]


class SampleResponse(BaseModel):
    model: ModelRef
    seed: int
    samples: list[Record] | list[str] | None = Field(default=None, description="records, or base64 PNGs")
    grid: str | None = Field(default=None, description="image models with grid=true: one base64 PNG")


class EncodeResult(BaseModel):
    mean: list[float] = Field(description="the posterior mean of z (the code of deterministic autoencoders)")
    std: list[float] | None = Field(
        default=None, description="the posterior standard deviation of z; absent for families without a posterior"
    )
    row: int | None = Field(default=None, description="sequence models: the row that closes the window")
    timestamp: float | str | None = Field(default=None, description="sequence models: that row's timestamp, if sent")


class EncodeResponse(BaseModel):
    model: ModelRef
    latent_dim: int
    results: list[EncodeResult] = Field(description="one per input, in the order `/score` gives them")


class InterpolateOptions(BaseModel):
    """The field `/interpolate` adds to a `/score` body."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(
        default=10,
        strict=True,
        ge=2,
        le=MAX_INTERPOLATION_STEPS,
        description=f"points on the path, both ends included (2..{MAX_INTERPOLATION_STEPS})",
    )


class InterpolateResponse(BaseModel):
    model: ModelRef
    t: list[float] = Field(description="position of each point: 0 = the first input's code, 1 = the second's")
    codes: list[list[float]] = Field(description="the code of each point, (steps, latent_dim)")
    points: list[Record] | list[str] = Field(
        description="the most likely input at each code: records (tabular), base64 PNGs (images), or "
        "windows as one list of values per sensor (sequences)"
    )


class ThresholdOut(BaseModel):
    value: float
    target_fpr: float | None


class ThresholdsResponse(BaseModel):
    active: str
    thresholds: dict[str, ThresholdOut]
    applies_to: str | None = Field(
        default=None,
        description="after a change: 'this worker only', or every worker and replica reading the thresholds file",
    )
    warnings: list[str] | None = Field(
        default=None, description="PUT by target_fpr: the new value equals another threshold's (same records flagged)"
    )


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]


class ReloadRequest(BaseModel):
    """Optional body of `POST /admin/reload`: without `model_dir`, the directory being served is re-read."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str | None = Field(default=None, min_length=1, max_length=4096, description="artifact directory")


class ReloadResponse(BaseModel):
    model: ModelRef
    previous: ModelRef
    model_dir: str
    schema_changed: bool = Field(description="the new model expects other features than the previous one")
    seconds: float = Field(description="load, verification and warm-up time")
    pid: int = Field(description="the worker process that reloaded")
    workers: int = Field(description="worker processes of this server; with more than 1, only `pid` reloaded")
