"""The Image Gate node without ComfyUI: its pure helpers, and run() with ComfyUI's modules faked per test.

Only ComfyUI's own modules are faked (folder_paths, server, comfy.model_management,
comfy_execution.*); torch, numpy and the pack are real.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from comfy_fakes import FakeComfy, RunningNode, wait_for_pause
from PIL import Image

from gates import imaging
from gates.constants import (
    CATEGORY,
    EVENT_GATE_STATUS,
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    GATE_STATUS_UI_KEY,
    MAX_ROUTES,
    NODE_DISPLAY_NAME,
    SOURCE_INPUT,
)
from gates.nodes import image_gate
from gates.pause import AlreadyResolved, GateBus

# --- route_tuple and mask_from_stash ------------------------------------------------------

BLOCKER = object()


@pytest.mark.parametrize("chosen", range(MAX_ROUTES))
def test_route_tuple_puts_the_image_on_the_chosen_route_only(chosen):
    image = torch.rand(2, 3, 4, 3)
    routes = image_gate.route_tuple(chosen, image, BLOCKER, MAX_ROUTES)
    assert len(routes) == MAX_ROUTES
    assert routes[chosen] is image
    assert all(out is BLOCKER for index, out in enumerate(routes) if index != chosen)


def test_route_tuple_with_fewer_routes():
    assert image_gate.route_tuple(0, "img", BLOCKER, 1) == ("img",)
    assert image_gate.route_tuple(2, "img", BLOCKER, 3) == (BLOCKER, BLOCKER, "img")


def test_mask_from_stash_without_paint_is_zeros_of_the_image_size_for_every_frame():
    image = torch.rand(3, 5, 7, 3)
    mask = image_gate.mask_from_stash(None, image)
    assert mask.shape == (3, 5, 7) and mask.dtype == torch.float32
    assert not mask.any()


@pytest.mark.parametrize("kind", ["numpy (H,W)", "tensor (H,W)", "tensor (1,H,W)"])
def test_mask_from_stash_repeats_one_painted_mask_over_the_batch(kind):
    painted = np.zeros((5, 7), np.float32)
    painted[1:4, 2:6] = 1.0
    painted[0, 0] = 0.5
    stash = {"numpy (H,W)": painted, "tensor (H,W)": torch.from_numpy(painted),
             "tensor (1,H,W)": torch.from_numpy(painted)[None]}[kind]
    mask = image_gate.mask_from_stash(stash, torch.rand(4, 5, 7, 3))
    assert mask.shape == (4, 5, 7) and mask.dtype == torch.float32
    for frame in mask:
        np.testing.assert_array_equal(frame.numpy(), painted)
    mask[0, 0, 0] = 0.25  # frames are real copies, not views of one another
    assert float(mask[1, 0, 0]) == 0.5


def test_mask_from_stash_keeps_a_mask_per_frame():
    per_frame = torch.rand(3, 5, 7)
    mask = image_gate.mask_from_stash(per_frame, torch.rand(3, 5, 7, 3))
    torch.testing.assert_close(mask, per_frame)


def frames_of(*colours, height=4, width=6) -> torch.Tensor:
    """A batch with one flat RGB colour per frame, so frame order is visible in every output."""
    batch = torch.zeros((len(colours), height, width, 3), dtype=torch.float32)
    for index, colour in enumerate(colours):
        batch[index] = torch.tensor(colour, dtype=torch.float32) / 255.0
    return batch


@pytest.fixture
def fake(tmp_path):
    fake = FakeComfy(tmp_path, prompt_id="prompt-42")
    with fake.installed():
        yield fake


@pytest.fixture
def node():
    node = image_gate.ImageGate()
    node.bus = GateBus()  # its own bus: nothing shared with other tests or the pack's global one
    return node


def test_a_choice_sends_the_batch_down_that_route_and_blocks_the_others(fake, node):
    image = frames_of((255, 0, 0), (0, 255, 0), (0, 0, 255))
    running = RunningNode(node, routes=3, unique_id="9", image=image)
    entry = wait_for_pause(node.bus, running)
    node.bus.resolve(entry["token"], 2)
    running.join()
    assert running.error is None
    mask, *routes = running.result
    assert len(routes) == MAX_ROUTES
    assert routes[1] is image
    for index, out in enumerate(routes):
        if index != 1:
            assert isinstance(out, fake.ExecutionBlocker) and out.message is None  # silent: no error dialog
    assert mask.shape == (3, 4, 6) and not mask.any()


def test_a_painted_mask_comes_out_on_every_frame(fake, node):
    image = frames_of((10, 20, 30), (40, 50, 60))
    running = RunningNode(node, routes=2, unique_id="9", image=image)
    entry = wait_for_pause(node.bus, running)
    painted = np.zeros((4, 6), np.float32)
    painted[1:3, 0:4] = 1.0
    node.bus.resolve(entry["token"], 1, painted)
    running.join()
    mask, route_1, route_2 = running.result[:3]
    assert route_1 is image and isinstance(route_2, fake.ExecutionBlocker)
    assert mask.shape == (2, 4, 6)
    for frame in mask:
        np.testing.assert_array_equal(frame.numpy(), painted)


def test_the_pending_entry_and_preview_files_show_every_frame_then_disappear(fake, node):
    colours = [(255, 0, 0), (0, 128, 0), (1, 2, 250)]
    image = frames_of(*colours)
    running = RunningNode(node, routes=4, unique_id="17", image=image)
    entry = wait_for_pause(node.bus, running)
    assert entry["node_id"] == "17" and entry["routes"] == 4 and entry["prompt_id"] == "prompt-42"
    assert entry["source"] == SOURCE_INPUT and (entry["width"], entry["height"], entry["frames"]) == (6, 4, 3)
    assert len(entry["images"]) == 3
    assert [e["filename"] for e in entry["images"]] == fake.preview_files()
    for preview, colour in zip(entry["images"], colours, strict=True):
        assert preview["type"] == "temp" and preview["subfolder"] == ""
        with Image.open(os.path.join(fake.temp, preview["filename"])) as png:
            pixels = np.array(png.convert("RGB"))
        assert pixels.shape == (4, 6, 3) and (pixels == colour).all()
    node.bus.resolve(entry["token"], 4)
    running.join()
    assert fake.preview_files() == []


def test_events_are_the_preview_then_the_resolution(fake, node):
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 1, 1)))
    entry = wait_for_pause(node.bus, running)
    assert fake.events == [(EVENT_PREVIEW, entry)]
    node.bus.resolve(entry["token"], 2)
    running.join()
    assert [event for event, _ in fake.events] == [EVENT_PREVIEW, EVENT_RESOLVED]
    resolved = fake.events[1][1]
    assert resolved["token"] == entry["token"] and resolved["node_id"] == "3" and resolved["route"] == 2


def test_the_gates_cancel_ends_the_prompt_as_interrupted(fake, node):
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((5, 5, 5)))
    entry = wait_for_pause(node.bus, running)
    node.bus.cancel(entry["token"])
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    assert fake.events[-1] == (EVENT_RESOLVED, {"token": entry["token"], "node_id": "3", "route": None,
                                                "published": None, "publish_error": None, "timed_out": False})
    assert fake.preview_files() == [] and node.bus.pending() == []


def test_comfyuis_interrupt_flag_ends_the_wait_and_leaves_nothing_behind(fake, node):
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((5, 5, 5)))
    entry = wait_for_pause(node.bus, running)
    fake.interrupt_flag.set()  # what POST /interrupt does: set a flag the gate must poll
    running.join()
    assert isinstance(running.error, fake.InterruptProcessingException)
    assert fake.interrupt_checks >= 1
    assert node.bus.pending() == [] and fake.preview_files() == []
    assert fake.events[-1][0] == EVENT_RESOLVED and fake.events[-1][1]["route"] is None
    with pytest.raises(AlreadyResolved):
        node.bus.resolve(entry["token"], 1)  # a click after the interrupt decides nothing

    # The next run pauses and routes normally.
    again = RunningNode(node, routes=2, unique_id="3", image=frames_of((5, 5, 5)))
    second = wait_for_pause(node.bus, again)
    assert second["token"] != entry["token"]
    node.bus.resolve(second["token"], 1)
    again.join()
    assert again.error is None


def test_identical_runs_pause_every_time_with_a_fresh_token(fake, node):
    image = frames_of((9, 9, 9))
    tokens = []
    for route in (1, 2, 1):
        running = RunningNode(node, routes=2, unique_id="3", image=image)
        entry = wait_for_pause(node.bus, running)
        tokens.append(entry["token"])
        node.bus.resolve(entry["token"], route)
        running.join()
        assert running.result[route] is image
    assert len(set(tokens)) == 3
    assert math.isnan(image_gate.ImageGate.IS_CHANGED(routes=2, image=image))  # never served from the cache


def test_no_image_and_no_get_id_blocks_everything_and_says_so(fake, node):
    running = RunningNode(node, routes=2, unique_id="3", image=None, get_id="")
    running.join()
    assert running.error is None
    result = running.result["result"]
    assert len(result) == 1 + MAX_ROUTES
    assert all(isinstance(out, fake.ExecutionBlocker) and out.message is None for out in result)
    [note] = running.result["ui"][GATE_STATUS_UI_KEY]
    assert note["reason"] == "no_image" and "nothing to gate" in note["text"]
    assert fake.events == [(EVENT_GATE_STATUS, note)]  # no pause: the node only says why
    assert node.bus.pending() == [] and fake.preview_files() == []


def test_routes_beyond_the_node_setting_are_refused(fake, node):
    running = RunningNode(node, routes=1, unique_id="3", image=frames_of((9, 9, 9)))
    entry = wait_for_pause(node.bus, running)
    assert entry["routes"] == 1
    with pytest.raises(Exception, match="out of range"):
        node.bus.resolve(entry["token"], 2)
    node.bus.resolve(entry["token"], 1)
    running.join()
    assert running.error is None


def test_a_preview_that_cannot_be_written_fails_the_run_and_leaves_no_files(fake, node, monkeypatch):
    real_write = imaging.write_png
    calls = []

    def fail_on_the_second_frame(path, pixels, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(path, pixels, *args)

    monkeypatch.setattr(imaging, "write_png", fail_on_the_second_frame)
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    running.join()
    assert isinstance(running.error, OSError)
    assert fake.preview_files() == [] and node.bus.pending() == [] and fake.events == []


def test_the_prompt_id_is_none_outside_an_executing_context(tmp_path):
    fake = FakeComfy(tmp_path, prompt_id=None)
    node = image_gate.ImageGate()
    node.bus = GateBus()
    with fake.installed():
        running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 1, 1)))
        entry = wait_for_pause(node.bus, running)
        assert entry["prompt_id"] is None
        node.bus.resolve(entry["token"], 1)
        running.join()


# --- what ComfyUI shows of the node -------------------------------------------------------

def test_the_node_describes_itself():
    node_class = image_gate.ImageGate
    assert NODE_DISPLAY_NAME == "Image Gate (Manual Router)"
    assert CATEGORY.startswith("Datasete") and node_class.CATEGORY == CATEGORY
    assert node_class.DESCRIPTION
    assert node_class.RETURN_TYPES == ("MASK",) + ("IMAGE",) * MAX_ROUTES
    assert node_class.RETURN_NAMES == ("mask",) + tuple(f"route_{n}" for n in range(1, MAX_ROUTES + 1))
    assert len(node_class.OUTPUT_TOOLTIPS) == len(node_class.RETURN_TYPES) and all(node_class.OUTPUT_TOOLTIPS)
    inputs = node_class.INPUT_TYPES()
    assert inputs["required"]["routes"] == ("INT", inputs["required"]["routes"][1])
    routes_options = inputs["required"]["routes"][1]
    assert (routes_options["default"], routes_options["min"], routes_options["max"]) == (2, 1, MAX_ROUTES)
    assert MAX_ROUTES >= 4
    assert inputs["optional"]["image"][0] == "IMAGE"
    assert inputs["hidden"]["unique_id"] == "UNIQUE_ID"
    for section in ("required", "optional"):
        for name, (_kind, options) in inputs[section].items():
            assert options.get("tooltip"), f"input {name} has no tooltip"
