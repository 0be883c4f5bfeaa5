"""Preview files of a waiting gate: written to ComfyUI's temp folder, served by its /view route.

Every gate kind shows its frames this way, and removes them when the pause ends.
"""

from __future__ import annotations

import os
import secrets

import numpy as np

from . import imaging
from .constants import PREVIEW_PREFIX


def save_previews(frames: np.ndarray, folder: str) -> list[dict]:
    """Write each uint8 frame as a PNG in ComfyUI's temp folder; entries as /view expects them."""
    stem = f"{PREVIEW_PREFIX}_{secrets.token_hex(8)}"
    images = []
    os.makedirs(folder, exist_ok=True)  # temp/ can be deleted while ComfyUI runs; its savers recreate it too
    try:
        for index in range(len(frames)):
            images.append({"filename": f"{stem}_{index:03d}.png", "subfolder": "", "type": "temp"})
        # The frames of a batch are encoded two at a time (the encoders release the GIL).
        imaging.write_pngs([(os.path.join(folder, entry["filename"]), frame)
                            for entry, frame in zip(images, frames, strict=True)], imaging.PREVIEW_COMPRESS_LEVEL)
    except BaseException:
        remove_previews(images, folder)  # a failed run leaves no half set of previews behind
        raise
    return images


def remove_previews(images: list[dict], folder: str) -> None:
    for entry in images:
        try:
            os.remove(os.path.join(folder, entry["filename"]))
        except OSError:
            pass
