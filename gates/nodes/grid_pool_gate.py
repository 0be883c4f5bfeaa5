"""Grid Pool Gate: pause with a page of a pool's oldest pending items as a grid; a person keeps some.

Thin glue over pools (the format on disk), grid (the answer and the thumbnails) and pause (the
rendezvous with the browser). ComfyUI is imported only inside `run`, through gates_compat.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import grid, imaging, origin, pools
from ..constants import (
    CATEGORY,
    GRID_PAGE_SIZE_DEFAULT,
    GRID_PAGE_SIZE_MAX,
    KIND_GRID,
    ON_TIMEOUT_BLOCK,
    ON_TIMEOUT_CANCEL,
    POOL_DIR_NAME,
    POOL_PENDING,
    SOURCE_INPUT,
    SOURCE_POOL,
)
from ..pause import GATES, GateBus
from ..previews import remove_previews, save_previews
from ..storage import is_remote
from ..timeouts import parse_on_timeout, parse_timeout, timeout_inputs
from ..waiting import status_ui, waiting
from .pool_add import status, tell

log = logging.getLogger("datasete_gates")


def report(comfy, where: dict, node_id, prompt_id, pool: str, text: str, **extra) -> dict:
    """Tell what the grid node did (log, every tab, the history), naming the workflow that queued the
    run (`where`, from origin.origin) beside the node id, so a page shows it on that node only."""
    return tell(comfy, status(node_id, prompt_id, pool, "grid", text, workflow_id=where["workflow_id"],
                              **extra))


def clamp_page_size(page_size) -> int:
    return max(1, min(int(page_size), GRID_PAGE_SIZE_MAX))


def pool_view(pool: str, file: str) -> dict:
    """The /view entry of an item in pending/ (ComfyUI serves the input folder's subfolders)."""
    return {"filename": file, "subfolder": f"{POOL_DIR_NAME}/{pool}/{POOL_PENDING}", "type": "input"}


def timed_out_fields(notes: list[dict]) -> dict:
    """The last timeout among `notes`, as fields of the grid's status (so the browser can word it)."""
    for note in reversed(notes):
        if note.get("reason") == "timed_out":
            return {"timed_out": True, "timeout": note["timeout"], "on_timeout": note["on_timeout"]}
    return {}


def timed_out_prefix(notes: list[dict]) -> str:
    fields = timed_out_fields(notes)
    return f"timed out ({fields['on_timeout']}) · " if fields else ""


class Shown:
    """One page as the person sees it: names, pixels (or the batch's frame indexes) and captions."""

    def __init__(self, names: list[str], pixels: list[np.ndarray], captions: list, fulls: list[dict]):
        self.names = names
        self.pixels = pixels        # (H,W,3|4) uint8 each
        self.captions = captions
        self.fulls = fulls          # /view entries of the full-size images


class GridPoolGate:
    DESCRIPTION = (
        "Pauses with a page of the pool's oldest pending items as a grid of thumbnails inside this node "
        "(or with the frames of the images batch, when wired: then nothing is written to disk). Click a "
        "tile to keep it, double click or Space to see it full size, then Send: the kept items move to "
        "kept/ and come out of `kept` (one run downstream per item), every other shown item moves to "
        "rejected/. The next run shows the next page. An empty or unknown pool does not pause.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("kept", "captions", "rejected", "names")
    OUTPUT_IS_LIST = (True, True, True, True)
    OUTPUT_TOOLTIPS = (
        "The kept images, as a list (each at its own size): whatever is wired here runs once per image. "
        "Blocked when nothing was kept.",
        "The kept images' captions, in the same order (\"\" for an image without one). Blocked when "
        "nothing was kept.",
        "The images not kept, as a list. Blocked when every image was kept.",
        "The kept items' names (000001, ...; frame_0000, ... for a wired batch), in the same order. "
        "Blocked when nothing was kept.",
    )
    SEARCH_ALIASES = ["grid", "pool", "review", "pick", "select images", "dataset", "curate"]

    bus: GateBus = GATES

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pool": ("STRING", {
                    "default": "dataset",
                    "tooltip": "The pool to review (a folder in input/gate_pool/). The picker in the node "
                               "lists the pools; any id can be typed. Ignored when images is wired."}),
                "page_size": ("INT", {
                    "default": GRID_PAGE_SIZE_DEFAULT, "min": 1, "max": GRID_PAGE_SIZE_MAX,
                    "tooltip": f"How many items one pause shows (1 to {GRID_PAGE_SIZE_MAX}). A pool with more "
                               "pending items shows the next page on the next run."}),
            },
            "optional": {
                "images": ("IMAGE", {
                    "tooltip": "Gate this batch directly instead of a pool: nothing is written to disk. "
                               "A batch larger than page_size is shown page by page in this run."}),
                # New inputs go last, so workflows saved before them load as they were.
                **timeout_inputs(KIND_GRID),
            },
            "hidden": dict(origin.HIDDEN),
        }

    @classmethod
    def VALIDATE_INPUTS(cls, pool=None):
        # on_timeout is left to ComfyUI's own choice check: a refusal here would be filed under every
        # input this method takes.
        if pool is None or pool == "":
            return True  # linked (checked in run), or unused because images is wired
        return pools.pool_id_problem(pool) or True

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        # A fresh NaN each call: ComfyUI compares these in tuples, where one shared NaN object (math.nan)
        # equals itself and the node would be served from the cache.
        return float("nan")  # a person decides each run, and the pool changes: never serve it from the cache

    def run(self, pool, page_size=GRID_PAGE_SIZE_DEFAULT, images=None, unique_id=None, timeout=0,
            on_timeout=ON_TIMEOUT_CANCEL, prompt=None, extra_pnginfo=None):
        from .. import gates_compat as comfy

        waits = {"timeout": parse_timeout(timeout), "on_timeout": parse_on_timeout(KIND_GRID, on_timeout)}
        # Which workflow queued this run goes with every page it shows (see gates/origin.py).
        where = origin.origin(extra_pnginfo, prompt, unique_id)
        page_size = clamp_page_size(page_size)
        blocker = comfy.execution_blocker()
        prompt_id = comfy.current_prompt_id()
        if images is not None:
            return self._run_batch(comfy, images, page_size, unique_id, prompt_id, blocker, waits, where)
        if pool is None or pool == "":
            ui = report(comfy, where, unique_id, prompt_id, "", "no pool given and no images wired: nothing to review",
                        reason="no_pool", paused=False)
            return {"ui": ui, "result": (blocker,) * 4}
        pools.validate_pool_id(pool)
        base = comfy.gate_pool_base()
        pools.sweep_root(base)
        try:
            page = pools.pending_page(base, pool, page_size)
        except pools.PoolNotFound:
            ui = report(comfy, where, unique_id, prompt_id, pool, f"pool {pool!r} does not exist",
                        reason="missing", paused=False)
            return {"ui": ui, "result": (blocker,) * 4}
        if not page.items:
            counts = page.counts
            ui = report(comfy, where, unique_id, prompt_id, pool,
                        f"pool {pool!r} has nothing pending (kept {counts['kept']}, rejected {counts['rejected']})",
                        reason="empty", paused=False, counts=counts)
            return {"ui": ui, "result": (blocker,) * 4}

        pixels = [item.pixels for item in page.items]
        # ComfyUI's /view serves the input folder only: items on an object store are shown from temp copies.
        remote = is_remote(base)
        fulls = save_previews(pixels, comfy.temp_directory()) if remote \
            else [pool_view(pool, item.file) for item in page.items]
        shown = Shown([item.name for item in page.items], pixels, [item.caption for item in page.items], fulls)
        try:
            keep, notes = self._pause(comfy, shown, unique_id, prompt_id, source=SOURCE_POOL, pool=pool,
                                      pending=page.pending, page_size=page_size, where=where, **waits)
        finally:
            if remote:
                remove_previews(fulls, comfy.temp_directory())
        if keep is None:  # timed out with on_timeout block: nothing moves, every output is blocked
            return {"ui": status_ui(*notes), "result": (blocker,) * 4}
        kept_names = [shown.names[i] for i in keep]
        rejected_names = [name for i, name in enumerate(shown.names) if i not in keep]
        moved = pools.decide(base, pool, kept_names, rejected_names)
        for name in moved.missing:
            log.warning("Grid Pool Gate: pool %r: %s was moved out of the pool or deleted while the grid "
                        "waited; it is left out of the outputs", pool, name)
        present = set(moved.moved)
        kept = [i for i in keep if shown.names[i] in present]
        rejected = [i for i in range(len(shown.names)) if i not in keep and shown.names[i] in present]
        counts = moved.counts
        text = (f"kept {len(kept)} of {len(shown.names)} · pool: pending {counts['pending']} · "
                f"kept {counts['kept']} · rejected {counts['rejected']}")
        ui = report(comfy, where, unique_id, prompt_id, pool, timed_out_prefix(notes) + text, reason="decided",
                    paused=True, counts=counts, kept=[shown.names[i] for i in kept], shown=len(shown.names),
                    **timed_out_fields(notes))
        ui.update(status_ui(*notes))

        def image(index):
            return imaging.uint8_to_image(shown.pixels[index][None])

        outputs = self._outputs(blocker, [image(i) for i in kept], [shown.captions[i] or "" for i in kept],
                                [image(i) for i in rejected], [shown.names[i] for i in kept])
        return {"ui": ui, "result": outputs}

    def _run_batch(self, comfy, images, page_size, unique_id, prompt_id, blocker, waits, where):
        """Gate a wired batch, page by page within this run; nothing touches the disk but previews."""
        frames = imaging.image_to_uint8(images)
        total = int(frames.shape[0])
        temp = comfy.temp_directory()
        kept: list[int] = []
        notes: list[dict] = []
        for start in range(0, total, page_size):
            stop = min(total, start + page_size)
            page = frames[start:stop]
            fulls = save_previews(page, temp)
            try:
                shown = Shown([f"frame_{index:04d}" for index in range(start, stop)],
                              [pools.as_rgb_or_rgba(frame) for frame in page], [None] * (stop - start), fulls)
                keep, said = self._pause(comfy, shown, unique_id, prompt_id, source=SOURCE_INPUT, pool=None,
                                         pending=total - start, page_size=page_size, where=where,
                                         **waits)
            finally:
                remove_previews(fulls, temp)
            notes += said
            if keep is None:  # timed out with on_timeout block: the whole batch is blocked
                return {"ui": status_ui(*notes), "result": (blocker,) * 4}
            kept += [start + i for i in keep]
        chosen = set(kept)
        rejected = [i for i in range(total) if i not in chosen]
        ui = report(comfy, where, unique_id, prompt_id, "",
                    timed_out_prefix(notes) + f"kept {len(kept)} of {total} frames", reason="batch_decided",
                    paused=True, kept_count=len(kept), shown=total, **timed_out_fields(notes))
        ui.update(status_ui(*notes))
        outputs = self._outputs(blocker, [images[i:i + 1] for i in kept], [""] * len(kept),
                                [images[i:i + 1] for i in rejected], [f"frame_{i:04d}" for i in kept])
        return {"ui": ui, "result": outputs}

    @staticmethod
    def _outputs(blocker, kept_images, captions, rejected_images, names) -> tuple:
        if not kept_images:
            kept_images = captions = names = blocker
        return kept_images, captions, rejected_images or blocker, names

    def _pause(self, comfy, shown: Shown, unique_id, prompt_id, *, source, pool, pending, page_size, where,
               timeout=0, on_timeout=ON_TIMEOUT_CANCEL):
        """Show the page and wait for the person: (kept indexes, status notes). Cancel ends the run as
        interrupted; a timeout keeps all or none, or gives None for kept (block)."""
        temp = comfy.temp_directory()
        thumbs = grid.save_thumbnails(shown.pixels, temp)
        sizes = [(int(p.shape[1]), int(p.shape[0])) for p in shown.pixels]
        items = grid.page_items(shown.names, thumbs, shown.fulls, shown.captions, sizes)
        details = {**where, "items": items, "pool": pool, "pending": int(pending),
                   "remaining": max(0, int(pending) - len(items)), "page_size": page_size}
        pause = self.bus.arm(unique_id, 0, prompt_id=prompt_id, images=thumbs, source=source,
                             frames=len(items), kind=KIND_GRID, details=details, timeout=timeout, on_timeout=on_timeout)

        def resolved(done):
            return {"kind": KIND_GRID, "route": None,
                    "keep": None if done.cancelled else list(done.answer or ()), "published": None}

        try:
            with waiting(self.bus, comfy, pause, resolved, on_timeout=on_timeout):
                if pause.timed_out:
                    pause.answer = None if on_timeout == ON_TIMEOUT_BLOCK else (
                        list(range(len(items))) if on_timeout == "keep_all" else [])
                    if pause.answer is None:
                        return None, pause.notes
                keep = tuple(pause.answer or ())
        finally:
            remove_previews(thumbs, temp)
        return keep, pause.notes
