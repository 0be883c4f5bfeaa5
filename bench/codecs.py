"""The size/time curve of the lossless PNG encoders and decoders installed here, against
Pillow (what ComfyUI uses) at level 4. Optional ones (opencv-python-headless, pyspng,
imagecodecs, fpng) are measured when installed and listed as missing otherwise."""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
import torch
from PIL import Image

from bench.common import photo_like

SIZE_LIMIT = 1.10  # the issue: files at most 10% larger than Pillow level 4


def contents(side: int) -> dict[str, np.ndarray]:
    """Three kinds of picture a gate sees: a grainy photo, a smooth render and flat artwork."""
    photo = photo_like(side, side, 1, seed=3)[0]
    smooth = torch.nn.functional.avg_pool2d(photo.permute(2, 0, 1)[None], 5, 1, 2)[0].permute(1, 2, 0)
    flat = (smooth * 11).round() / 11
    return {name: (tensor.numpy() * 255).round().astype(np.uint8)
            for name, tensor in (("photo", photo), ("smooth", smooth), ("flat", flat))}


def _best(fn, repeats: int) -> tuple[float, object]:
    result, best = None, float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def _pillow(pixels: np.ndarray, level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _encoders() -> tuple[dict, list[str]]:
    from gates import imaging

    encoders, missing = {}, []
    for level in (1, 2, 3, 4, 6):
        encoders[f"Pillow {level}"] = (lambda pixels, level=level: _pillow(pixels, level))
    if imaging._libdeflate is not None:
        for level in (1, 2, 3, 4, 6):
            def fast(pixels, level=level):
                return imaging._libdeflate.zlib_compress(
                    memoryview(imaging._up_filtered_copy(pixels)).cast("B"), level)
            encoders[f"Up + libdeflate {level}"] = fast
    else:
        missing.append("deflate (libdeflate)")
    try:
        import cv2

        for level in (1, 3, 4):
            encoders[f"OpenCV {level}"] = (lambda pixels, level=level: cv2.imencode(
                ".png", pixels[..., ::-1].copy(), [cv2.IMWRITE_PNG_COMPRESSION, level])[1])
    except ImportError:
        missing.append("opencv-python-headless")
    try:
        import fpng

        encoders["fpng"] = lambda pixels: fpng.from_ndarray(pixels)
    except ImportError:
        missing.append("fpng")
    try:
        import imagecodecs

        for level in (1, 4):
            encoders[f"imagecodecs png {level}"] = (lambda pixels, level=level: imagecodecs.png_encode(
                pixels, level=level))
    except ImportError:
        missing.append("imagecodecs")
    return encoders, missing


def _decoders(pillow_file: bytes, fast_file: bytes | None) -> dict:
    from gates import imaging

    decoders = {"Pillow (Pillow file)": lambda: np.asarray(Image.open(io.BytesIO(pillow_file)).convert("RGB"))}
    if fast_file is not None:
        decoders["Pillow (our file)"] = lambda: np.asarray(Image.open(io.BytesIO(fast_file)).convert("RGB"))
        decoders["numpy + libdeflate (our file)"] = lambda: imaging._fast_png_decode(fast_file)
    try:
        import cv2

        decoders["OpenCV (Pillow file)"] = lambda: cv2.imdecode(np.frombuffer(pillow_file, np.uint8),
                                                                cv2.IMREAD_COLOR_RGB)
    except (ImportError, AttributeError):
        pass
    try:
        import pyspng

        decoders["pyspng (Pillow file)"] = lambda: pyspng.load(pillow_file)
    except ImportError:
        pass
    return decoders


def run(quick: bool) -> dict:
    from gates import imaging

    side = 64 if quick else 1024
    repeats = 1 if quick else 3
    pictures = contents(side)
    encoders, missing = _encoders()
    curve = {}
    for name, encode in encoders.items():
        time_ratios, size_ratios = [], []
        for pixels in pictures.values():
            # Pillow 4 right before each candidate, so both see the same load.
            reference_time, reference = _best(lambda pixels=pixels: _pillow(pixels, 4), repeats)
            took, encoded = _best(lambda pixels=pixels, encode=encode: encode(pixels), repeats)
            time_ratios.append(took / reference_time)
            size_ratios.append(len(encoded) / len(reference))
        curve[name] = {"time_vs_pillow4": statistics.median(time_ratios),
                       "size_vs_pillow4_max": max(size_ratios),
                       "size_vs_pillow4": dict(zip(pictures, size_ratios, strict=True))}
    chosen = None
    for level in (1, 2, 3, 4, 6):
        entry = curve.get(f"Up + libdeflate {level}")
        if entry and entry["size_vs_pillow4_max"] <= SIZE_LIMIT:
            chosen = level
            break
    photo = pictures["photo"]
    pillow_file = _pillow(photo, 4)
    fast_file = imaging.encode_png(photo) if imaging.png_backend() == "libdeflate" else None
    decode = {}
    for name, fn in _decoders(pillow_file, fast_file).items():
        took, pixels = _best(fn, repeats)
        decode[name] = {"ms": took * 1000, "exact": bool(np.array_equal(np.asarray(pixels), photo))}
    return {"side": side, "curve": curve, "missing": missing, "chosen_bus_level": chosen,
            "configured_bus_level": imaging.LIBDEFLATE_LEVELS[imaging.BUS_COMPRESS_LEVEL],
            "configured_preview_level": imaging.LIBDEFLATE_LEVELS[imaging.PREVIEW_COMPRESS_LEVEL],
            "decode": decode}
