"""Datasete Gates: human-in-the-loop image gates for ComfyUI.

The modules here import ComfyUI lazily (inside functions), so the logic can be
imported and tested without a ComfyUI installation.
"""
