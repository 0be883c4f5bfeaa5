"""Shared bits of the disk image bus tests: hostile slot ids, folder snapshots, recognisable pictures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

# Every one must be refused by validate_id, and by everything that takes a slot id.
# `{outside}` is replaced by an absolute path inside the test's own tmp folder, so that a
# write through it would show up in the snapshot.
HOSTILE_IDS = [
    "..", ".", "...", "../outside", "..\\outside", "{outside}", "/", "\\", "a/b", "a\\b", "cp1/", "/cp1",
    "a\x00b", "\x00", "a\nb", "a\rb", "a\tb", "\x1b[31m", "a\x7fb", "x" * 65, "café", "日本", "ａ", "a\u200bb",
    "a\u2024b", " cp1", "cp1 ", "c p", "-cp1", "--help", ".cp1", ".staging-new-1-ab-cd-cp1", "C:x", "C:",
    "c:\\x", "CON", "con", "nul.txt", "Aux", "COM1", "lpt9.png", "CONIN$", "cp1.", "a..", "~cp1", "cp1*",
    "cp1?", "cp1:", "cp1|x", "cp1>x", "%2e%2e", "$HOME",
]


def hostile_ids(tmp_path: Path) -> list[str]:
    return [bus_id.replace("{outside}", str(tmp_path / "outside")) for bus_id in HOSTILE_IDS]


def snapshot(root: Path) -> dict:
    """Every path under `root` (links not followed) with its kind, size and modification time."""
    state = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def solid_frames(values: list[int], height: int = 6, width: int = 5, channels: int = 3) -> torch.Tensor:
    """A batch whose frame i is filled with values[i]/255 (alpha, if any, with 255 - value)."""
    batch = torch.empty((len(values), height, width, channels), dtype=torch.float32)
    for index, value in enumerate(values):
        batch[index, ..., :3] = value / 255.0
        if channels == 4:
            batch[index, ..., 3] = (255 - value) / 255.0
    return batch


def solid_mask(value: int, height: int = 6, width: int = 5, frames: int = 1) -> torch.Tensor:
    return torch.full((frames, height, width), value / 255.0, dtype=torch.float32)


def distinct_frames(count: int, height: int = 6, width: int = 5, channels: int = 3) -> torch.Tensor:
    """Frames that differ pixel by pixel, so a swapped or shifted frame cannot pass for another."""
    rng = np.random.default_rng(1234 + count)
    return torch.from_numpy(rng.integers(0, 256, (count, height, width, channels), dtype=np.uint8)).float() / 255.0


def png_bomb(width: int = 15000, height: int = 15000, channels: int = 3, rows_per_block: int = 50) -> bytes:
    """A valid PNG of black pixels that is small on disk and huge decoded (15000x15000 RGB: 660 kB, 675 MB).

    One block of rows is compressed once and repeated: after a full flush deflate starts afresh, so the
    same rows compress to the same bytes. zlib's checksum of n zero bytes is (n mod 65521) << 16 | 1.
    """
    import struct
    import zlib

    assert height % rows_per_block == 0
    row = 1 + width * channels
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(b"\x00" * (row * rows_per_block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    checksum = (row * height % 65521) << 16 | 1
    stream = b"\x78\xda" + piece * (height // rows_per_block) + tail + struct.pack(">I", checksum)
    color = {1: 0, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
            + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def save_image(path, image: torch.Tensor) -> None:
    """Frame 0 of an IMAGE tensor as a PNG, written the way a slot's files are."""
    from gates import imaging

    imaging.write_png(str(path), imaging.image_to_uint8(image)[0])


def save_mask(path, mask: torch.Tensor) -> None:
    from gates import imaging

    imaging.write_png(str(path), imaging.mask_to_uint8(mask)[0])


def slot_folder(base, bus_id: str) -> Path:
    """A slot folder made by hand (as a person or another tool would), empty."""
    from gates import imagebus

    folder = imagebus.bus_dir(base, bus_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
