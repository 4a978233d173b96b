"""The request envelope of image models: base64 images or nested arrays. The images themselves are
decoded and checked against the model's geometry by `model.kinds.image.images`."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from vae_anomaly.model.kinds.base import RequestIds


class ImageScoreRequest(RequestIds):
    """Images for an image model: exactly one of `images` (base64) or `arrays` (nested lists)."""

    model_config = ConfigDict(extra="forbid")

    images: list[Any] | None = Field(
        default=None,
        min_length=1,
        description="base64-encoded PNG or JPEG images (a data: URL prefix is accepted)",
    )
    arrays: list[Any] | None = Field(
        default=None,
        min_length=1,
        description="nested arrays H×W or C×H×W: integers 0..255, or floats 0..1",
        examples=[[[[0, 255], [255, 0]]]],
    )
    labels: list[Any] | None = Field(
        default=None,
        min_length=1,
        description="conditional image models (cvae), required there: each image's label, its condition",
        examples=[[7]],
    )
    explain: int = Field(default=3, ge=0, le=1000, description="how many top regions to list per image")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageScoreRequest:
        if (self.images is None) == (self.arrays is None):
            raise ValueError("give exactly one of 'images' (base64 PNG/JPEG) or 'arrays'")
        return self

    def size(self) -> int:
        return len(self.images or self.arrays or [])
