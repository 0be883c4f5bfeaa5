"""2. Publish (image + mask, atomic) against the bare encode of the same uint8 arrays, and
3. Load (image + mask to tensors) against the bare decode of the same files plus the tensor
conversion ComfyUI's LoadImage does. Both on the same disk, with the same codec."""

from __future__ import annotations

import io
import os
import shutil
import statistics
import tempfile
from functools import partial

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.common import (
    FULL_SIZES,
    QUICK_SIZES,
    interleaved,
    painted_mask,
    photo_like,
    repeats_for,
    timed,
    warmup_for,
)


def _bare_encode(folder: str, frames: np.ndarray, mask: np.ndarray) -> None:
    from gates import imaging

    for index in range(frames.shape[0]):
        imaging.write_png(os.path.join(folder, f"f{index}.png"), frames[index])
    imaging.write_png(os.path.join(folder, "m.png"), mask)


def _convert(image, mask) -> None:
    from gates import imaging

    imaging.image_to_uint8(image)
    imaging.mask_to_uint8(mask)


def _write_all(contents: dict, folder: str) -> None:
    for name, data in contents.items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)


def _bare_decode(paths: list[str], mask_path: str):
    """Read and decode with the same decoder, then LoadImage's conversion: np.float32 / 255, torch, cat."""
    from gates import imaging

    images = []
    for path in paths:
        with open(path, "rb") as handle:
            pixels = imaging.read_image_pixels(handle.read())
        images.append(torch.from_numpy(np.array(pixels).astype(np.float32) / 255.0)[None,])
    with open(mask_path, "rb") as handle:
        mask = imaging.read_mask_pixels(handle.read())
    mask = torch.from_numpy(np.array(mask).astype(np.float32) / 255.0)[None,]
    return torch.cat(images, dim=0) if len(images) > 1 else images[0], mask


def _comfy_load_image(paths: list[str]):
    """ComfyUI's LoadImage on each file (Pillow open, exif_transpose, convert, float32 / 255)."""
    images = []
    for path in paths:
        img = Image.open(path)
        img = ImageOps.exif_transpose(img)
        image = np.array(img.convert("RGB")).astype(np.float32) / 255.0
        images.append(torch.from_numpy(image)[None,])
    return torch.cat(images, dim=0) if len(images) > 1 else images[0]


def run(quick: bool, backend: str | None = None, root: str | None = None,
        skip_largest: bool = False) -> tuple[list[dict], list[dict]]:
    from gates import imagebus, imaging, slots

    previous = imaging.PNG_BACKEND
    if backend:
        imaging.PNG_BACKEND = backend
    work = tempfile.mkdtemp(prefix="bench-bus-", dir=root)
    publish_rows, load_rows = [], []
    try:
        sizes = QUICK_SIZES if quick else FULL_SIZES
        if skip_largest and not quick:
            sizes = tuple(size for size in sizes if size[2] == 1 and size[0] < 4096)  # keeps the run under 5 minutes
        for height, width, batch in sizes:
            image = photo_like(height, width, batch, seed=1)
            mask = painted_mask(height, width, batch)
            frames = imaging.image_to_uint8(image)
            mask_pixels = imaging.mask_to_uint8(mask)[0]
            base = os.path.join(work, "gate_bus")
            bare = os.path.join(work, "bare")
            os.makedirs(bare, exist_ok=True)
            repeats = repeats_for(height * width * batch, quick)
            warmup = warmup_for(height * width * batch)
            # What the gate does when a person picks a route: publish the uint8 frames it already
            # converted for the preview (the conversion is measured with the preview, and below).
            stats = interleaved(partial(slots.bus_write, base, "bench", frames, mask_pixels),
                                partial(_bare_encode, bare, frames, mask_pixels), repeats, warmup=warmup)
            slot = os.path.join(base, "bench")
            contents = {}
            for name in os.listdir(slot):
                with open(os.path.join(slot, name), "rb") as handle:
                    contents[name] = handle.read()
            # The same bytes, published atomically vs plainly written: what atomicity and
            # durability (staging folder, fsync, swap, removing the old version) cost alone.
            plain = os.path.join(work, "plain")
            os.makedirs(plain, exist_ok=True)
            swap = interleaved(partial(imagebus.publish, base, "bench_bytes", partial(_write_all, contents)),
                               partial(_write_all, contents, plain), repeats, warmup=1)
            # The tensors' conversion to uint8, which the reference (given uint8 arrays) skips.
            conversion = statistics.median(timed(partial(_convert, image, mask)) for _ in range(repeats))
            publish_rows.append({"size": [height, width, batch], "backend": imaging.png_backend(),
                                 "slot_bytes": sum(len(data) for data in contents.values()),
                                 "atomic_overhead_s": swap["ours_s"] - swap["reference_s"],
                                 "conversion_s": conversion, **stats})

            bare_paths = [os.path.join(bare, f"f{index}.png") for index in range(batch)]
            mask_path = os.path.join(bare, "m.png")
            loaded, loaded_mask = slots.bus_load(base, "bench")
            reference, reference_mask = _bare_decode(bare_paths, mask_path)
            if not (torch.equal(loaded, reference) and torch.equal(loaded_mask[:1], reference_mask)):
                raise AssertionError("bus_load and the bare decode disagree")
            stats = interleaved(partial(slots.bus_load, base, "bench"),
                                partial(_bare_decode, bare_paths, mask_path), repeats, warmup=warmup)
            versus_comfy = interleaved(partial(slots.bus_load, base, "bench"),
                                       partial(_comfy_load_image, bare_paths), max(1, repeats // 3), warmup=0)
            load_rows.append({"size": [height, width, batch], "backend": imaging.png_backend(),
                              "vs_comfy_load_image": versus_comfy["ratio"], **stats})
            for folder in (base, bare, os.path.join(work, "plain")):
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        imaging.PNG_BACKEND = previous
        shutil.rmtree(work, ignore_errors=True)
    return publish_rows, load_rows


def encoded_size(pixels: np.ndarray, level: int) -> int:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
    return buffer.tell()
