"""Image Gate (Manual Router): pause a workflow, show the image, let a person pick a route.

The node class is thin glue; the helpers beside it are plain functions tested
without ComfyUI. ComfyUI itself is imported only inside `ImageGate.run`, through
gates_compat.
"""

from __future__ import annotations

import json
import logging
import os
import secrets

import numpy as np
import torch

from . import imagebus, imaging
from .constants import (
    CATEGORY,
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    MAX_ROUTES,
    NODE_ID,
    PREVIEW_PREFIX,
    SLOT_FRAME_TEMPLATE,
    SLOT_IMAGE,
    SLOT_MANIFEST,
    SLOT_MASK,
    SOURCE_BUS,
    SOURCE_INPUT,
    WAIT_SLICE_SECONDS,
)
from .gate_bus import GATES, GateBus, GateCancelled

log = logging.getLogger("datasete_gates")


def route_tuple(chosen: int, image, blocker, max_routes: int = MAX_ROUTES) -> tuple:
    """`image` on the 0-based `chosen` route, `blocker` on every other one."""
    return tuple(image if index == chosen else blocker for index in range(max_routes))


def mask_from_stash(painted, image: torch.Tensor) -> torch.Tensor:
    """The gate's MASK output: the painted (H,W) mask on every frame, else zeros of the image's size."""
    batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    return imaging.mask_batch(painted, batch, height, width)


# --- the disk image bus -------------------------------------------------------------------

def bus_save(base, bus_id, image: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Publish every frame of `image` and its mask to slot `bus_id`, atomically."""
    frames = imaging.image_to_uint8(image)
    batch, height, width, channels = frames.shape
    mask_pixels = None
    if mask is not None:
        mask_pixels = imaging.mask_to_uint8(mask)[0]
        if mask_pixels.shape != (height, width):
            raise imagebus.SlotError(
                f"slot {bus_id!r}: mask is {mask_pixels.shape[1]}x{mask_pixels.shape[0]}, "
                f"image is {width}x{height}")

    def write_files(folder):
        for index in range(batch):
            imaging.write_png(os.path.join(folder, frame_file_name(index)), frames[index])
        if mask_pixels is not None:
            imaging.write_png(os.path.join(folder, SLOT_MASK), mask_pixels)
        manifest = {"frames": int(batch), "width": int(width), "height": int(height),
                    "channels": int(channels), "mask": mask_pixels is not None}
        with open(os.path.join(folder, SLOT_MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)

    try:
        imagebus.publish(base, bus_id, write_files)
    except imagebus.SlotIdError:
        raise
    except OSError as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: could not publish: {exc}") from exc


def frame_file_name(index: int) -> str:
    return SLOT_IMAGE if index == 0 else SLOT_FRAME_TEMPLATE.format(index)


def bus_load(base, bus_id) -> tuple[torch.Tensor, torch.Tensor]:
    """Slot `bus_id` -> (image (B,H,W,C), mask (B,H,W)); an unreadable slot raises SlotError naming it."""

    def read(reader: imagebus.SlotReader):
        frame_count = 1
        if reader.exists(SLOT_MANIFEST):
            frame_count = _manifest_frames(reader.read_bytes(SLOT_MANIFEST), bus_id)
        frames = []
        for index in range(frame_count):
            name = frame_file_name(index)
            if index and not reader.exists(name):
                raise imagebus.SlotError(f"slot {bus_id!r}: {name} is missing ({frame_count} frames expected)")
            frames.append(imaging.read_image_pixels(reader.read_bytes(name)))
        mask = imaging.read_mask_pixels(reader.read_bytes(SLOT_MASK)) if reader.exists(SLOT_MASK) else None
        return frames, mask

    try:
        frames, mask = imagebus.read_slot(base, bus_id, read)
    except (imagebus.SlotIdError, imagebus.SlotError):
        raise
    except FileNotFoundError as exc:
        raise imagebus.SlotError(f"slot {bus_id!r} is empty or missing") from exc
    except (imaging.ImagingError, OSError) as exc:
        raise imagebus.SlotError(f"slot {bus_id!r} cannot be read: {exc}") from exc

    first = frames[0]
    for index, frame in enumerate(frames[1:], start=1):
        if frame.shape != first.shape:
            raise imagebus.SlotError(
                f"slot {bus_id!r}: frame {index} is {frame.shape[1]}x{frame.shape[0]}x{frame.shape[2]}, "
                f"frame 0 is {first.shape[1]}x{first.shape[0]}x{first.shape[2]}")
    height, width = first.shape[:2]
    if mask is not None and mask.shape != (height, width):
        raise imagebus.SlotError(
            f"slot {bus_id!r}: mask.png is {mask.shape[1]}x{mask.shape[0]}, image.png is {width}x{height}")
    image = imaging.uint8_to_image(np.stack(frames))
    mask_tensor = None if mask is None else torch.from_numpy(mask.astype(np.float32) / 255.0)
    return image, imaging.mask_batch(mask_tensor, len(frames), height, width)


def _manifest_frames(raw: bytes, bus_id: str) -> int:
    try:
        frames = json.loads(raw.decode("utf-8"))["frames"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: {SLOT_MANIFEST} is unreadable: {exc}") from exc
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 100_000:
        raise imagebus.SlotError(f"slot {bus_id!r}: {SLOT_MANIFEST} has a bad frame count {frames!r}")
    return frames


def resolve_source(base, image, get_id):
    """(image, loaded mask or None): a wired image wins; else the get_id slot; else (None, None)."""
    if image is not None:
        return image, None
    if get_id and imagebus.has(base, get_id):
        return bus_load(base, get_id)
    return None, None


def validate_slot_ids(send_id, get_id) -> None:
    """Both ids are "" (unused) or valid slot ids; otherwise the prompt fails naming the id."""
    for label, value in (("send_id", send_id), ("get_id", get_id)):
        if value is None or value == "":
            continue
        try:
            imagebus.validate_id(value)
        except imagebus.SlotIdError as exc:
            raise imagebus.SlotIdError(f"{label}: {exc}") from None


def slots_sent_and_got(prompt: dict | None) -> set[str]:
    """Slot ids that one prompt both sends and gets: a race, since either gate may run first."""
    if not isinstance(prompt, dict):
        return set()
    sent, got = set(), set()
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") != NODE_ID:
            continue
        inputs = node.get("inputs") or {}
        if isinstance(inputs.get("send_id"), str) and inputs["send_id"]:
            sent.add(inputs["send_id"])
        if isinstance(inputs.get("get_id"), str) and inputs["get_id"]:
            got.add(inputs["get_id"])
    return sent & got


# --- previews --------------------------------------------------------------------------

def save_previews(frames: np.ndarray, folder: str) -> list[dict]:
    """Write each uint8 frame as a PNG in ComfyUI's temp folder; entries as /view expects them."""
    stem = f"{PREVIEW_PREFIX}_{secrets.token_hex(8)}"
    images = []
    for index, frame in enumerate(frames):
        name = f"{stem}_{index:03d}.png"
        imaging.write_png(os.path.join(folder, name), frame, imaging.PREVIEW_COMPRESS_LEVEL)
        images.append({"filename": name, "subfolder": "", "type": "temp"})
    return images


def remove_previews(images: list[dict], folder: str) -> None:
    for entry in images:
        try:
            os.remove(os.path.join(folder, entry["filename"]))
        except OSError:
            pass


# --- the node ------------------------------------------------------------------------

class ImageGate:
    DESCRIPTION = (
        "Pauses the workflow and shows the image inside this node. Pick a route to send the whole "
        "batch down it (every other route is blocked), optionally after painting a mask on it, or "
        "Cancel to stop the run. With send_id it publishes what passed to a named slot on the disk "
        "image bus; with no image wired it loads from the get_id slot, so a later run can restart "
        "from this point without re-running what came before.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("MASK",) + ("IMAGE",) * MAX_ROUTES
    RETURN_NAMES = ("mask",) + tuple(f"route_{n}" for n in range(1, MAX_ROUTES + 1))
    OUTPUT_TOOLTIPS = (
        "The mask painted at the gate (white = 1.0) on every frame; else the mask loaded from the "
        "get_id slot; else zeros of the image's size.",
    ) + tuple(
        f"The image batch, if route {n} is chosen; otherwise blocked, so nothing behind it runs."
        for n in range(1, MAX_ROUTES + 1))
    SEARCH_ALIASES = ["gate", "manual router", "human in the loop", "image bus"]

    bus: GateBus = GATES

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "routes": ("INT", {
                    "default": 2, "min": 1, "max": MAX_ROUTES,
                    "tooltip": f"How many routes to offer (1 to {MAX_ROUTES}); the first ones are used."}),
            },
            "optional": {
                "image": ("IMAGE", {
                    "tooltip": "The image batch to gate. When absent (unwired, or its source muted or "
                               "bypassed), the gate loads from the get_id slot instead."}),
                "send_id": ("STRING", {
                    "default": "",
                    "tooltip": "Publish what passes the gate (image and mask) to this disk bus slot. "
                               "Empty: publish nothing. 1-64 of A-Z a-z 0-9 _ . -"}),
                "get_id": ("STRING", {
                    "default": "",
                    "tooltip": "With no image wired, load image and mask from this slot and gate them. "
                               "Empty or an unknown slot: the gate does nothing and blocks every route."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # a person decides each run: never serve a gate from the cache

    def run(self, routes, unique_id=None, image=None, send_id="", get_id="", prompt=None):
        from . import gates_compat as comfy

        validate_slot_ids(send_id, get_id)
        blocker = comfy.execution_blocker()
        base = comfy.gate_bus_base()
        imagebus.sweep_staging(base)
        for slot in sorted(slots_sent_and_got(prompt)):
            if slot == get_id:
                log.warning("Image Gate %s: slot %r is both sent and got in this prompt; ComfyUI may run "
                            "the getter first and load the previous contents", unique_id, slot)

        image, loaded_mask = resolve_source(base, image, get_id)
        if image is None:
            return (blocker,) * (1 + MAX_ROUTES)
        source, slot = (SOURCE_INPUT, None) if loaded_mask is None else (SOURCE_BUS, get_id)

        routes = max(1, min(int(routes), MAX_ROUTES))
        frames = imaging.image_to_uint8(image)
        batch, height, width = frames.shape[:3]
        temp = comfy.temp_directory()
        previews = save_previews(frames, temp)
        pause = self.bus.arm(unique_id, routes, prompt_id=comfy.current_prompt_id(), images=previews,
                             source=source, slot=slot, width=width, height=height, frames=batch)
        published = None
        try:
            comfy.broadcast(EVENT_PREVIEW, pause.entry())
            try:
                self.bus.wait(pause, comfy.check_interrupt, WAIT_SLICE_SECONDS)
            except GateCancelled:
                raise comfy.interrupted_exception() from None
            if pause.mask is not None:
                mask = mask_from_stash(pause.mask, image)
            elif loaded_mask is not None:
                mask = loaded_mask
            else:
                mask = mask_from_stash(None, image)
            if send_id:
                bus_save(base, send_id, image, mask)
                published = send_id
        finally:
            self.bus.discard(pause)
            remove_previews(previews, temp)
            comfy.broadcast(EVENT_RESOLVED, {
                "token": pause.token, "node_id": pause.node_id,
                "route": None if pause.cancelled else pause.route, "published": published})
        return (mask,) + route_tuple(pause.route - 1, image, blocker, MAX_ROUTES)

