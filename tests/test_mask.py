"""Painted-mask payloads from POST /datasete_gate/choose: decoding and every way they can be wrong."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from gates.imaging import ImagingError, decode_mask_payload

WIDTH, HEIGHT = 48, 32


def gradient() -> np.ndarray:
    """A (H,W) uint8 ramp, so a transposed, flipped or rescaled decode cannot pass."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    return ((xs * 5 + ys * 3) % 256).astype(np.uint8)


def png_bytes(img: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def as_uint8(mask: np.ndarray) -> np.ndarray:
    return np.round(mask * 255.0).astype(np.uint8)


def test_grayscale_png_without_prefix_is_its_luminance():
    expected = gradient()
    mask = decode_mask_payload(b64(png_bytes(Image.fromarray(expected, "L"))), WIDTH, HEIGHT)
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    np.testing.assert_array_equal(as_uint8(mask), expected)


def test_data_url_prefix_is_accepted():
    expected = gradient()
    payload = "data:image/png;base64," + b64(png_bytes(Image.fromarray(expected, "L")))
    np.testing.assert_array_equal(as_uint8(decode_mask_payload(payload, WIDTH, HEIGHT)), expected)


def test_rgba_uses_alpha_not_colour():
    """A browser canvas exports RGBA: the painted strokes are its alpha; the colour must not leak in."""
    alpha = gradient()
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 255 - alpha, 17, 200  # colour unrelated to the alpha
    rgba[..., 3] = alpha
    payload = "data:image/png;base64," + b64(png_bytes(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(as_uint8(decode_mask_payload(payload, WIDTH, HEIGHT)), alpha)


def test_grayscale_with_alpha_uses_alpha():
    alpha = gradient()
    la = np.stack([np.full_like(alpha, 255), alpha], axis=-1)
    img = Image.fromarray(la, "LA")
    np.testing.assert_array_equal(as_uint8(decode_mask_payload(b64(png_bytes(img)), WIDTH, HEIGHT)), alpha)


def test_rgb_uses_luminance():
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, : WIDTH // 2] = (255, 255, 255)  # white left half
    rgb[:, WIDTH // 2:] = (255, 0, 0)  # pure red right half: luminance 76 (ITU-R 601-2)
    mask = as_uint8(decode_mask_payload(b64(png_bytes(Image.fromarray(rgb, "RGB"))), WIDTH, HEIGHT))
    assert (mask[:, : WIDTH // 2] == 255).all()
    assert (mask[:, WIDTH // 2:] == 76).all()


def test_one_bit_png_is_full_white_or_black():
    bits = Image.fromarray(np.where(gradient() > 127, 255, 0).astype(np.uint8), "L").convert("1")
    mask = as_uint8(decode_mask_payload(b64(png_bytes(bits)), WIDTH, HEIGHT))
    assert set(np.unique(mask).tolist()) == {0, 255}
    np.testing.assert_array_equal(mask == 255, gradient() > 127)


@pytest.mark.parametrize("size", [(WIDTH + 1, HEIGHT), (WIDTH, HEIGHT - 1), (HEIGHT, WIDTH), (1, 1)])
def test_wrong_size_names_both_sizes(size):
    payload = b64(png_bytes(Image.new("L", size, 255)))
    with pytest.raises(ImagingError) as caught:
        decode_mask_payload(payload, WIDTH, HEIGHT)
    message = str(caught.value)
    assert f"{size[0]}x{size[1]}" in message and f"{WIDTH}x{HEIGHT}" in message


def test_a_wrong_size_mask_is_refused_from_its_header_without_decoding_it(monkeypatch):
    """A small PNG can claim a huge canvas; it must be refused by its size before its pixels are decoded."""
    big = png_bytes(Image.new("L", (6000, 6000), 0), optimize=True)
    assert len(big) < 1_000_000

    def no_decoding(self):
        raise AssertionError("the pixels of a wrong-size mask were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImagingError, match="6000x6000"):
        decode_mask_payload(b64(big), WIDTH, HEIGHT)


@pytest.mark.parametrize("payload, words", [
    ("not base64 at all!", "base64"),
    ("QUJD=QUJD", "base64"),  # padding in the middle
    ("data:image/png," + "iVBORw0KGgo=", "base64"),  # a data URL that is not base64
    ("data:image/png;base64", "base64"),  # no comma: no data at all
])
def test_not_base64_is_refused_clearly(payload, words):
    with pytest.raises(ImagingError, match=words):
        decode_mask_payload(payload, WIDTH, HEIGHT)


@pytest.mark.parametrize("payload", [None, "", 5, ["x"], {"png": "x"}, b"iVBOR"])
def test_a_payload_that_is_not_a_string_is_refused(payload):
    with pytest.raises(ImagingError, match="base64 PNG string"):
        decode_mask_payload(payload, WIDTH, HEIGHT)


@pytest.mark.parametrize("fmt", ["JPEG", "GIF", "BMP", "WEBP"])
def test_an_image_that_is_not_png_is_refused(fmt):
    buffer = io.BytesIO()
    Image.new("L", (WIDTH, HEIGHT), 255).save(buffer, format=fmt)
    with pytest.raises(ImagingError, match="not a PNG"):
        decode_mask_payload(b64(buffer.getvalue()), WIDTH, HEIGHT)


def test_base64_of_random_bytes_is_not_a_png():
    with pytest.raises(ImagingError, match="not a PNG"):
        decode_mask_payload(b64(b"hello, this is text"), WIDTH, HEIGHT)


def _noisy_png() -> bytes:
    noise = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    return png_bytes(Image.fromarray(noise, "L"))


@pytest.mark.parametrize("keep", ["signature+header", "half", "all but IEND"])
@pytest.mark.parametrize("truncated_allowed", [False, True])
def test_a_truncated_png_is_refused(keep, truncated_allowed, monkeypatch):
    """Refused even while ImageFile.LOAD_TRUNCATED_IMAGES is on: ComfyUI's node_helpers.pillow turns that
    process-wide flag on while the prompt worker loads an image, and a mask may be decoded at that moment."""
    raw = _noisy_png()
    cut = {"signature+header": 33, "half": len(raw) // 2, "all but IEND": len(raw) - 12}[keep]
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", truncated_allowed)
    with pytest.raises(ImagingError) as caught:
        decode_mask_payload(b64(raw[:cut]), WIDTH, HEIGHT)
    message = str(caught.value)
    assert "mask" in message and ("truncated" in message.lower() or "incomplete" in message.lower())
    assert "object at 0x" not in message  # no Python object reprs in an answer a person reads


def test_a_png_with_a_corrupt_chunk_is_refused():
    raw = bytearray(_noisy_png())
    raw[len(raw) // 2] ^= 0xFF
    with pytest.raises(ImagingError, match="mask"):
        decode_mask_payload(b64(bytes(raw)), WIDTH, HEIGHT)


def test_a_complete_png_still_decodes_while_truncated_images_are_allowed(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    expected = gradient()
    mask = decode_mask_payload(b64(png_bytes(Image.fromarray(expected, "L"))), WIDTH, HEIGHT)
    np.testing.assert_array_equal(as_uint8(mask), expected)
