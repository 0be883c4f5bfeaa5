"""Datasete Gates: a ComfyUI custom node pack. ComfyUI loads this folder as a package."""

from .gates.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register_prompt_handlers
from .gates.server import register_routes
from .gates.slots import sweep_bus_at_start

WEB_DIRECTORY = "./web"

register_routes()
register_prompt_handlers()
sweep_bus_at_start()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
