"""Image and mask tensors to and from PNG.

ComfyUI's IMAGE is a float tensor (batch, height, width, channels) in 0..1 and
its MASK a float tensor (batch, height, width). On disk both are 8-bit PNG; a
mask is one channel where white is 1.0. No ComfyUI import here.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

PREVIEW_COMPRESS_LEVEL = 1
BUS_COMPRESS_LEVEL = 4


class ImagingError(ValueError):
    """A file or payload that is not the image or mask it should be."""


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(B,H,W,C) float in 0..1 -> (B,H,W,C) uint8, rounded so a save/load/save cycle is exact."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ImagingError(f"expected an image tensor (batch, height, width, 1|3|4), got shape {tuple(image.shape)}")
    scaled = image.detach().to("cpu", torch.float32).mul(255.0).clamp_(0.0, 255.0).round_()
    return scaled.to(torch.uint8).numpy()


def mask_to_uint8(mask: torch.Tensor) -> np.ndarray:
    """(B,H,W) or (H,W) float in 0..1 -> (B,H,W) uint8."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ImagingError(f"expected a mask tensor (batch, height, width), got shape {tuple(mask.shape)}")
    scaled = mask.detach().to("cpu", torch.float32).mul(255.0).clamp_(0.0, 255.0).round_()
    return scaled.to(torch.uint8).numpy()


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """(B,H,W,C) uint8 -> float tensor in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def encode_png(pixels: np.ndarray, compress_level: int = BUS_COMPRESS_LEVEL) -> bytes:
    """Lossless PNG of an (H,W), (H,W,1), (H,W,3) or (H,W,4) uint8 array."""
    buffer = io.BytesIO()
    _pil_from_array(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str, pixels: np.ndarray, compress_level: int = BUS_COMPRESS_LEVEL) -> None:
    _pil_from_array(pixels).save(path, format="PNG", compress_level=compress_level)


def _pil_from_array(pixels: np.ndarray) -> Image.Image:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return Image.fromarray(pixels, mode="L")
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return Image.fromarray(pixels, mode="RGB" if pixels.shape[2] == 3 else "RGBA")
    raise ImagingError(f"cannot encode an array of shape {pixels.shape} as PNG")


def read_image_pixels(source) -> np.ndarray:
    """Any image file Pillow reads -> (H,W,3) or (H,W,4) uint8, EXIF orientation applied.

    `source` is a path, bytes or a binary file object. Alpha is kept when present.
    """
    with _open_image(source) as img:
        img = ImageOps.exif_transpose(img)
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            img = img.point(lambda value: value * (1 / 257)).convert("L")
        return np.array(img.convert("RGBA" if has_alpha else "RGB"))


def read_mask_pixels(source) -> np.ndarray:
    """A mask file -> (H,W) uint8: its alpha channel when it has one, else its luminance."""
    with _open_image(source) as img:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            return np.array(img.convert("RGBA").getchannel("A"))
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            img = img.point(lambda value: value * (1 / 257))
        return np.array(img.convert("L"))


def _open_image(source) -> Image.Image:
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "payload"
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        img = Image.open(source)
        img.load()
        return img
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImagingError(f"cannot read image {name}: {exc}") from exc


def save_image_tensor(path, image: torch.Tensor, frame: int = 0,
                      compress_level: int = BUS_COMPRESS_LEVEL) -> None:
    """Write one frame of an IMAGE tensor as PNG (RGB, or RGBA when it has 4 channels)."""
    write_png(os.fspath(path), image_to_uint8(image[frame:frame + 1] if image.ndim == 4 else image)[0],
              compress_level)


def save_mask_tensor(path, mask: torch.Tensor, frame: int = 0,
                     compress_level: int = BUS_COMPRESS_LEVEL) -> None:
    """Write one frame of a MASK tensor as an 8-bit grayscale PNG, white = 1.0."""
    write_png(os.fspath(path), mask_to_uint8(mask)[frame], compress_level)


def load_image_tensor(path) -> torch.Tensor:
    """PNG -> (1,H,W,C) float tensor; C is 4 when the file has alpha, else 3."""
    return uint8_to_image(read_image_pixels(os.fspath(path))[None])


def load_mask_tensor(path, height: int, width: int) -> torch.Tensor:
    """Mask PNG -> (1,H,W) float tensor; zeros when `path` is None. The size must match."""
    if path is None:
        return torch.zeros((1, height, width), dtype=torch.float32)
    pixels = read_mask_pixels(os.fspath(path))
    if pixels.shape != (height, width):
        raise ImagingError(f"mask {os.fspath(path)} is {pixels.shape[1]}x{pixels.shape[0]}, "
                           f"expected {width}x{height}")
    return torch.from_numpy(pixels.copy()).to(torch.float32).div_(255.0)[None]


def decode_mask_payload(payload, width: int, height: int) -> np.ndarray:
    """A base64 PNG (a `data:` URL prefix allowed) -> (H,W) float32 mask in 0..1.

    Alpha is the mask when the PNG has an alpha channel (what a browser canvas
    exports), else luminance. The PNG must be exactly width x height.
    """
    if not isinstance(payload, str) or not payload:
        raise ImagingError(f"mask must be a base64 PNG string, got {type(payload).__name__}")
    text = payload
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise ImagingError(f"mask data URL must be base64 encoded, got header {head[:60]!r}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImagingError(f"mask is not valid base64: {exc}") from exc
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ImagingError("mask is not a PNG (bad signature)")
    # Check size and integrity before decoding: a tiny payload can claim a huge canvas, and
    # ComfyUI turns ImageFile.LOAD_TRUNCATED_IMAGES on process-wide while it loads images, which
    # would let a cut-off upload decode as a silently half-empty mask. verify() ignores that flag.
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            mask_width, mask_height = probe.size
            if (mask_width, mask_height) != (width, height):
                raise ImagingError(f"mask is {mask_width}x{mask_height}, the image is {width}x{height}")
            probe.verify()
    except ImagingError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImagingError(f"mask is far larger than the image ({width}x{height}): {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImagingError(f"mask PNG is truncated or corrupt: {_pil_reason(exc)}") from exc
    pixels = read_mask_pixels(raw)
    return pixels.astype(np.float32) / 255.0


def _pil_reason(exc: BaseException) -> str:
    """Pillow's message without the object repr it puts in some ("<_io.BytesIO object at 0x...>")."""
    if isinstance(exc, UnidentifiedImageError):
        return "incomplete PNG header"
    return str(exc) or type(exc).__name__


def mask_batch(mask: np.ndarray | torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor:
    """One (H,W) or (1,H,W) mask repeated over `batch` frames; zeros when None."""
    if mask is None:
        return torch.zeros((batch, height, width), dtype=torch.float32)
    tensor = torch.as_tensor(mask, dtype=torch.float32)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.shape[0] == batch:
        return tensor.contiguous()
    return tensor[:1].expand(batch, height, width).contiguous()
