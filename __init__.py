"""Datasete Gates: a ComfyUI custom node pack. ComfyUI loads this folder as a package."""

from .gates.constants import NODE_DISPLAY_NAME, NODE_ID
from .gates.gate import ImageGate, sweep_bus_at_start
from .gates.gate_server import register_routes

NODE_CLASS_MAPPINGS = {NODE_ID: ImageGate}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: NODE_DISPLAY_NAME}
WEB_DIRECTORY = "./web"

register_routes()
sweep_bus_at_start()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
