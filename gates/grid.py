"""The Grid Pool Gate's pure parts: the answer a person sends, and the thumbnails the grid shows.

A waiting grid's pending entry carries `items`: [{"index", "name", "image", "full", "caption", ...}].
It is answered by POST /datasete_gate/choose {"token", "keep": [indexes]}: the kept items' indexes
into `items`, each once. Anything else is a 400 and the gate keeps waiting.

Thumbnails are small (GRID_THUMB_SIZE on the longest side), so a page of 64 tiles is a few MB at
most; the full-size image is served by ComfyUI's /view of the item itself. Stdlib, numpy and Pillow.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import numpy as np
from PIL import Image, features

from .constants import GRID_THUMB_SIZE, KIND_GRID, PREVIEW_PREFIX
from .pause import BadAnswer, Pause, register_answer_parser
from .previews import remove_previews

# Lossy WebP keeps a 256 px thumbnail of a photo near 10-20 kB (a PNG is 5-10x that) and keeps alpha.
THUMB_QUALITY = 88


def parse_keep(pause: Pause, body: dict) -> tuple[int, ...]:
    """The indexes a person kept, checked against the items shown: whole numbers, in range, each once."""
    count = len(pause.details.get("items") or ())
    if "keep" not in body:
        raise BadAnswer('a grid gate is answered with "keep": a list of the indexes of the items to keep '
                        "(an empty list keeps none)")
    keep = body["keep"]
    if not isinstance(keep, list):
        raise BadAnswer(f"keep must be a list of item indexes, got {type(keep).__name__}")
    seen: set[int] = set()
    for value in keep:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadAnswer(f"keep must hold whole numbers (item indexes), got {value!r}")
        if not 0 <= value < count:
            raise BadAnswer(f"keep index {value} is out of range 0..{count - 1}" if count
                            else f"keep index {value} is out of range: the grid shows no items")
        if value in seen:
            raise BadAnswer(f"keep index {value} is given twice")
        seen.add(value)
    return tuple(sorted(seen))


register_answer_parser(KIND_GRID, parse_keep)


def thumbnail(frame: np.ndarray, longest: int = GRID_THUMB_SIZE) -> Image.Image:
    """A Pillow image of `frame` ((H,W,3|4) uint8) no larger than `longest` on either side."""
    frame = np.ascontiguousarray(frame)
    image = Image.fromarray(frame, "RGBA" if frame.shape[2] == 4 else "RGB")
    height, width = frame.shape[:2]
    scale = longest / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap: a cheap box reduction first, then a good filter on the small image.
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _thumb_format() -> tuple[str, str, dict]:
    if features.check("webp"):
        return "webp", "WEBP", {"quality": THUMB_QUALITY, "method": 2}
    return "png", "PNG", {"compress_level": 1}


def save_thumbnails(frames, folder: str, longest: int = GRID_THUMB_SIZE) -> list[dict]:
    """Write a thumbnail of each frame into ComfyUI's temp folder; entries as /view expects them."""
    ext, kind, options = _thumb_format()
    stem = f"{PREVIEW_PREFIX}_{secrets.token_hex(8)}_thumb"
    os.makedirs(folder, exist_ok=True)
    entries: list[dict] = []
    try:
        for index, frame in enumerate(frames):
            entry = {"filename": f"{stem}_{index:03d}.{ext}", "subfolder": "", "type": "temp"}
            entries.append(entry)
            thumbnail(frame, longest).save(os.path.join(folder, entry["filename"]), kind, **options)
    except BaseException:
        remove_previews(entries, folder)
        raise
    return entries


def page_items(names: list[str], thumbs: list[dict], fulls: list[dict], captions: list[Any],
               sizes: list[tuple[int, int]]) -> list[dict]:
    """The public `items` of a grid pause."""
    return [{"index": index, "name": name, "image": thumb, "full": full, "caption": caption,
             "width": width, "height": height}
            for index, (name, thumb, full, caption, (width, height))
            in enumerate(zip(names, thumbs, fulls, captions, sizes, strict=True))]
