"""Part 3: SIGKILL a real ComfyUI in the middle of publishes; the slot stays whole and leftovers go."""

from __future__ import annotations

import numpy as np
import pytest
from comfy_server import ComfyServer

from gates import slots

from . import crash_publish


def test_inspect_slot_tells_whole_from_mixed(tmp_path):
    """The checker itself: a slot whose mask belongs to another publish must read as mixed."""
    def frames(counter):
        return np.stack([np.full((4, 4, 3), [counter % 256, counter // 256, blue], dtype=np.uint8)
                         for blue in crash_publish.FRAME_BLUE])

    bus = tmp_path / "gate_bus"
    slots.bus_write(str(bus), crash_publish.SLOT, frames(300), np.full((1, 4, 4), 300 % 256, dtype=np.uint8))
    assert crash_publish.inspect_slot(bus)[:2] == ("whole", 300)
    slots.bus_write(str(bus), crash_publish.SLOT, frames(300), np.full((1, 4, 4), 301 % 256, dtype=np.uint8))
    assert crash_publish.inspect_slot(bus)[0] == "mixed"
    mixed_frames = frames(300)
    mixed_frames[1] = frames(301)[1]
    slots.bus_write(str(bus), crash_publish.SLOT, mixed_frames, np.full((1, 4, 4), 300 % 256, dtype=np.uint8))
    assert crash_publish.inspect_slot(bus)[0] == "mixed"


@pytest.mark.comfy
def test_kill_during_publish_light(tmp_path):
    base = tmp_path / "crash-base"
    crash_publish.run(lambda: ComfyServer(base_dir=base), kills=3, size=1024).assert_passed()


@pytest.mark.comfy
@pytest.mark.heavy
def test_kill_during_publish_heavy(tmp_path):
    base = tmp_path / "crash-base"
    crash_publish.run(lambda: ComfyServer(base_dir=base), kills=50, size=2048).assert_passed()
