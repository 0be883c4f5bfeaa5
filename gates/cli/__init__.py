"""Command lines: python -m gates.pool (gates.bus keeps its own module, gates/bus.py)."""
