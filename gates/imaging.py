"""Image and mask tensors to and from PNG.

ComfyUI's IMAGE is a float tensor (batch, height, width, channels) in 0..1 and
its MASK a float tensor (batch, height, width). On disk both are 8-bit PNG; a
mask is one channel where white is 1.0. No ComfyUI import here.

Three PNG backends, all giving bit-identical pixels:
- "libdeflate" (the default: `deflate` is in requirements.txt): the rows
  are Up-filtered with numpy and compressed by libdeflate in one call. At the
  levels below it writes PNGs 3 to 7 times faster than Pillow, within 10% of
  Pillow's size at level 4 (see README, Performance). Our own files are read back
  by a numpy fast path; anything else goes to Pillow.
- "stdlib" (where `deflate` has no wheel and did not install): previews (levels 1-2) are Up-filtered with numpy
  and compressed by Python's own zlib at level 2, 2.5x faster than Pillow level 1
  and smaller; the bus's level 4 and all reading go to Pillow, because zlib alone
  cannot stay within 10% of Pillow 4's size at a better speed.
- "pillow": everything through Pillow, as ComfyUI does.
PNG_BACKEND (or the DATASETE_GATES_PNG_BACKEND environment variable) is "auto"
(the best available), "stdlib" (as if `deflate` were missing) or "pillow".

Every decode path applies one size rule before it allocates anything: an image may
not declare more pixels than Pillow's decompression-bomb limit lets Pillow decode
(see `oversize`), whichever backend reads it.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

try:  # the fast PNG backend: required, but a platform without a wheel must still work
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - exercised by forcing the other backends, and in a subprocess
    _libdeflate = None

# Pillow zlib levels, as ComfyUI uses them: 1 for PreviewImage, 4 for SaveImage.
PREVIEW_COMPRESS_LEVEL = 1
BUS_COMPRESS_LEVEL = 4

# The libdeflate level used in place of each Pillow level. Chosen from the measured
# size/time curve (python -m bench): libdeflate 1 already writes smaller files than
# Pillow 1, and libdeflate 2 is the lowest level whose files stay within 10% of
# Pillow 4 on grainy, smooth, flat and screenshot content; higher levels cost
# 30-100% more time for 1-3% smaller files.
LIBDEFLATE_LEVELS = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 4, 7: 6, 8: 9, 9: 12}

# Python's zlib level used in place of each Pillow level up to 2 by the "stdlib" backend: at
# level 2 it writes files smaller than Pillow level 1 on every kind of picture measured.
STDLIB_ZLIB_LEVELS = {0: 0, 1: 2, 2: 2}

PNG_BACKEND = os.environ.get("DATASETE_GATES_PNG_BACKEND", "auto")  # "auto", "stdlib" or "pillow"

# Rows of float pixels converted per step: small enough to stay in cache, so
# converting a frame never allocates a float copy of it.
_CONVERT_CHUNK_FLOATS = 1 << 17

if TYPE_CHECKING:  # torch is imported where a tensor is made, so the codecs load without it
    import torch

_FLOAT_255 = np.float32(255.0)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG color type (gray, RGB, RGBA)
_CHANNELS = {value: key for key, value in _COLOR_TYPES.items()}
# Chunks that do not change the pixels Pillow returns; any other sends a file to Pillow.
_HARMLESS_CHUNKS = {b"pHYs", b"sRGB", b"gAMA", b"cHRM", b"iCCP", b"sBIT", b"tIME", b"bKGD"}
_MAX_IDAT = (1 << 31) - 1

# uint8 buffers made by image_to_uint8 / mask_to_uint8: each row has one spare
# byte in front, where a PNG filter byte goes, so the encoder can filter the
# frame in place instead of copying it.
# The owner is a flat array with one spare byte at the end, so every frame's rows can be
# handed out as one buffer that starts after its first filter byte. Keyed by id() (arrays
# are unhashable); the weak reference's callback drops the key.
_PADDED_OWNERS: dict[int, tuple[weakref.ref, tuple[int, int, int]]] = {}


def _new_padded(batch: int, height: int, row: int) -> np.ndarray:
    """A (batch, height, row) uint8 array whose memory is a registered flat owner."""
    flat = np.empty(batch * height * row + 1, np.uint8)
    key = id(flat)
    _PADDED_OWNERS[key] = (weakref.ref(flat, lambda _ref, key=key: _PADDED_OWNERS.pop(key, None)),
                           (batch, height, row))
    return flat[:-1].reshape(batch, height, row)


def _padded_layout(owner) -> tuple[int, int, int] | None:
    entry = _PADDED_OWNERS.get(id(owner))
    if entry is None or entry[0]() is not owner:
        return None
    return entry[1]


class ImagingError(ValueError):
    """A file or payload that is not the image or mask it should be."""


class ImageTooLarge(ImagingError):
    """An image that declares more pixels than the decompression-bomb limit allows; refused before decoding."""


# --- the size rule -------------------------------------------------------------------------

def pixel_limit() -> int | None:
    """The most pixels any decode may produce: what Pillow still decodes, twice Image.MAX_IMAGE_PIXELS.

    Read at every call, so raising Pillow's limit (the knob ComfyUI users already know) raises
    ours. None when Pillow's limit is switched off.
    """
    maximum = Image.MAX_IMAGE_PIXELS
    return None if maximum is None else 2 * int(maximum)


def oversize(width: int, height: int, frames: int = 1) -> str | None:
    """Why `frames` images of width x height may not be decoded, or None when they may.

    The one rule of every decode path (our own PNG reader, Pillow, a mask payload, a slot's
    manifest and its frames together): a small file can declare a huge canvas (a 656 kB PNG
    can declare 15000x15000, 675 MB of pixels), so the declared size is checked first.
    """
    limit = pixel_limit()
    pixels = int(width) * int(height) * int(frames)
    if limit is None or pixels <= limit:
        return None
    size = f"{width}x{height}" + (f" x {frames} frames" if frames != 1 else "")
    return (f"declares {size} = {pixels:,} pixels, over the limit of {limit:,} "
            "(Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)")


def check_size(width: int, height: int, what: str, frames: int = 1) -> None:
    """Raise ImageTooLarge naming `what` and its declared size when `oversize` refuses it."""
    reason = oversize(width, height, frames)
    if reason is not None:
        raise ImageTooLarge(f"{what} {reason}")


def png_size(data) -> tuple[int, int] | None:
    """(width, height) an in-memory PNG declares in its IHDR, or None when it does not start like a PNG."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None
    head = bytes(memoryview(data)[:24])
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack_from(">II", head, 16)


def declared_size(source, what: str = "the image") -> tuple[int, int] | None:
    """(width, height) that `source` (bytes, a path or a binary file) declares, read from its header only.

    PNG headers are read here; other formats by Pillow's lazy open, which reads no pixels.
    Raises ImageTooLarge for a size over the limit; None when no image header can be read
    (the decoder then says what is wrong).
    """
    size = png_size(_head(source))
    if size is None:
        try:
            with _pillow_open(source, what) as img:
                size = img.size
        except ImageTooLarge:
            raise
        except (ImagingError, OSError):
            return None
    check_size(*size, what)
    return size


def _head(source) -> bytes:
    """The first 24 bytes of a source, without moving a file object's position."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(memoryview(source)[:24])
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                return handle.read(24)
        except OSError:
            return b""  # the decoder reports a missing or unreadable file
    if hasattr(source, "read") and hasattr(source, "seek"):
        start = source.tell()
        try:
            return source.read(24)
        finally:
            source.seek(start)
    return b""


def _check_png_header(source, what: str) -> None:
    """The size rule for a PNG, from its header, before any backend decodes it (other formats: _pillow_open)."""
    size = png_size(_head(source))
    if size is not None:
        check_size(*size, what)


def _source_name(source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "the image"


def png_backend() -> str:
    """The backend in use: "libdeflate" when installed and not overridden, else "stdlib" or "pillow"."""
    if PNG_BACKEND == "pillow":
        return "pillow"
    if _libdeflate is None or PNG_BACKEND == "stdlib":
        return "stdlib"
    return "libdeflate"


def _compressor(compress_level: int):
    """(zlib-compatible compress function, its level) for our own PNG writer, or None for Pillow."""
    backend = png_backend()
    if backend == "libdeflate":
        return _libdeflate.zlib_compress, LIBDEFLATE_LEVELS.get(int(compress_level), 2)
    if backend == "stdlib" and int(compress_level) in STDLIB_ZLIB_LEVELS:
        return zlib.compress, STDLIB_ZLIB_LEVELS[int(compress_level)]
    return None


# --- tensors <-> uint8 ---------------------------------------------------------------------

def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(B,H,W,C) float in 0..1 -> (B,H,W,C) uint8, rounded so a save/load/save cycle is exact."""
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ImagingError(f"expected an image tensor (batch, height, width, 1|3|4), got shape {tuple(image.shape)}")
    return _float_to_padded_uint8(image)


def mask_to_uint8(mask: torch.Tensor) -> np.ndarray:
    """(B,H,W) or (H,W) float in 0..1 -> (B,H,W) uint8."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ImagingError(f"expected a mask tensor (batch, height, width), got shape {tuple(mask.shape)}")
    return _float_to_padded_uint8(mask.unsqueeze(-1))[..., 0]


def _float_to_padded_uint8(source: torch.Tensor) -> np.ndarray:
    """(B,H,W,C) float -> uint8 view into a (B,H,1+W*C) buffer, converted a few rows at a time.

    Same arithmetic as x.mul(255).clamp(0, 255).round() in float32 (round half to
    even), without the float copy of the whole batch that it would allocate.
    """
    import torch

    batch, height, width, channels = (int(n) for n in source.shape)
    row = width * channels
    padded = _new_padded(batch, height, 1 + row)
    padded[:, :, 0] = _FILTER_UP
    step = max(1, _CONVERT_CHUNK_FLOATS // max(1, row))
    scratch = np.empty((min(step, height), row), np.float32)
    source = source.detach()
    direct = source.device.type == "cpu" and source.dtype == torch.float32
    with np.errstate(invalid="ignore"):  # NaN pixels become 0, as torch's cast makes them
        for index in range(batch):
            frame = source[index]
            for top in range(0, height, step):
                rows = frame[top:top + step]
                count = int(rows.shape[0])
                if not direct:
                    rows = rows.to("cpu", torch.float32)
                values = rows.numpy().reshape(count, row)
                work = scratch[:count]
                np.multiply(values, 255.0, out=work)
                np.clip(work, 0.0, 255.0, out=work)
                np.rint(work, out=work)
                padded[index, top:top + count, 1:] = work
    return padded[:, :, 1:].reshape(batch, height, width, channels)


def uint8_to_image(frames: np.ndarray) -> torch.Tensor:
    """(B,H,W,C) (or any shape) uint8 -> float tensor in 0..1: x / 255 in float32, as ComfyUI's LoadImage."""
    import torch

    out = np.empty(frames.shape, np.float32)
    np.divide(frames, _FLOAT_255, out=out)  # one pass; a strided (padded) source needs no copy first
    return torch.from_numpy(out)


# --- encoding ------------------------------------------------------------------------------

def encode_png(pixels: np.ndarray, compress_level: int = BUS_COMPRESS_LEVEL) -> bytes:
    """Lossless PNG of an (H,W), (H,W,1), (H,W,3) or (H,W,4) uint8 array."""
    compressor = _compressor(compress_level)
    if compressor is not None:
        return b"".join(_fast_png_parts(pixels, *compressor))
    buffer = io.BytesIO()
    _pil_from_array(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def write_png(path: str, pixels: np.ndarray, compress_level: int = BUS_COMPRESS_LEVEL) -> None:
    """Write `pixels` as a PNG file at `path` (not atomic: the bus writes into a staging folder).

    Not safe to call from two threads on the same array at once: an array made by
    image_to_uint8 or mask_to_uint8 is filtered in place while it is compressed
    (and restored before this returns), which saves a copy of the frame.
    """
    compressor = _compressor(compress_level)
    if compressor is not None:
        parts = _fast_png_parts(pixels, *compressor)
        with open(path, "wb") as handle:
            for part in parts:
                handle.write(part)
        return
    _pil_from_array(pixels).save(path, format="PNG", compress_level=compress_level)


def write_pngs(items, compress_level: int = BUS_COMPRESS_LEVEL, workers: int = 2) -> None:
    """Write several (path, pixels) PNGs, up to `workers` at once: both encoders release the GIL.

    Each file goes through write_png, so whatever replaces write_png (tests do) sees every file.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for path, pixels in items:
            write_png(path, pixels, compress_level)
        return
    # Largest first, so the small mask never waits behind the big frame on one worker. A pool per call:
    # keeping one alive between publishes measured no faster (python -m bench --only fastpaths).
    items.sort(key=lambda item: -int(np.asarray(item[1]).size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datasete-png") as pool:
        futures = [pool.submit(write_png, path, pixels, compress_level) for path, pixels in items]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:  # on a failure, start no more files; leaving the pool waits for the rest
                future.cancel()


def _fast_png_parts(pixels: np.ndarray, compress, level: int) -> list:
    """The pieces of a PNG file: numpy's Up filter on every row, then `compress` (zlib format)."""
    frame = _as_frame(pixels)
    height, width, channels = frame.shape
    if height == 0 or width == 0:
        raise ImagingError(f"cannot encode an empty image of shape {pixels.shape} as PNG")
    rows = _padded_rows(frame)
    if rows is not None:  # our own buffer: Up-filter in place, compress, undo
        firsts = _up_filter_in_place(rows)
        try:
            data = compress(memoryview(rows).cast("B"), level)
        finally:
            _up_unfilter_in_place(rows, firsts)
    else:
        data = compress(memoryview(_up_filtered_copy(frame)).cast("B"), level)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    parts = [_PNG_SIGNATURE, _chunk(b"IHDR", header)]
    view = memoryview(data)
    for start in range(0, max(1, len(view)), _MAX_IDAT):
        piece = view[start:start + _MAX_IDAT]
        crc = _crc32(piece, _crc32(b"IDAT"))
        parts += [struct.pack(">I", len(piece)) + b"IDAT", piece, struct.pack(">I", crc)]
    parts.append(_chunk(b"IEND", b""))
    return parts


def _as_frame(pixels: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,C) uint8 -> (H,W,C) with C in 1, 3, 4 (a view where possible)."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise ImagingError(f"cannot encode {type(pixels).__name__} {getattr(pixels, 'dtype', '')} as PNG: "
                           "expected a uint8 array")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise ImagingError(f"cannot encode an array of shape {pixels.shape} as PNG")
    return pixels


def _padded_rows(frame: np.ndarray) -> np.ndarray | None:
    """The (H, 1+W*C) rows behind `frame` when it is one whole frame of our own padded buffer."""
    found = _padded_frame(frame)
    return None if found is None else found[0]


def _padded_frame(frame: np.ndarray):
    """(rows, buffer from the frame's first pixel to one byte past its last row) or None."""
    owner = frame.base
    layout = None if owner is None else _padded_layout(owner)
    if layout is None or not owner.flags.writeable:
        return None
    batch, owner_height, owner_row = layout
    height, width, channels = frame.shape
    if (owner_height, owner_row) != (height, 1 + width * channels):
        return None
    if frame.strides[:2] != (owner_row, channels) or (channels > 1 and frame.strides[2] != 1):
        return None
    offset = frame.__array_interface__["data"][0] - owner.__array_interface__["data"][0] - 1
    frame_bytes = owner_height * owner_row
    if offset < 0 or offset % frame_bytes or offset // frame_bytes >= batch:
        return None
    rows = owner[offset:offset + frame_bytes].reshape(owner_height, owner_row)
    return rows, memoryview(owner)[offset + 1:offset + frame_bytes + 1]


def _up_filter_in_place(rows: np.ndarray):
    """PNG Up filter on (H, 1+W*C) rows in place; returns what _up_unfilter_in_place needs to undo it.

    Row r becomes row r minus row r-1. Done row by row that is H numpy calls; instead the
    rows are cut into about sqrt(H) blocks and step j handles row j of every block in one
    call, keeping the first and last original row of each block aside (a few rows).
    """
    rows[:, 0] = _FILTER_UP
    pixels = rows[:, 1:]
    height = pixels.shape[0]
    step = max(8, int(height ** 0.5))
    blocks = height // step
    if blocks < 2:
        for index in range(height - 1, 0, -1):
            np.subtract(pixels[index], pixels[index - 1], out=pixels[index])
        return None
    main = blocks * step
    for index in range(height - 1, main - 1, -1):  # the tail first: it needs row main-1 unfiltered
        np.subtract(pixels[index], pixels[index - 1], out=pixels[index])
    grid = pixels[:main].reshape(blocks, step, -1)
    firsts = grid[:, 0].copy()
    lasts = grid[:, step - 1].copy()
    for offset in range(step - 1, 0, -1):
        np.subtract(grid[:, offset], grid[:, offset - 1], out=grid[:, offset])
    np.subtract(grid[1:, 0], lasts[:-1], out=grid[1:, 0])
    return firsts


def _up_unfilter_in_place(rows: np.ndarray, firsts=None) -> None:
    """Undo the Up filter (a running sum down each column), with the block starts kept aside."""
    pixels = rows[:, 1:]
    height = pixels.shape[0]
    if firsts is None:
        for index in range(1, height):
            np.add(pixels[index], pixels[index - 1], out=pixels[index])
        return
    blocks = firsts.shape[0]
    step = max(8, int(height ** 0.5))
    main = blocks * step
    grid = pixels[:main].reshape(blocks, step, -1)
    grid[:, 0] = firsts
    for offset in range(1, step):
        np.add(grid[:, offset], grid[:, offset - 1], out=grid[:, offset])
    for index in range(main, height):
        np.add(pixels[index], pixels[index - 1], out=pixels[index])


def _up_filtered_copy(frame: np.ndarray) -> np.ndarray:
    height, width, channels = frame.shape
    source = frame.reshape(height, width * channels)
    rows = np.empty((height, 1 + width * channels), np.uint8)
    rows[:, 0] = _FILTER_UP
    rows[0, 1:] = source[0]
    np.subtract(source[1:], source[:-1], out=rows[1:, 1:])
    return rows


def _crc32(data, start: int = 0) -> int:
    if _libdeflate is not None:
        return _libdeflate.crc32(data, start)
    return zlib.crc32(data, start)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", _crc32(payload, _crc32(kind)))


def _pil_from_array(pixels: np.ndarray) -> Image.Image:
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ImagingError(f"cannot encode an array of shape {pixels.shape} as PNG")
    mode = "L" if pixels.ndim == 2 else ("RGB" if pixels.shape[2] == 3 else "RGBA")
    found = _padded_frame(pixels if pixels.ndim == 3 else pixels[:, :, None])
    if found is not None:
        # Our padded buffer: hand Pillow the rows with their stride instead of a packed copy.
        rows, data = found
        height, width = pixels.shape[:2]
        return Image.frombuffer(mode, (width, height), data, "raw", mode, rows.shape[1], 1)
    return Image.fromarray(pixels, mode=mode)


# --- decoding ------------------------------------------------------------------------------

def _fast_png_decode(source, what: str = "the image") -> np.ndarray | None:
    """(H,W,C) uint8 of a plain 8-bit PNG whose rows use filters None, Sub or Up; else None.

    Covers the files this pack writes. Anything else, and anything damaged, is
    left to Pillow (None), which also gives the error message for a bad file. A
    size over the limit is ImageTooLarge, raised before anything is inflated.
    """
    if png_backend() != "libdeflate" or not isinstance(source, (bytes, bytearray, memoryview)):
        return None
    data = memoryview(source).cast("B")
    if len(data) < 45 or data[:8] != _PNG_SIGNATURE:
        return None
    position, header, idat = 8, None, []
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            return None
        payload = data[position + 8:end - 4]
        if _crc32(payload, _crc32(kind)) != struct.unpack_from(">I", data, end - 4)[0]:
            return None
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload) if length == 13 else None
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
        elif kind not in _HARMLESS_CHUNKS:
            return None
        position = end
    else:
        return None
    if header is None or not idat:
        return None
    width, height, depth, color, compression, filtering, interlace = header
    if depth != 8 or color not in _CHANNELS or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if width == 0 or height == 0:
        return None
    check_size(width, height, what)  # before libdeflate allocates height * (1 + row) bytes
    channels = _CHANNELS[color]
    row = width * channels
    expected = height * (1 + row)
    try:
        raw = _libdeflate.zlib_decompress(idat[0] if len(idat) == 1 else b"".join(idat), expected)
    except (_libdeflate.DeflateError, ValueError, MemoryError):
        return None
    if len(raw) != expected:
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + row)
    filters = rows[:, 0]
    pixels = rows[:, 1:]
    if not _unfilter(pixels, filters, channels):
        return None
    return pixels.reshape(height, width, channels)


def _unfilter(pixels: np.ndarray, filters: np.ndarray, channels: int) -> bool:
    kinds = set(np.unique(filters).tolist())
    if not kinds <= {0, 1, 2}:
        return False  # Average and Paeth are sequential per pixel: Pillow's C code is faster
    if kinds == {0}:
        return True
    add = np.add
    for index in range(pixels.shape[0]):
        kind = filters[index]
        if kind == 2:
            if index:
                add(pixels[index], pixels[index - 1], out=pixels[index])
        elif kind == 1:
            line = pixels[index].reshape(-1, channels)
            np.cumsum(line, axis=0, dtype=np.uint8, out=line)
    return True


def read_image_pixels(source, name: str | None = None) -> np.ndarray:
    """Any image file Pillow reads -> (H,W,3) or (H,W,4) uint8, EXIF orientation applied.

    `source` is a path, bytes or a binary file object; `name` is what errors call it
    (default: the path, or "the image"). Alpha is kept when present. A declared size
    over the limit (see `oversize`) is ImageTooLarge, before any pixel is decoded.
    """
    what = _source_name(source, name)
    _check_png_header(source, what)
    fast = _fast_png_decode(source, what)
    if fast is not None:
        if fast.shape[2] == 1:
            return np.repeat(fast, 3, axis=2)  # gray -> RGB, as Pillow's convert("RGB")
        return fast
    with _open_image(source, what) as img:
        img = ImageOps.exif_transpose(img)
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            img = img.point(lambda value: value * (1 / 257)).convert("L")
        return np.array(img.convert("RGBA" if has_alpha else "RGB"))


def read_mask_pixels(source, name: str | None = None) -> np.ndarray:
    """A mask file -> (H,W) uint8: its alpha channel when it has one, else its luminance. Sizes as read_image_pixels."""
    what = _source_name(source, name)
    _check_png_header(source, what)
    fast = _fast_png_decode(source, what)
    if fast is not None and fast.shape[2] in (1, 4):
        return fast[:, :, 0] if fast.shape[2] == 1 else fast[:, :, 3]
    with _open_image(source, what) as img:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            return np.array(img.convert("RGBA").getchannel("A"))
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            img = img.point(lambda value: value * (1 / 257))
        return np.array(img.convert("L"))


def _pillow_open(source, what: str) -> Image.Image:
    """Image.open (header only), with Pillow's own bomb refusal and errors as ImagingError naming `what`."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(source)
        img = Image.open(source)  # between its limit and twice it Pillow only warns, as in LoadImage
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{what} is over Pillow's decompression-bomb limit: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImagingError(f"cannot read image {_payload(what)}: {exc}") from exc
    check_size(*img.size, what)  # the same rule, should Pillow's own check ever differ
    return img


def _payload(what: str) -> str:
    return "payload" if what == "the image" else what


def _open_image(source, what: str) -> Image.Image:
    img = _pillow_open(source, what)
    try:
        img.load()
        return img
    except (OSError, SyntaxError, ValueError) as exc:
        img.close()
        raise ImagingError(f"cannot read image {_payload(what)}: {exc}") from exc


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
    if not raw.startswith(_PNG_SIGNATURE):
        raise ImagingError("mask is not a PNG (bad signature)")
    _check_mask_png(raw, width, height)
    pixels = read_mask_pixels(raw, "mask")
    if pixels.shape != (height, width):
        raise ImagingError(f"mask is {pixels.shape[1]}x{pixels.shape[0]}, the image is {width}x{height}")
    return pixels.astype(np.float32) / 255.0


def _check_mask_png(raw: bytes, width: int, height: int) -> None:
    """Refuse a mask PNG by its header size, then by PNG verify(), before any pixel is decoded.

    A tiny payload can claim a huge canvas, and ComfyUI turns ImageFile.LOAD_TRUNCATED_IMAGES on
    process-wide while it loads images, which would let a cut-off upload decode as a silently
    half-empty mask. verify() checks every chunk's CRC and the IEND whatever that flag says.
    """
    declared = png_size(raw)
    if declared is not None:
        check_size(*declared, "mask")
        if declared != (width, height):
            raise ImagingError(f"mask is {declared[0]}x{declared[1]}, the image is {width}x{height}")
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            if probe.size != (width, height):
                raise ImagingError(f"mask is {probe.size[0]}x{probe.size[1]}, the image is {width}x{height}")
            probe.verify()
    except ImagingError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"mask is over Pillow's decompression-bomb limit (expected {width}x{height}): "
                            f"{exc}") from exc
    except Image.UnidentifiedImageError as exc:  # its message holds a "<_io.BytesIO object at 0x...>" repr
        raise ImagingError("mask PNG is truncated or corrupt: incomplete PNG header") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImagingError(f"mask PNG is truncated or corrupt: {exc or type(exc).__name__}") from exc


def mask_batch(mask: np.ndarray | torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor:
    """One (H,W) or (1,H,W) mask repeated over `batch` frames; zeros when None."""
    import torch

    if mask is None:
        return torch.zeros((batch, height, width), dtype=torch.float32)
    tensor = torch.as_tensor(mask, dtype=torch.float32)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.shape[0] == batch:
        return tensor.contiguous()
    return tensor[:1].expand(batch, height, width).contiguous()
