"""The slot format of the disk image bus: what one slot folder holds and how it is read and written.

A slot folder (imagebus swaps it in atomically and pins reads to one version) holds:
  image.png            frame 0, RGB or RGBA (or grayscale for a 1-channel image)
  frame_0001.png ...   frames 1.. of a batch, same size and channels as frame 0
  mask.png             the mask (8-bit gray, white = 1.0) of every frame, or of frame 0 when
  mask_0001.png ...    the frames have masks of their own
  slot.json            the manifest: frame count, size, channels, how many masks
A slot without slot.json (the plan's first layout: image.png and maybe mask.png) reads as one frame.

No ComfyUI and no torch at import time: the command line (python -m gates.bus) uses this module
without either; the tensor helpers (bus_save, bus_load) import torch through imaging when called.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from . import imagebus, imaging
from .constants import (
    SLOT_FRAME_TEMPLATE,
    SLOT_IMAGE,
    SLOT_MANIFEST,
    SLOT_MASK,
    SLOT_MASK_FRAME_TEMPLATE,
)
from .storage import is_remote

if TYPE_CHECKING:
    import torch

log = logging.getLogger("datasete_gates")

SLOT_FORMAT = "datasete-gate-slot"
SLOT_FORMAT_VERSION = 1
MAX_SLOT_FRAMES = 100_000


def frame_file_name(index: int) -> str:
    return SLOT_IMAGE if index == 0 else SLOT_FRAME_TEMPLATE.format(index)


def mask_file_name(index: int) -> str:
    return SLOT_MASK if index == 0 else SLOT_MASK_FRAME_TEMPLATE.format(index)


@dataclass
class SlotContents:
    """One consistent version of a slot, decoded."""

    bus_id: str
    frames: np.ndarray              # (B,H,W,C) uint8
    masks: np.ndarray | None        # (1,H,W) or (B,H,W) uint8; None: the slot has no mask
    manifest: dict | None           # None for a slot in the plan's layout (no slot.json)
    files: dict[str, os.stat_result] = field(default_factory=dict)
    data: dict[str, bytes] | None = None   # the raw files, when asked for


def bus_write(base, bus_id, frames: np.ndarray, masks: np.ndarray | None) -> dict:
    """Publish uint8 frames (B,H,W,C) and masks (1 or B,H,W) to slot `bus_id` atomically; returns the manifest."""
    imagebus.validate_id(bus_id)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or 0 in frames.shape:
        raise imagebus.SlotError(
            f"slot {bus_id!r}: expected uint8 frames (batch, height, width, 1|3|4), got "
            f"{frames.dtype} {tuple(frames.shape)}")
    batch, height, width, channels = (int(n) for n in frames.shape)
    if batch > MAX_SLOT_FRAMES:
        raise imagebus.SlotError(f"slot {bus_id!r}: {batch} frames is over the limit of {MAX_SLOT_FRAMES}")
    too_large = imaging.oversize(width, height, batch)
    if too_large:  # it could never be read back: refuse before anything is written
        raise imagebus.SlotError(f"slot {bus_id!r}: cannot publish: the batch {too_large}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim == 2:
            masks = masks[None]
        if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[0] not in (1, batch):
            raise imagebus.SlotError(
                f"slot {bus_id!r}: expected uint8 masks (1 or {batch}, height, width), got "
                f"{masks.dtype} {tuple(masks.shape)}")
        if masks.shape[1:] != (height, width):
            raise imagebus.SlotError(
                f"slot {bus_id!r}: mask is {masks.shape[2]}x{masks.shape[1]}, image is {width}x{height}")
        if masks.shape[0] > 1 and bool((masks == masks[:1]).all()):
            masks = masks[:1]  # the usual case: one mask painted for the whole batch
    manifest = {
        "format": SLOT_FORMAT, "version": SLOT_FORMAT_VERSION,
        "frames": batch, "width": width, "height": height, "channels": channels,
        "mask": masks is not None, "mask_frames": 0 if masks is None else int(masks.shape[0]),
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    def write_files(folder):
        # Frames and masks are encoded two at a time (the encoders release the GIL).
        imaging.write_pngs(
            [(os.path.join(folder, frame_file_name(index)), frames[index]) for index in range(batch)]
            + [(os.path.join(folder, mask_file_name(index)), masks[index])
               for index in range(0 if masks is None else masks.shape[0])])
        with open(os.path.join(folder, SLOT_MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)

    if is_remote(base):
        _publish_remote(base, bus_id, frames, masks, manifest)
        return manifest
    try:
        imagebus.publish(base, bus_id, write_files)
    except (imagebus.SlotIdError, imagebus.SlotError):
        raise
    except (OSError, imaging.ImagingError, ValueError) as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: could not publish: {exc}") from exc
    return manifest


def _publish_remote(base, bus_id, frames, masks, manifest) -> None:
    """The same files as a folder publish, uploaded as one version and committed by its pointer."""
    from .storage import objects, s3slots

    try:
        files = {frame_file_name(index): imaging.encode_png(frames[index]) for index in range(frames.shape[0])}
        for index in range(0 if masks is None else masks.shape[0]):
            files[mask_file_name(index)] = imaging.encode_png(masks[index])
        files[SLOT_MANIFEST] = json.dumps(manifest, indent=1).encode("utf-8")
        s3slots.publish(base, bus_id, files)
    except (imagebus.SlotIdError, imagebus.SlotError):
        raise
    except (objects.StoreError, imaging.ImagingError, ValueError) as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: could not publish: {exc}") from exc


def bus_save(base, bus_id, image: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Publish every frame of `image` (alpha kept) and its mask to slot `bus_id`, atomically."""
    imagebus.validate_id(bus_id)
    try:
        frames = imaging.image_to_uint8(image)
        masks = None if mask is None else imaging.mask_to_uint8(mask)
    except imaging.ImagingError as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: {exc}") from exc
    bus_write(base, bus_id, frames, masks)


def bus_read(base, bus_id, keep_data: bool = False) -> SlotContents:
    """Read and check one consistent version of slot `bus_id`.

    Raises SlotNotFound for a slot that does not exist or is empty, and SlotError
    naming the slot for one that cannot be read: a corrupt or missing file, a
    bad manifest, frames or a mask of another size.
    """

    def fail(message: str):
        raise imagebus.SlotError(f"slot {bus_id!r}: {message}")

    def read(reader: imagebus.SlotReader) -> SlotContents:
        names = set(reader.names())
        if SLOT_IMAGE not in names:
            fail(f"{SLOT_IMAGE} is missing")
        manifest = None
        if SLOT_MANIFEST in names:
            manifest = _parse_manifest(reader.read_bytes(SLOT_MANIFEST), bus_id)
        frame_count = manifest["frames"] if manifest else 1
        mask_count = (manifest["mask_frames"] if manifest else int(SLOT_MASK in names))
        wanted = [frame_file_name(i) for i in range(frame_count)] + [mask_file_name(i) for i in range(mask_count)]
        for name in wanted:
            if name not in names:
                fail(f"{name} is missing (the slot has {frame_count} frames and {mask_count} masks)")
        contents = SlotContents(bus_id, None, None, manifest, data={} if keep_data else None)
        frames, masks = [], []
        for name in wanted + ([SLOT_MANIFEST] if manifest else []):
            contents.files[name] = reader.stat(name)
        # Every file's header is checked before any is decoded, so a slot decodes at most its
        # manifest's (or image.png's) size per file, whichever file declares more.
        size = (manifest["width"], manifest["height"]) if manifest else None
        raws = []
        for name in wanted:
            raw = reader.read_bytes(name)
            if keep_data:
                contents.data[name] = raw
            try:
                size = _check_declared_size(bus_id, name, raw, size, manifest is not None)
            except imaging.ImageTooLarge as exc:
                fail(str(exc))
            raws.append(raw)
        for index, (name, raw) in enumerate(zip(wanted, raws, strict=True)):
            raws[index] = None  # each file's bytes go as soon as it is decoded
            try:
                if index < frame_count:
                    frames.append(imaging.read_image_pixels(raw, name))
                else:
                    masks.append(imaging.read_mask_pixels(raw, name))
            except imaging.ImagingError as exc:
                fail(f"{name} is not a readable image ({exc})")
            del raw
        if keep_data and manifest:
            contents.data[SLOT_MANIFEST] = reader.read_bytes(SLOT_MANIFEST)
        contents.frames, contents.masks = _check_pixels(bus_id, frames, masks, manifest)
        return contents

    try:
        return imagebus.read_slot(base, bus_id, read)
    except (imagebus.SlotIdError, imagebus.SlotError):
        raise
    except OSError as exc:
        raise imagebus.SlotError(f"slot {bus_id!r} cannot be read: {exc}") from exc


def _check_declared_size(bus_id, name, raw, expected, from_manifest: bool):
    """The size `name` declares, refused before decoding when it is not the slot's size.

    Every file of a slot has one size: the manifest's (whose frames x width x height has passed
    the size rule), or image.png's. So a slot decodes at most that many pixels, however many
    of its files declare a bigger canvas.
    """
    declared = imaging.declared_size(raw, name)
    if declared is None or expected is None or declared == expected:
        return expected or declared
    width, height = declared
    if name == SLOT_IMAGE and from_manifest:
        raise imagebus.SlotError(f"slot {bus_id!r}: {SLOT_MANIFEST} says {expected[0]}x{expected[1]}, "
                                 f"the frames are {width}x{height}")
    raise imagebus.SlotError(f"slot {bus_id!r}: {name} is {width}x{height}, {SLOT_IMAGE} is "
                             f"{expected[0]}x{expected[1]}")


def _check_pixels(bus_id, frames, masks, manifest):
    first = frames[0]
    height, width = first.shape[:2]
    for index, frame in enumerate(frames[1:], start=1):
        if frame.shape != first.shape:
            raise imagebus.SlotError(
                f"slot {bus_id!r}: {frame_file_name(index)} is {frame.shape[1]}x{frame.shape[0]} with "
                f"{frame.shape[2]} channels, {SLOT_IMAGE} is {width}x{height} with {first.shape[2]}")
    for index, mask in enumerate(masks):
        if mask.shape != (height, width):
            raise imagebus.SlotError(
                f"slot {bus_id!r}: {mask_file_name(index)} is {mask.shape[1]}x{mask.shape[0]}, "
                f"{SLOT_IMAGE} is {width}x{height}")
    stacked = np.stack(frames)
    if manifest:
        if (manifest["width"], manifest["height"]) != (width, height):
            raise imagebus.SlotError(
                f"slot {bus_id!r}: {SLOT_MANIFEST} says {manifest['width']}x{manifest['height']}, "
                f"the frames are {width}x{height}")
        channels = manifest["channels"]
        if channels == 1 and first.shape[2] == 3:
            stacked = stacked[..., :1]  # a 1-channel image was stored as a gray PNG
        elif channels != first.shape[2]:
            raise imagebus.SlotError(
                f"slot {bus_id!r}: {SLOT_MANIFEST} says {channels} channels, the frames have {first.shape[2]}")
    return stacked, (np.stack(masks) if masks else None)


def _parse_manifest(raw: bytes, bus_id: str) -> dict:
    """slot.json, checked: every field the reader relies on present and sane, else SlotError naming the slot."""
    def bad(why: str):
        return imagebus.SlotError(f"slot {bus_id!r}: {SLOT_MANIFEST} is bad: {why}")

    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise bad(f"expected an object, got {type(manifest).__name__}")

    def whole(key: str, low: int, high: int) -> int:
        value = manifest.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"{key} must be a whole number from {low} to {high}, got {value!r}")
        return value

    frames = whole("frames", 1, MAX_SLOT_FRAMES)
    width = whole("width", 1, 1 << 20)
    height = whole("height", 1, 1 << 20)
    too_large = imaging.oversize(width, height, frames)
    if too_large:
        raise bad(too_large)
    if manifest.get("channels") not in (1, 3, 4):
        raise bad(f"channels must be 1, 3 or 4, got {manifest.get('channels')!r}")
    if "mask_frames" in manifest:
        mask_frames = whole("mask_frames", 0, frames)
        if mask_frames not in (0, 1, frames):
            raise bad(f"mask_frames must be 0, 1 or {frames}, got {mask_frames}")
    else:
        manifest["mask_frames"] = int(manifest.get("mask") is True)
    return manifest


def bus_load(base, bus_id) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot `bus_id` -> (image (B,H,W,C), mask (B,H,W)); a slot without a mask gives zeros.

    Raises SlotNotFound for an absent or empty slot and SlotError naming the slot for an unreadable one.
    """
    contents = bus_read(base, bus_id)
    batch, height, width = contents.frames.shape[:3]
    image = imaging.uint8_to_image(contents.frames)
    masks = None if contents.masks is None else imaging.uint8_to_image(contents.masks)
    return image, imaging.mask_batch(masks, batch, height, width)


def resolve_source(base, image, get_id):
    """(image, loaded mask or None): a wired image wins; else the get_id slot; else (None, None).

    An absent or empty slot is (None, None); a slot that exists but cannot be read raises SlotError.
    """
    if image is not None:
        return image, None
    if not get_id:
        return None, None
    try:
        return bus_load(base, get_id)
    except imagebus.SlotNotFound:
        return None, None



def sweep_bus_at_start() -> int:
    """When ComfyUI loads the pack: clean up after publishes killed mid-way by a crash or a kill.

    Without this the staging folders of a killed publish stay until some gate next uses the bus.
    Outside ComfyUI (tests, tools) there is no input folder, and nothing to sweep.
    """
    try:
        from .gates_compat import gate_bus_base

        base = gate_bus_base()
    except ImportError:
        return 0
    except ValueError as exc:  # a bad DATASETE_GATES_STORE: the pack still loads; every gate says why it fails
        log.error("Datasete Gates: %s", exc)
        return 0
    try:
        return imagebus.sweep_once(base)
    except OSError as exc:
        log.warning("Image Gate: could not sweep leftovers in %s: %s", base, exc)
        return 0

