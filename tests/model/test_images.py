"""Image codecs: PNG and array inputs agree, sizes and encodings are checked with errors that name
the image, decompression bombs are refused before decoding, and the pixel likelihoods are sound."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from vae_anomaly.model.errors import InputError
from vae_anomaly.model.kinds.image.backbone import continuous_bernoulli_mean, image_network_config
from vae_anomaly.model.kinds.image.images import (
    ImageSpec,
    array_image,
    decode_base64_image,
    encode_png,
    images_from_array,
    images_from_payload,
    png_base64,
)
from vae_anomaly.model.kinds.image.likelihood import continuous_bernoulli_log_norm

GREY = ImageSpec(height=4, width=3, channels=1)


def grey_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 3), dtype=np.uint8)


def png_of(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_and_array_of_the_same_pixels_give_the_same_tensor():
    pixels = grey_pixels()
    from_png = images_from_payload(GREY, [png_of(pixels)], None)
    from_array = images_from_payload(GREY, None, [pixels.tolist()])
    np.testing.assert_array_equal(from_png.pixels, from_array.pixels)
    np.testing.assert_allclose(from_png.pixels[0, 0], pixels / 255.0, rtol=1e-6)
    assert from_png.shapes == [(1, 4, 3)]


def test_float_arrays_are_on_the_unit_scale_and_chw_is_accepted():
    image = array_image([[[0.0, 0.5], [1.0, 0.25]]], ("arrays", 0))
    assert image.shape == (1, 2, 2)
    assert image[0, 0, 1] == pytest.approx(0.5)


def test_png_round_trip_is_exact_at_8_bits():
    pixels = grey_pixels(1)
    image = decode_base64_image(png_base64(pixels[None] / 255.0), ("images", 0))
    np.testing.assert_array_equal(np.rint(image[0] * 255).astype(np.uint8), pixels)


def test_colour_png_is_converted_to_the_models_grey():
    rgb = np.stack([grey_pixels()] * 3, axis=-1)
    batch = images_from_payload(GREY, [png_of(rgb, "RGB")], None)
    np.testing.assert_allclose(batch.pixels[0, 0], grey_pixels() / 255.0, atol=1e-6)
    assert batch.shapes == [(3, 4, 3)]


def test_a_data_url_prefix_is_accepted():
    text = "data:image/png;base64," + png_of(grey_pixels())
    assert decode_base64_image(text, ("images", 0)).shape == (1, 4, 3)


def test_jpeg_is_decoded():
    image = decode_base64_image(png_of(grey_pixels(), fmt="JPEG"), ("images", 0))
    assert image.shape == (1, 4, 3)


def issue_of(excinfo: pytest.ExceptionInfo[InputError]):
    return excinfo.value.issues[0]


def test_wrong_size_is_refused_naming_both_sizes_and_the_index():
    other = np.zeros((5, 5), dtype=np.uint8)
    with pytest.raises(InputError) as excinfo:
        images_from_payload(GREY, [png_of(grey_pixels()), png_of(other)], None)
    issue = issue_of(excinfo)
    assert issue.loc == ("images", 1)
    assert "5×5" in issue.msg and "3×4" in issue.msg and "--resize" in issue.msg


def test_resize_models_accept_other_sizes_the_same_way_for_png_and_array():
    spec = GREY.model_copy(update={"resize": True})
    big = np.random.default_rng(3).integers(0, 256, (8, 6), dtype=np.uint8)
    from_png = images_from_payload(spec, [png_of(big)], None)
    from_array = images_from_payload(spec, None, [big.tolist()])
    assert from_png.pixels.shape == (1, 1, 4, 3)
    np.testing.assert_array_equal(from_png.pixels, from_array.pixels)
    assert from_png.shapes == [(1, 8, 6)]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not base64 at all!", "base64_invalid"),
        (base64.b64encode(b"GIF89a but truncated").decode(), "image_invalid"),
        (base64.b64encode(b"").decode(), "image_invalid"),
        (12, "string_type"),
    ],
)
def test_corrupt_inputs_name_the_image_index(text: object, kind: str):
    with pytest.raises(InputError) as excinfo:
        images_from_payload(GREY, [png_of(grey_pixels()), text], None)  # type: ignore[list-item]
    assert issue_of(excinfo).loc == ("images", 1)
    assert issue_of(excinfo).type == kind


def test_truncated_png_is_an_input_error():
    data = base64.b64decode(png_of(grey_pixels(), mode="L"))
    with pytest.raises(InputError) as excinfo:
        decode_base64_image(base64.b64encode(data[: len(data) // 2]).decode(), ("images", 0))
    assert issue_of(excinfo).type == "image_invalid"


def test_too_many_pixels_is_refused_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch):
    big = png_of(np.zeros((64, 64), dtype=np.uint8))

    def no_load(self):  # decoding would allocate the pixels: must not happen
        raise AssertionError("decoded an image above the pixel limit")

    monkeypatch.setattr(Image.Image, "load", no_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_load)
    with pytest.raises(InputError) as excinfo:
        decode_base64_image(big, ("images", 0), max_pixels=1000)
    assert issue_of(excinfo).type == "image_too_large"
    assert "64×64" in issue_of(excinfo).msg


def test_arrays_above_the_pixel_limit_are_refused():
    with pytest.raises(InputError) as excinfo:
        images_from_payload(GREY, None, [np.zeros((40, 40), dtype=int).tolist()], max_pixels=1000)
    assert issue_of(excinfo).type == "image_too_large"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ([[0, 256]], "pixel_range"),
        ([[-1, 0]], "pixel_range"),
        ([[0.0, 1.5]], "pixel_range"),
        ([[0, 1], [2]], "array_shape"),
        ([1, 2, 3], "array_shape"),
        ([[["a"]]], "array_type"),
        ([[True, False]], "array_type"),
        ([[[[0]]]], "array_shape"),
        ([[[0]], [[0]]], "array_shape"),  # 2 channels
        ("abc", "list_type"),
    ],
)
def test_bad_arrays_are_refused_with_a_reason(value: object, kind: str):
    with pytest.raises(InputError) as excinfo:
        array_image(value, ("arrays", 2))
    assert issue_of(excinfo).loc == ("arrays", 2)
    assert issue_of(excinfo).type == kind


def test_files_of_uint8_and_float_give_the_same_images():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    a = images_from_array(GREY, pixels).pixels
    b = images_from_array(GREY, pixels.astype(np.float32) / 255.0).pixels
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_png_bytes_are_a_real_png():
    assert encode_png(np.zeros((3, 2, 2))).startswith(b"\x89PNG")


def test_continuous_bernoulli_density_integrates_to_one():
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for logit in (-8.0, -1.0, -1e-4, 0.0, 2e-4, 0.5, 6.0):
        lam = torch.tensor(logit, dtype=torch.float64)
        log_density = (
            x * torch.nn.functional.logsigmoid(lam)
            + (1 - x) * torch.nn.functional.logsigmoid(-lam)
            + continuous_bernoulli_log_norm(lam)
        )
        assert torch.trapezoid(log_density.exp(), x).item() == pytest.approx(1.0, abs=1e-6)
        mean = torch.trapezoid(x * log_density.exp(), x).item()
        assert continuous_bernoulli_mean(lam).item() == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize(("height", "width", "channels", "stages"), [(8, 8, 1, 1), (28, 28, 1, 2), (64, 64, 3, 4)])
def test_architecture_scales_with_the_image(height: int, width: int, channels: int, stages: int):
    config = image_network_config(channels, height, width)
    assert len(config.widths) == stages


def test_16_bit_png_is_scaled_from_65535():
    pixels = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    image = decode_base64_image(base64.b64encode(buffer.getvalue()).decode(), ("images", 0))
    np.testing.assert_allclose(image[0], pixels / 65535.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("value", "message", "kind"),
    [
        ([[0, 1], [None, 3]], "pixel [1, 0] is null; every pixel needs a number", "pixel_null"),
        ([[[0, 1], [2, None]]], "pixel [0, 1, 1] is null; every pixel needs a number", "pixel_null"),
        ([[0, {"v": 1}], [2, 3]], "pixel [0, 1] is {'v': 1}, not a number", "array_type"),
    ],
)
def test_a_null_or_non_number_pixel_is_named_by_its_index(value: object, message: str, kind: str):
    with pytest.raises(InputError) as excinfo:
        array_image(value, ("arrays", 0))
    assert issue_of(excinfo).msg == message
    assert issue_of(excinfo).type == kind
    assert issue_of(excinfo).loc == ("arrays", 0)
