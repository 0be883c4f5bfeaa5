"""Benchmarks of the gate and the disk image bus against ComfyUI's own code paths (run: python -m bench)."""
