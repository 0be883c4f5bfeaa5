"""Image Gate (Manual Router): pause a workflow, show the image, let a person pick a route.

The node class is thin glue over slots (the disk bus format), pause (the rendezvous with the
browser) and previews; the helpers beside it are plain functions tested without ComfyUI.
ComfyUI itself is imported only inside `ImageGate.run`, through gates_compat.
"""

from __future__ import annotations

import collections
import logging
import threading

import torch

from .. import imagebus, imaging, origin
from ..constants import (
    CATEGORY,
    KIND_IMAGE,
    MAX_ROUTES,
    NODE_ID,
    ON_TIMEOUT_BLOCK,
    ON_TIMEOUT_CANCEL,
    SOURCE_BUS,
    SOURCE_INPUT,
)
from ..pause import GATES, GateBus
from ..previews import remove_previews, save_previews
from ..slots import bus_write, resolve_source
from ..timeouts import OnTimeoutError, parse_on_timeout, parse_timeout, timeout_inputs, timeout_route
from ..waiting import say, say_of, status_ui, waiting

log = logging.getLogger("datasete_gates")


def route_tuple(chosen: int, image, blocker, max_routes: int = MAX_ROUTES) -> tuple:
    """`image` on the 0-based `chosen` route, `blocker` on every other one."""
    return tuple(image if index == chosen else blocker for index in range(max_routes))


def mask_from_stash(painted, image: torch.Tensor) -> torch.Tensor:
    """The gate's MASK output: the painted (H,W) mask on every frame, else zeros of the image's size."""
    batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    return imaging.mask_batch(painted, batch, height, width)


SEND_ON_ANY = "any route"
SEND_ON_CHOICES = [f"route_{n}" for n in range(1, MAX_ROUTES + 1)] + [SEND_ON_ANY]
SEND_ON_DEFAULT = "route_1"


def parse_send_on(send_on, routes) -> int | None:
    """The one route whose choice publishes (1-based), or None for any route; ValueError naming send_on."""
    if send_on == SEND_ON_ANY:
        return None
    if send_on not in SEND_ON_CHOICES:
        raise ValueError(f"send_on: {send_on!r} is not one of {SEND_ON_CHOICES}")
    route = int(send_on.removeprefix("route_"))
    if route > int(routes):
        raise ValueError(f"send_on: {send_on} is beyond routes = {routes}; pick a route from 1 to {routes} "
                         f"or {SEND_ON_ANY!r}")
    return route


def loaded_mask_preview(mask: torch.Tensor, folder: str) -> list[dict]:
    """Frame 0's loaded mask as a gray preview file for the painter; [] when the mask is empty."""
    pixels = imaging.mask_to_uint8(mask[:1])
    if not pixels.any():
        return []
    return save_previews(pixels[..., None], folder)


def drop_empty_slot_ids(json_data: dict) -> dict:
    """ComfyUI on_prompt handler: leave empty send_id/get_id out of the gates' inputs.

    ComfyUI files a VALIDATE_INPUTS message under every input the method takes, so a bad get_id
    would also be reported under an empty send_id. An input left out is passed as its default
    (""), which is what an empty one means, and then only the input holding a value is blamed.
    """
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if isinstance(prompt, dict):
        for node in prompt.values():
            if isinstance(node, dict) and node.get("class_type") == NODE_ID and isinstance(node.get("inputs"), dict):
                for name in ("send_id", "get_id"):
                    if node["inputs"].get(name) == "":
                        del node["inputs"][name]
    return json_data


def mark_route_beyond_routes(json_data: dict) -> dict:
    """ComfyUI on_prompt handler: an on_timeout route_N beyond the gate's own `routes` is refused when the
    prompt is queued, under on_timeout alone and naming the value.

    The value is rewritten to say why ("route_4 (beyond routes = 3)"); it is then not one of on_timeout's
    choices, so ComfyUI's own check refuses it, with the name of the input and the value. A linked
    `routes` is not known here: run() checks it.
    """
    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict):
        return json_data
    for node in prompt.values():
        if not (isinstance(node, dict) and node.get("class_type") == NODE_ID and isinstance(node.get("inputs"), dict)):
            continue
        inputs = node["inputs"]
        routes, on_timeout = inputs.get("routes"), inputs.get("on_timeout")
        if isinstance(routes, bool) or not isinstance(routes, int) or not isinstance(on_timeout, str):
            continue
        try:
            parse_on_timeout(KIND_IMAGE, on_timeout, routes)
        except OnTimeoutError:
            if timeout_route(on_timeout) is not None:
                inputs["on_timeout"] = f"{on_timeout} (beyond routes = {routes})"
    return json_data


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


def validate_routes_and_timeout(routes, on_timeout) -> str:
    """routes within 1..MAX_ROUTES (None: linked, unknown yet) and the checked on_timeout."""
    if routes is not None:
        if isinstance(routes, bool) or not isinstance(routes, int) or not 1 <= routes <= MAX_ROUTES:
            raise OnTimeoutError(f"routes must be a whole number from 1 to {MAX_ROUTES}, got {routes!r}")
    return parse_on_timeout(KIND_IMAGE, on_timeout, routes)


def nothing_to_gate(get_id) -> tuple[str, str]:
    """(reason, sentence) for a gate with no image wired and nothing loaded from get_id."""
    if get_id:
        return "no_slot", f"slot {get_id!r} not found: nothing to gate"
    return "no_image", "no image wired and no get_id slot: nothing to gate"


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
                "send_on": (SEND_ON_CHOICES, {
                    "default": SEND_ON_DEFAULT,
                    "tooltip": "Which choice publishes to send_id: one route (by default route_1, the "
                               "accept route, so a rejected image never becomes the restart point) or "
                               "any route."}),
                # New inputs go last, so workflows saved before them load as they were.
                **timeout_inputs(KIND_IMAGE),
            },
            "hidden": dict(origin.HIDDEN),
        }

    @classmethod
    def VALIDATE_INPUTS(cls, send_id="", get_id=""):
        """Refuse a bad slot id when the prompt is queued, so nothing of it runs.

        A linked id is not known yet here (ComfyUI passes None); run() checks it again. Only the ids
        are taken: ComfyUI files a refusal under every input this method takes, so `routes` and
        `on_timeout` keep ComfyUI's own checks, and mark_route_beyond_routes refuses a route_N beyond
        `routes` under on_timeout alone.
        """
        try:
            validate_slot_ids(send_id, get_id)
        except imagebus.SlotIdError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # a person decides each run: never serve a gate from the cache

    def run(self, routes, unique_id=None, image=None, send_id="", get_id="", send_on=SEND_ON_DEFAULT,
            timeout=0, on_timeout=ON_TIMEOUT_CANCEL, prompt=None, extra_pnginfo=None):
        from .. import gates_compat as comfy

        # Ids first: a bad one fails the prompt before anything is read, written or paused.
        validate_slot_ids(send_id, get_id)
        publish_route = parse_send_on(send_on, routes)
        timeout = parse_timeout(timeout)
        on_timeout = validate_routes_and_timeout(routes, on_timeout)
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
            # Not an error (a first run before anything was published), but never silent.
            reason, text = nothing_to_gate(get_id)
            note = say(comfy, unique_id, comfy.current_prompt_id(), KIND_IMAGE, reason, text, logging.WARNING,
                       workflow_id=origin.workflow_id(extra_pnginfo), slot=get_id or None)
            return {"ui": status_ui(note), "result": (blocker,) * (1 + MAX_ROUTES)}
        source, slot = (SOURCE_BUS, get_id) if from_bus else (SOURCE_INPUT, None)

        routes = max(1, min(int(routes), MAX_ROUTES))
        frames = imaging.image_to_uint8(image)
        batch, height, width = frames.shape[:3]
        temp = comfy.temp_directory()
        previews = save_previews(frames, temp)
        details = origin.origin(extra_pnginfo, prompt, unique_id)
        if from_bus and loaded_mask is not None:
            # Show the slot's mask in the painter, so painting edits it instead of silently replacing it.
            shown = loaded_mask_preview(loaded_mask, temp)
            if shown:
                previews += shown
                details.update(mask=shown[0], mask_source=f"slot {get_id}")
        pause = self.bus.arm(unique_id, routes, prompt_id=comfy.current_prompt_id(), images=previews[:batch],
                             source=source, slot=slot, width=width, height=height, frames=batch,
                             details=details, timeout=timeout, on_timeout=on_timeout)
        published = publish_error = None
        notes = []

        def resolved(done):
            return {"route": None if done.cancelled else done.route, "published": published,
                    "publish_error": publish_error}

        try:
            with waiting(self.bus, comfy, pause, resolved, on_timeout=on_timeout):
                notes += pause.notes
                if pause.timed_out:
                    if on_timeout == ON_TIMEOUT_BLOCK:
                        return {"ui": status_ui(*notes), "result": (blocker,) * (1 + MAX_ROUTES)}
                    pause.route = timeout_route(on_timeout)
                if pause.mask is not None:
                    mask = mask_from_stash(pause.mask, image)
                elif loaded_mask is not None:
                    mask = loaded_mask
                else:
                    mask = mask_from_stash(None, image)
                if send_id and publish_route in (None, pause.route):
                    # The frames converted for the preview are published as they are: no second conversion.
                    try:
                        bus_write(base, send_id, frames, imaging.mask_to_uint8(mask))
                        published = send_id
                    except OSError as exc:
                        # The person chose: the image still goes down that route. The slot keeps its
                        # old version (a publish is all or nothing); the node and the log say why.
                        publish_error = str(exc) if isinstance(exc, imagebus.SlotError) else (
                            f"slot {send_id!r}: could not publish: {exc.strerror or exc}")
                        notes.append(say_of(comfy, pause, "publish_failed", publish_error, logging.ERROR,
                                            slot=send_id))
        finally:
            remove_previews(previews, temp)
        result = (mask,) + route_tuple(pause.route - 1, image, blocker, MAX_ROUTES)
        return {"ui": status_ui(*notes), "result": result} if notes else result
