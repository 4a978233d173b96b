"""Images in and out: base64 PNG/JPEG and nested arrays → float tensors in [0, 1], and back to PNG.

Every image a model sees goes through `ImageSpec.conform`, so an image sent as a PNG and the same
pixels sent as an array reach the network as the same float32 array. Sizes are checked against the
spec before anything is decoded, and the pixel count of an encoded image is read from its header and
refused above a limit before Pillow allocates it (decompression bombs).

Pillow is the one dependency here beyond the `model` package's usual torch/numpy/pydantic: decoding
belongs with the model's input checks, which the CLI, the service and the benchmarks all share.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vae_anomaly.model.errors import InputError, InputIssue, InputTooLargeError

Loc = tuple[str | int, ...]

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest width × height accepted from an encoded image unless the caller says otherwise."""


class PixelBudget:
    """The decoded pixels one request may still spend. Each encoded image's size is read from its
    header and taken from the budget before it is decoded, so going over costs a header read."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0

    def take(self, pixels: int, loc: Loc) -> None:
        """Spend `pixels` on the image at `loc`; `InputTooLargeError` when that exceeds the limit."""
        self.used += pixels
        if self.limit is not None and self.used > self.limit:
            raise InputTooLargeError(
                [
                    InputIssue(
                        loc,
                        f"the images up to this one decode to {self.used} pixels, above the limit of {self.limit} "
                        "pixels per request; send fewer or smaller images",
                        "request_pixels",
                    )
                ]
            )


class ImageSpec(BaseModel):
    """The fixed geometry a model was trained on; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    channels: Literal[1, 3]
    resize: bool = Field(default=False, description="resize other sizes (bilinear) instead of refusing them")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def conform(self, image: np.ndarray, loc: Loc) -> np.ndarray:
        """(C, H, W) float32 in [0, 1] of any size → this spec's shape, or an `InputError`.

        Grey ↔ RGB is converted (ITU-R 601 luma for RGB → grey); another size is resized when the
        model was trained with `resize`, else refused naming both sizes.
        """
        channels, height, width = image.shape
        if (height, width) != (self.height, self.width):
            if not self.resize:
                raise _error(
                    loc,
                    f"image is {width}×{height} pixels but the model expects {self.width}×{self.height} "
                    "(it was trained without --resize)",
                    "image_size",
                )
            image = resize(image, self.height, self.width)
        if channels != self.channels:
            image = to_channels(image, self.channels)
        return np.ascontiguousarray(image, dtype=np.float32)


def _error(loc: Loc, msg: str, kind: str) -> InputError:
    return InputError([InputIssue(loc, msg, kind)])


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(C, H, W) with C in {1, 3} → `channels` channels."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=0)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(3, 1, 1)
    return (image * weights).sum(axis=0, keepdims=True)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (C, H, W) float image, channel by channel in float (no 8-bit rounding),
    so training (`--resize`) and serving resize identically."""
    planes = [
        np.asarray(
            Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
        )
        for plane in image
    ]
    return np.clip(np.stack(planes), 0.0, 1.0)


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 0..255 → /255; floats are taken as already in [0, 1]. Either way float32."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    return pixels.astype(np.float32)


def as_chw(pixels: np.ndarray) -> np.ndarray:
    """(H, W) → (1, H, W); (C, H, W) stays; also accepts (H, W, C) with C in {1, 3, 4} last."""
    if pixels.ndim == 2:
        return pixels[None]
    if pixels.ndim == 3 and pixels.shape[0] not in (1, 3) and pixels.shape[-1] in (1, 3, 4):
        pixels = np.moveaxis(pixels, -1, 0)
    if pixels.ndim == 3 and pixels.shape[0] == 4:  # RGBA: drop alpha
        pixels = pixels[:3]
    return pixels


# -- encoded images (PNG, JPEG, ...) -------------------------------------------------------------


def decode_image(
    data: bytes, loc: Loc, max_pixels: int = DEFAULT_MAX_PIXELS, budget: PixelBudget | None = None
) -> np.ndarray:
    """PNG/JPEG/... bytes → (C, H, W) float32 in [0, 1], C = 1 (grey) or 3 (colour).

    The size comes from the header (`Image.open` reads no pixel data); larger than `max_pixels`, or
    than what is left of the request's `budget`, is refused before `load()` allocates anything.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise _error(
                    loc,
                    f"image is {width}×{height} = {width * height} pixels, above the limit of {max_pixels}",
                    "image_too_large",
                )
            if budget is not None:
                budget.take(width * height, loc)
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(loc, f"image refused as a decompression bomb: {exc}", "image_too_large") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        reason = str(exc).split(" <_io.BytesIO")[0]  # Pillow names the in-memory file object; drop it
        raise _error(loc, f"not a decodable image (PNG, JPEG, ...): {reason}", "image_invalid") from exc
    return image_to_array(image)


def image_to_array(image: Image.Image) -> np.ndarray:
    """A Pillow image → (C, H, W) float32 in [0, 1]: 16-bit grey scaled from 65535, palette and
    alpha images flattened to RGB (alpha dropped), grey kept as one channel."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # "I": how some Pillow versions open 16-bit PNGs
        pixels = np.asarray(image, dtype=np.float64) / 65535.0
        return np.clip(pixels, 0.0, 1.0).astype(np.float32)[None]
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
    return as_chw(to_unit_float(np.asarray(image)))


def decode_base64_image(
    text: object, loc: Loc, max_pixels: int = DEFAULT_MAX_PIXELS, budget: PixelBudget | None = None
) -> np.ndarray:
    """A base64 string (optionally a `data:image/...;base64,` URL) → (C, H, W) float32 in [0, 1]."""
    if not isinstance(text, str):
        raise _error(loc, "expected a base64 string (PNG or JPEG)", "string_type")
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    # An encoded image costs at least ~1 bit per pixel: a string far above the pixel limit's size is
    # refused before decoding it.
    if len(text) > 4 * max_pixels + 1024:
        raise _error(loc, f"base64 string of {len(text)} characters is above the size limit", "image_too_large")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _error(loc, f"invalid base64: {exc}", "base64_invalid") from exc
    return decode_image(data, loc, max_pixels, budget)


def encode_png(image: np.ndarray) -> bytes:
    """(C, H, W) floats in [0, 1] → PNG bytes (8-bit grey or RGB)."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    if pixels.shape[0] == 1:
        Image.fromarray(pixels[0], mode="L").save(buffer, format="PNG")
    else:
        Image.fromarray(np.moveaxis(pixels, 0, -1), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(encode_png(image)).decode("ascii")


# -- nested arrays -------------------------------------------------------------------------------


def array_image(value: object, loc: Loc, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Nested lists H×W or C×H×W (ints 0..255, or floats 0..1) → (C, H, W) float32 in [0, 1].

    All integers means 0..255; any float means 0..1 (so `[[0, 1.0]]` is on the 0..1 scale). Values
    outside the scale are refused, not clipped, naming the range. Like an encoded image, more than
    `max_pixels` pixels (height × width) is refused.
    """
    if not isinstance(value, list):
        raise _error(loc, "expected a nested array (H×W or C×H×W)", "list_type")
    try:
        pixels = np.asarray(value)
    except ValueError as exc:  # ragged
        raise _error(loc, f"rows of unequal length: {_first_line(exc)}", "array_shape") from exc
    if pixels.dtype == object and pixels.ndim in (2, 3) and 0 not in pixels.shape:
        _refuse_non_number(pixels, loc)
    if pixels.dtype == object or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise _error(loc, f"expected H×W or C×H×W numbers, got an array of shape {pixels.shape}", "array_shape")
    if pixels.ndim == 3 and pixels.shape[0] not in (1, 3):
        raise _error(loc, f"expected 1 or 3 channels first (C×H×W), got shape {pixels.shape}", "array_shape")
    height, width = pixels.shape[-2:]
    if height * width > max_pixels:
        raise _error(loc, f"{height * width} pixels is above the limit of {max_pixels}", "image_too_large")
    if pixels.dtype.kind == "b" or pixels.dtype.kind not in "iuf":
        raise _error(loc, "pixels must be numbers (0..255 integers or 0..1 floats)", "array_type")
    if pixels.dtype.kind in "iu":
        if pixels.min() < 0 or pixels.max() > 255:
            raise _error(loc, "integer pixels must lie in 0..255", "pixel_range")
        return as_chw(pixels.astype(np.float32) / 255.0)
    if not np.all(np.isfinite(pixels)):
        raise _error(loc, "pixels must be finite numbers", "pixel_range")
    if pixels.min() < 0 or pixels.max() > 1:
        raise _error(loc, "float pixels must lie in 0..1 (send 0..255 as integers)", "pixel_range")
    return as_chw(pixels.astype(np.float32))


def _refuse_non_number(pixels: np.ndarray, loc: Loc) -> None:
    """A rectangular array that numpy kept as objects holds a null or a non-number: name the first
    one by its index ("pixel [3, 5] is null"), not by the array's shape."""
    for index in np.ndindex(pixels.shape):
        value = pixels[index]
        where = ", ".join(str(i) for i in index)
        if value is None:
            raise _error(loc, f"pixel [{where}] is null; every pixel needs a number", "pixel_null")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _error(loc, f"pixel [{where}] is {value!r}, not a number", "array_type")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class ImageInputs:
    """Checked images in the model's geometry, and what each looked like when it came in (so that
    regions, reconstructions and heatmaps map back to the input's own size and channels)."""

    pixels: np.ndarray  # (B, C, H, W) float32 in [0, 1]
    shapes: list[tuple[int, int, int]]  # each input's (channels, height, width)
    condition: np.ndarray | None = None  # (B, 1) position of each image's label, conditional models only

    def __len__(self) -> int:
        return self.pixels.shape[0]


def images_from_payload(
    spec: ImageSpec,
    images: Sequence[object] | None,
    arrays: Sequence[object] | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_request_pixels: int | None = None,
) -> ImageInputs:
    """A request's `images` (base64) or `arrays` → checked `ImageInputs`; errors name the index.
    All images together may decode to at most `max_request_pixels` (`InputTooLargeError`)."""
    field, items = ("images", images) if images is not None else ("arrays", arrays or [])
    batch = np.empty((len(items), *spec.shape), dtype=np.float32)
    shapes = []
    budget = PixelBudget(max_request_pixels)
    for i, item in enumerate(items):
        loc = (field, i)
        if field == "images":
            pixels = decode_base64_image(item, loc, max_pixels, budget)
        else:  # already parsed (bounded by the body size): counted, so the resizing is bounded too
            pixels = array_image(item, loc, max_pixels)
            budget.take(pixels.shape[1] * pixels.shape[2], loc)
        shapes.append(pixels.shape)
        batch[i] = spec.conform(pixels, loc)
    return ImageInputs(batch, shapes)


def images_from_array(spec: ImageSpec, pixels: np.ndarray, loc_prefix: str = "image") -> ImageInputs:
    """An array read from a file, (N, H, W) or (N, C, H, W), uint8 0..255 or float 0..1 → inputs."""
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    if pixels.ndim != 4:
        raise _error(
            (loc_prefix,), f"expected images of shape (N, H, W) or (N, C, H, W), got {pixels.shape}", "array_shape"
        )
    images = to_unit_float(pixels)
    if images.size and (not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1):
        raise _error((loc_prefix,), "float pixels must be finite and lie in 0..1 (or give uint8 0..255)", "pixel_range")
    batch = np.empty((len(images), *spec.shape), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = spec.conform(image, (loc_prefix, i))
    return ImageInputs(batch, [image.shape for image in images])


class PixelBaseline(BaseModel):
    """Per-pixel error of normal images, from the calibration split: what heatmaps and regions are
    measured against, so they show where an image is worse than normal ones, not where any image
    is hard to reconstruct (edges of strokes)."""

    model_config = ConfigDict(extra="forbid")

    mean: list[float] = Field(description="mean -log p(x_pixel | z = mu) per pixel (channels summed), row-major")
    scale: float = Field(gt=0, description="99.9th percentile of calibration pixels' excess error: heatmap full scale")


# -- tensors -------------------------------------------------------------------------------------


@dataclass
class ImageBatch:
    """Images as the VAE consumes them: (B, C, H, W) float32 in [0, 1]. The encoder input and the
    likelihood's target are the same tensor (no masks: every pixel is observed)."""

    x: torch.Tensor
    condition: torch.Tensor | None = None  # (B, C) one-hot label of a conditional model

    @property
    def x_in(self) -> torch.Tensor:
        return self.x

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.x.to(device), None if self.condition is None else self.condition.to(device))

    def slice(self, start: int, stop: int) -> ImageBatch:
        return ImageBatch(self.x[start:stop], None if self.condition is None else self.condition[start:stop])

    def select(self, index: torch.Tensor) -> ImageBatch:
        return ImageBatch(self.x[index], None if self.condition is None else self.condition[index])

    @classmethod
    def from_numpy(cls, images: np.ndarray) -> ImageBatch:
        return cls(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
