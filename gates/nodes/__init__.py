"""One module per node kind; this file only lists them for ComfyUI."""

from ..constants import NODE_DISPLAY_NAME, NODE_ID
from .image_gate import ImageGate

NODE_CLASS_MAPPINGS = {NODE_ID: ImageGate}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: NODE_DISPLAY_NAME}
