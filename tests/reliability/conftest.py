"""Fixtures of the reliability suite: its own ComfyUI server, so planted hostile slots and soak runs never
meet the other tiers' tests on the shared session server."""

from __future__ import annotations

import pytest
from comfy_server import ComfyServer


@pytest.fixture(scope="module")
def rel_comfy():
    server = ComfyServer().start()
    try:
        yield server
    finally:
        server.cleanup()
