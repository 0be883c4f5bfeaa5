"""Add to Image Pool: write a batch into a pool's pending/ folder without pausing, for review later.

Thin glue over pools (the format on disk); ComfyUI is imported only inside `run`, through gates_compat.
"""

from __future__ import annotations

import logging

from .. import imaging, origin, pools
from ..constants import CATEGORY, EVENT_POOL_STATUS

log = logging.getLogger("datasete_gates")

UI_KEY = "datasete_pool"


def status(node_id, prompt_id, pool: str, kind: str, text: str, workflow_id: str | None = None, **extra) -> dict:
    """What a pool node tells the browser (the event) and the history (its UI output).

    `text` is the English sentence for the log and the history; `reason` and the numbers beside it let
    the browser say the same in the frontend's language. `workflow_id` (origin.py) keeps it on the node
    of the workflow that queued the run, not on another workflow's node of the same id.
    """
    return {"node_id": None if node_id is None else str(node_id), "prompt_id": prompt_id, "pool": pool,
            "kind": kind, "workflow_id": workflow_id, "text": text, **extra}


def tell(comfy, entry: dict) -> dict:
    """Log the status and show it on the node in every open tab."""
    log.info("%s: %s", f"pool {entry['pool']!r}" if entry["pool"] else "Grid Pool Gate", entry["text"])
    comfy.broadcast(EVENT_POOL_STATUS, entry)
    return {UI_KEY: [entry]}


class AddToImagePool:
    DESCRIPTION = (
        "Adds every frame of the batch to an image pool on disk (input/gate_pool/<pool>/pending/) "
        "without pausing, each with its caption, so generation can run unattended (overnight) and a "
        "person reviews the pool later with a Grid Pool Gate. Frames already in the pool are skipped "
        "unless skip_duplicates is off. The images pass through unchanged.")
    CATEGORY = CATEGORY
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "INT", "INT")
    RETURN_NAMES = ("images", "added", "pending")
    OUTPUT_TOOLTIPS = (
        "The images, unchanged.",
        "How many frames this run added to the pool (duplicates skipped are not counted).",
        "How many items of the pool wait for review after this run.",
    )
    SEARCH_ALIASES = ["pool", "image pool", "dataset", "queue for review", "collect"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {
                    "tooltip": "The frames to add, each as one item of the pool (RGB, or RGBA with its alpha)."}),
                "pool": ("STRING", {
                    "default": "dataset",
                    "tooltip": "The pool to add to: a folder in input/gate_pool/, made on first use. "
                               "1-64 of A-Z a-z 0-9 _ . - (the disk bus's slot id rules)."}),
            },
            "optional": {
                "captions": ("STRING", {
                    "default": "", "multiline": True,
                    "tooltip": "One line per frame, or one line for every frame; saved beside each image as "
                               "<name>.txt. Empty: no caption files. With a single frame the whole text is "
                               "its caption."}),
                "skip_duplicates": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Skip a frame whose pixels are already in the pool (pending, kept or rejected), "
                               "or earlier in this batch."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, pool=None):
        """Refuse a bad pool id when the prompt is queued; a linked id (None here) is checked in run()."""
        if pool is None:
            return True
        return pools.pool_id_problem(pool) or True

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        # A fresh NaN each call: ComfyUI compares these in tuples, where one shared NaN object (math.nan)
        # equals itself and the node would be served from the cache.
        return float("nan")  # it writes to disk and reports the pool's counts: run it every time

    def run(self, images, pool, captions="", skip_duplicates=True, unique_id=None, extra_pnginfo=None):
        from .. import gates_compat as comfy

        pools.validate_pool_id(pool)
        frames = imaging.image_to_uint8(images)
        per_frame = pools.split_captions(captions, int(frames.shape[0]))
        base = comfy.gate_pool_base()
        pools.sweep_root(base)
        result = pools.add_frames(base, pool, frames, per_frame, bool(skip_duplicates))
        for problem in result.unreadable:
            log.warning("Add to Image Pool: could not check for duplicates: %s", problem)
        entry = status(unique_id, comfy.current_prompt_id(), pool, "add", result.summary(),
                       workflow_id=origin.workflow_id(extra_pnginfo), reason="added",
                       counts=result.counts, added=result.added, duplicates=len(result.duplicates))
        ui = tell(comfy, entry)
        return {"ui": ui, "result": (images, len(result.added), result.counts["pending"])}
