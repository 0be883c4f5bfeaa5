"""Shared by the loader and Text Gate tests: a 30-image dataset (ComfyUI itself is faked in comfy_fakes).

The dataset has mixed sizes and formats (png with and without alpha, jpg with an EXIF rotation,
webp, gif with a transparent colour, bmp, tiff), names that only sort right naturally, captions
with CRLF, a BOM, unicode and a .caption fallback, and one corrupt file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CORRUPT_INDEX = 17  # the dataset's one unreadable picture


@dataclass(frozen=True)
class Picture:
    name: str            # file name
    size: tuple          # (width, height) as loaded (after the EXIF rotation)
    colour: tuple        # (r, g, b) of its pixels as loaded
    alpha: int | None    # its alpha where it has one
    caption: str         # the caption the loader must give
    corrupt: bool = False


def _colour(index: int) -> tuple[int, int, int]:
    return (40 + index * 7) % 256, (200 - index * 5) % 256, (90 + index * 11) % 256


def make_dataset(folder: Path, count: int = 30) -> list[Picture]:
    """`count` pictures named 1..count (so 2 sorts before 10 only naturally), in natural order."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = []
    formats = ["png", "jpg", "webp", "png-alpha", "gif", "bmp", "tiff"]
    for index in range(count):
        number = index + 1
        kind = formats[index % len(formats)]
        width, height = 24 + (index % 5) * 8, 16 + (index % 3) * 6
        colour = _colour(index)
        alpha = None
        caption = ""
        if index == CORRUPT_INDEX:
            name = f"{number}.png"
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
            pictures.append(Picture(name, (0, 0), colour, None, "", corrupt=True))
            continue
        if kind == "png":
            name = f"{number}.png"
            Image.new("RGB", (width, height), colour).save(folder / name)
        elif kind == "jpg":
            name = f"{number}.jpg"
            # Stored sideways with EXIF orientation 6 (rotate 90 clockwise to view): loads as width x height.
            stored = Image.new("RGB", (height, width), colour)
            exif = Image.Exif()
            exif[0x0112] = 6
            stored.save(folder / name, quality=100, subsampling=0, exif=exif)
        elif kind == "webp":
            name = f"{number}.webp"
            Image.new("RGB", (width, height), colour).save(folder / name, lossless=True)
        elif kind == "png-alpha":
            name = f"{number}.png"
            alpha = 64
            Image.new("RGBA", (width, height), colour + (alpha,)).save(folder / name)
        elif kind == "gif":
            name = f"{number}.gif"
            palette = Image.new("P", (width, height), 1)
            palette.putpalette([0, 0, 0, *colour] + [0, 0, 0] * 254)
            palette.info["transparency"] = 0
            palette.paste(0, (0, 0, 4, 4))  # a transparent corner
            palette.save(folder / name, transparency=0)
        elif kind == "bmp":
            name = f"{number}.bmp"
            Image.new("RGB", (width, height), colour).save(folder / name)
        else:
            name = f"{number}.tiff"
            Image.new("RGB", (width, height), colour).save(folder / name)
        stem = Path(name).stem
        if index % 6 == 0:
            caption = f"photo {number}, a cat"
            (folder / f"{stem}.txt").write_bytes(caption.encode() + b"\r\n")        # CRLF ending
        elif index % 6 == 1:
            caption = f"猫 {number} — مرحبا 🐈‍⬛"
            (folder / f"{stem}.txt").write_bytes(b"\xef\xbb\xbf" + caption.encode() + b"\n")  # BOM, unicode
        elif index % 6 == 2:
            caption = f"line one {number}\r\nline two\n"                               # inner CRLF kept
            (folder / f"{stem}.txt").write_bytes(caption.encode() + b"\n")
        elif index % 6 == 3:
            caption = f"from .caption {number}"
            (folder / f"{stem}.caption").write_bytes(caption.encode())
        elif index % 6 == 4:
            caption = f"  spaced {number}  "                                            # never trimmed
            (folder / f"{stem}.txt").write_bytes(caption.encode())
        pictures.append(Picture(name, (width, height), colour, alpha, caption))
    (folder / ".hidden.png").write_bytes(b"")            # hidden: never listed
    (folder / "notes.md").write_text("not a picture")    # not a picture: never listed
    return pictures


def mtime_settle(folder: Path) -> None:
    """Age the folder's mtime past the listing cache's window (as between two real runs)."""
    old = os.stat(folder).st_mtime_ns - 5_000_000_000
    os.utime(folder, ns=(old, old))


def pixels(tensor) -> np.ndarray:
    """An IMAGE (1,H,W,3) float tensor as (H,W,3) uint8."""
    return np.round(tensor[0].numpy() * 255).astype(np.uint8)


# --- ComfyUI, faked for run() ------------------------------------------------------------------------
