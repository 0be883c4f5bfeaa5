"""Image Gate (Manual Router): pause a workflow, show the image, let a person pick a route.

The node class is thin glue; the helpers beside it are plain functions tested
without ComfyUI. ComfyUI itself is imported only inside `ImageGate.run`, through
gates_compat.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

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
    SLOT_MASK_FRAME_TEMPLATE,
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
#
# A slot folder (see imagebus for how it is swapped in atomically) holds:
#   image.png            frame 0, RGB or RGBA (or grayscale for a 1-channel image)
#   frame_0001.png ...   frames 1.. of a batch, same size and channels as frame 0
#   mask.png             the mask (8-bit gray, white = 1.0) of every frame, or of frame 0 when
#   mask_0001.png ...    the frames have masks of their own
#   slot.json            the manifest: frame count, size, channels, how many masks
# A slot without slot.json (the plan's layout: image.png and maybe mask.png) reads as one frame.

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

    try:
        imagebus.publish(base, bus_id, write_files)
    except (imagebus.SlotIdError, imagebus.SlotError):
        raise
    except (OSError, imaging.ImagingError, ValueError) as exc:
        raise imagebus.SlotError(f"slot {bus_id!r}: could not publish: {exc}") from exc
    return manifest


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
        for index, name in enumerate(wanted):
            raw = reader.read_bytes(name)
            if keep_data:
                contents.data[name] = raw
            try:
                if index < frame_count:
                    frames.append(imaging.read_image_pixels(raw))
                else:
                    masks.append(imaging.read_mask_pixels(raw))
            except imaging.ImagingError as exc:
                fail(f"{name} is not a readable image ({exc})")
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
    whole("width", 1, 1 << 20)
    whole("height", 1, 1 << 20)
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


def validate_slot_ids(send_id, get_id) -> None:
    """Both ids are "" or None (unused) or valid slot ids; otherwise SlotIdError naming the id."""
    for label, value in (("send_id", send_id), ("get_id", get_id)):
        if value is None or value == "":
            continue
        try:
            imagebus.validate_id(value)
        except imagebus.SlotIdError as exc:
            raise imagebus.SlotIdError(f"{label}: {exc}") from None


def slots_sent_and_got(prompt: dict | None) -> set[str]:
    """Slot ids that one gate of a prompt sends and another gets: a race, since ComfyUI may run the getter first.

    A getter counts only if its image input is not linked (a linked image wins over the bus). One gate
    that gets and sends the same id is no race: it loads before it pauses and publishes after.
    """
    if not isinstance(prompt, dict):
        return set()
    senders: dict[str, set] = collections.defaultdict(set)
    getters: dict[str, set] = collections.defaultdict(set)
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != NODE_ID:
            continue
        inputs = node.get("inputs") or {}
        send_id, get_id = inputs.get("send_id"), inputs.get("get_id")
        if isinstance(send_id, str) and send_id:
            senders[send_id].add(node_id)
        if isinstance(get_id, str) and get_id and inputs.get("image") is None:
            getters[get_id].add(node_id)
    return {slot for slot, nodes in getters.items() if any(senders.get(slot, set()) - {getter} for getter in nodes)}


_warned_races: collections.OrderedDict = collections.OrderedDict()
_warned_races_lock = threading.Lock()


def warn_sent_and_got(prompt: dict | None, prompt_key, send_id, get_id) -> list[str]:
    """Log once per prompt a warning naming each slot it both sends and gets; returns the ids warned now."""
    racing = slots_sent_and_got(prompt) & {send_id, get_id}
    warned = []
    for slot in sorted(racing):
        with _warned_races_lock:
            if (prompt_key, slot) in _warned_races:
                continue
            _warned_races[(prompt_key, slot)] = True
            while len(_warned_races) > 1024:
                _warned_races.popitem(last=False)
        log.warning("Image Gate: slot %r is both sent (send_id) and got (get_id) in one prompt; ComfyUI may "
                    "run the getting gate first, which then loads the slot's previous contents (or nothing). "
                    "Use the slot from a later run instead.", slot)
        warned.append(slot)
    return warned


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
    try:
        return imagebus.sweep_once(base)
    except OSError as exc:
        log.warning("Image Gate: could not sweep leftovers in %s: %s", base, exc)
        return 0


# --- previews --------------------------------------------------------------------------

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
    def VALIDATE_INPUTS(cls, send_id="", get_id=""):
        """Refuse a bad slot id when the prompt is queued, so nothing of it runs.

        A linked id is not known yet here (ComfyUI passes None); run() checks it again.
        """
        try:
            validate_slot_ids(send_id, get_id)
        except imagebus.SlotIdError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # a person decides each run: never serve a gate from the cache

    def run(self, routes, unique_id=None, image=None, send_id="", get_id="", prompt=None):
        from . import gates_compat as comfy

        # Ids first: a bad one fails the prompt before anything is read, written or paused.
        validate_slot_ids(send_id, get_id)
        blocker = comfy.execution_blocker()
        base = comfy.gate_bus_base()
        from_bus = image is None
        if send_id or (from_bus and get_id):
            imagebus.sweep_once(base)  # leftovers of a publish killed in an earlier run
        if send_id:
            # A send_id slot that is a link out of gate_bus must fail now, not after a person has chosen.
            imagebus.bus_dir(base, send_id)
        warn_sent_and_got(prompt, comfy.current_prompt_id() or id(prompt), send_id, get_id)

        image, loaded_mask = resolve_source(base, image, get_id)
        if image is None:
            return (blocker,) * (1 + MAX_ROUTES)
        source, slot = (SOURCE_BUS, get_id) if from_bus else (SOURCE_INPUT, None)

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
                # The frames converted for the preview are published as they are: no second conversion.
                bus_write(base, send_id, frames, imaging.mask_to_uint8(mask))
                published = send_id
        finally:
            self.bus.discard(pause)
            remove_previews(previews, temp)
            comfy.broadcast(EVENT_RESOLVED, {
                "token": pause.token, "node_id": pause.node_id,
                "route": None if pause.cancelled else pause.route, "published": published})
        return (mask,) + route_tuple(pause.route - 1, image, blocker, MAX_ROUTES)

