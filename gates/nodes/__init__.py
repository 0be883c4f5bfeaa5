"""One module per node kind; this file only lists them for ComfyUI."""

from __future__ import annotations

import logging

from ..constants import (
    GRID_NODE_DISPLAY_NAME,
    GRID_NODE_ID,
    NODE_DISPLAY_NAME,
    NODE_ID,
    POOL_NODE_DISPLAY_NAME,
    POOL_NODE_ID,
)
from .grid_pool_gate import GridPoolGate
from .image_gate import ImageGate, drop_empty_slot_ids, mark_route_beyond_routes
from .pool_add import AddToImagePool

NODE_CLASS_MAPPINGS = {NODE_ID: ImageGate, POOL_NODE_ID: AddToImagePool, GRID_NODE_ID: GridPoolGate}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: NODE_DISPLAY_NAME, POOL_NODE_ID: POOL_NODE_DISPLAY_NAME,
                              GRID_NODE_ID: GRID_NODE_DISPLAY_NAME}

# Run on every queued prompt before ComfyUI validates it.
PROMPT_HANDLERS = (drop_empty_slot_ids, mark_route_beyond_routes)


def register_prompt_handlers() -> None:
    """Add PROMPT_HANDLERS to ComfyUI's server; outside ComfyUI there is none to add them to."""
    try:
        from server import PromptServer
    except ImportError:
        logging.getLogger("datasete_gates").debug("ComfyUI's server is not importable: no prompt handlers")
        return
    for handler in PROMPT_HANDLERS:
        PromptServer.instance.add_on_prompt_handler(handler)


# Image Folder Loader and Text Gate.
from ..constants import LOADER_DISPLAY_NAME, LOADER_NODE_ID, TEXT_GATE_DISPLAY_NAME, TEXT_GATE_NODE_ID  # noqa: E402
from .folder_loader import ImageFolderLoader  # noqa: E402
from .text_gate import TextGate  # noqa: E402

NODE_CLASS_MAPPINGS.update({LOADER_NODE_ID: ImageFolderLoader, TEXT_GATE_NODE_ID: TextGate})
NODE_DISPLAY_NAME_MAPPINGS.update({LOADER_NODE_ID: LOADER_DISPLAY_NAME, TEXT_GATE_NODE_ID: TEXT_GATE_DISPLAY_NAME})
