"""Timeouts and no-silent outcomes in a real ComfyUI: every gate kind times out with each on_timeout
outcome class, the pending entry's deadline, touch, the no-slot message and a publish that fails on a
read-only gate_bus folder but still routes the image."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import numpy as np
import pytest
from comfy_server import status_messages
from test_comfy_gate import (
    GATE,
    GREEN,
    RED,
    assert_flat,
    assert_only_route_ran,
    choose,
    gate_prompt,
    new_tag,
    rgb,
    run_to_pause,
    saved_files,
    saved_pixels,
)

from gates import slots
from gates.constants import (
    EVENT_DEADLINE,
    EVENT_GATE_STATUS,
    EVENT_RESOLVED,
    GATE_STATUS_UI_KEY,
    GRID_NODE_ID,
    ROUTE_TOUCH,
    TEXT_GATE_NODE_ID,
)

pytestmark = pytest.mark.comfy

def timed_gate_prompt(tag, timeout, on_timeout, routes=3, **inputs):
    prompt = gate_prompt(tag, routes=routes, colours=(RED,))
    prompt[GATE]["inputs"].update({"timeout": timeout, "on_timeout": on_timeout, **inputs})
    return prompt


def gate_status(history) -> list[dict]:
    return history["outputs"].get(GATE, {}).get(GATE_STATUS_UI_KEY, [])


# --- the Image Gate ---------------------------------------------------------------------------------

def test_the_pending_entry_has_a_deadline_and_cancel_on_timeout_ends_the_run_as_interrupted(server, events):
    tag = new_tag()
    before = time.time()
    prompt_id, entry = run_to_pause(server, timed_gate_prompt(tag, 2, "cancel"), events.client_id)
    assert entry["timeout"] == 2 and before + 2 <= entry["deadline"] <= time.time() + 2
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    resolved = events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])
    assert resolved["timed_out"] is True and resolved["route"] is None
    status = events.wait_for(EVENT_GATE_STATUS, lambda d: d["node_id"] == GATE and d["prompt_id"] == prompt_id)
    assert status["reason"] == "timed_out" and status["on_timeout"] == "cancel"
    for what in ("route1", "route2", "route3", "mask"):
        assert saved_files(server, tag, what) == []


def test_a_gate_without_a_timeout_has_no_deadline(server):
    prompt_id, entry = run_to_pause(server, gate_prompt(new_tag(), routes=2))
    assert entry["deadline"] is None and entry["timeout"] == 0
    assert choose(server, entry["token"], 1)[0] == 200
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"


def test_block_on_timeout_blocks_every_output_and_the_run_succeeds(server, events):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, timed_gate_prompt(tag, 1, "block"), events.client_id)
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", history["status"]
    for what in ("route1", "route2", "route3", "mask"):
        assert saved_files(server, tag, what) == []
    [status] = gate_status(history)
    assert status["reason"] == "timed_out" and status["on_timeout"] == "block"
    assert events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])["timed_out"] is True


def test_route_on_timeout_sends_the_image_down_that_route(server):
    tag = new_tag()
    prompt_id, _entry = run_to_pause(server, timed_gate_prompt(tag, 1, "route_2"))
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success"
    assert_only_route_ran(server, history, tag, chosen=2, routes=3)
    [pixels] = saved_pixels(server, history, "22")
    assert_flat(pixels, rgb(RED))


def test_a_route_beyond_routes_is_refused_when_the_prompt_is_queued(server):
    status, answer = server.post_json("/prompt", {"prompt": timed_gate_prompt(new_tag(), 5, "route_4", routes=3)})
    assert status == 400, answer
    assert "route_4" in str(answer["node_errors"][GATE])
    assert server.pending() == []


def test_touch_restarts_the_countdown_and_every_tab_hears_it(server, events):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, timed_gate_prompt(tag, 3, "route_1"), events.client_id)
    time.sleep(2)
    status, answer = server.post_json("/api" + ROUTE_TOUCH, {"token": entry["token"]})
    assert status == 200 and answer["deadline"] >= entry["deadline"] + 1.5
    heard = events.wait_for(EVENT_DEADLINE, lambda d: d["token"] == entry["token"])
    assert heard == {"token": entry["token"], "node_id": GATE, "deadline": answer["deadline"]}
    [pending] = server.pending()
    assert pending["deadline"] == answer["deadline"]
    time.sleep(max(0.0, entry["deadline"] - time.time()) + 0.5)
    assert [e["token"] for e in server.pending()] == [entry["token"]], "the first deadline passed but it had moved"
    history = server.wait_done(prompt_id)
    assert_only_route_ran(server, history, tag, chosen=1, routes=3)
    assert server.post_json(ROUTE_TOUCH, {"token": entry["token"]})[0] == 409
    status, answer = server.post_json(ROUTE_TOUCH, {"token": "no-such-token"})
    assert status == 404 and "no-such-token" in answer["error"]
    status, answer = server.post_json(ROUTE_TOUCH, {"nothing": 1})
    assert status == 400 and "token" in answer["error"]


def test_a_get_id_naming_no_slot_blocks_succeeds_and_says_so(server, events):
    tag = new_tag()
    prompt = gate_prompt(tag, routes=2, colours=None)
    prompt[GATE]["inputs"]["get_id"] = "never_published_" + tag
    prompt_id = server.queue(prompt, events.client_id)
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success"
    [status] = gate_status(history)
    assert status["text"] == f"slot 'never_published_{tag}' not found: nothing to gate"
    assert events.wait_for(EVENT_GATE_STATUS, lambda d: d["prompt_id"] == prompt_id)["reason"] == "no_slot"
    for what in ("route1", "route2", "mask"):
        assert saved_files(server, tag, what) == []


@contextlib.contextmanager
def read_only(folder):
    """`folder` made unwritable: chmod, and for root (whom modes do not stop) the immutable flag."""
    mode = folder.stat().st_mode
    os.chmod(folder, 0o555)
    flagged = False
    try:
        probe = folder / ".probe"
        try:
            probe.mkdir()
            probe.rmdir()
            flagged = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not flagged:
                pytest.skip("cannot make a folder read-only here (root, and no chattr +i)")
            with contextlib.suppress(OSError):
                probe.mkdir()
                probe.rmdir()
                pytest.skip("cannot make a folder read-only here")
        except PermissionError:
            pass
        yield
    finally:
        if flagged:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, mode)


def test_a_publish_that_fails_on_a_read_only_gate_bus_still_routes_the_image(server, events):
    slot = "ro_" + new_tag()
    first = gate_prompt(new_tag(), routes=2, colours=(GREEN,))
    first[GATE]["inputs"]["send_id"] = slot
    prompt_id, entry = run_to_pause(server, first)
    assert choose(server, entry["token"], 1)[0] == 200
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"
    assert (server.bus_dir / slot).is_dir()

    tag = new_tag()
    second = gate_prompt(tag, routes=2, colours=(RED,))
    second[GATE]["inputs"]["send_id"] = slot
    with read_only(server.bus_dir):
        prompt_id, entry = run_to_pause(server, second, events.client_id)
        assert choose(server, entry["token"], 1)[0] == 200
        history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", history["status"]
    assert_only_route_ran(server, history, tag, chosen=1, routes=2)
    [pixels] = saved_pixels(server, history, "21")
    assert_flat(pixels, rgb(RED))  # the person's choice stands
    [status] = gate_status(history)
    assert status["reason"] == "publish_failed" and slot in status["text"]
    resolved = events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])
    assert resolved["published"] is None and slot in resolved["publish_error"]
    image, _mask = slots.bus_load(str(server.bus_dir), slot)
    np.testing.assert_array_equal((image[0].numpy() * 255).round().astype(np.uint8)[0, 0], rgb(GREEN))


# --- the Grid Pool Gate and the Text Gate -----------------------------------------------------------

def grid_prompt(tag, on_timeout, timeout=1):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 3, "color": GREEN}},
        "2": {"class_type": GRID_NODE_ID, "inputs": {"pool": "", "page_size": 8, "images": ["1", 0],
                                                     "timeout": timeout, "on_timeout": on_timeout}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"{tag}_kept"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 2], "filename_prefix": f"{tag}_rejected"}},
    }


@pytest.mark.parametrize("on_timeout, kept, rejected, status", [
    ("keep_all", 3, 0, "success"), ("keep_none", 0, 3, "success"), ("block", 0, 0, "success"),
    ("cancel", 0, 0, "error")])
def test_the_grid_times_out(server, events, on_timeout, kept, rejected, status):
    tag = new_tag()
    prompt_id = server.queue(grid_prompt(tag, on_timeout), events.client_id)
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    assert entry["kind"] == "grid" and entry["timeout"] == 1 and entry["deadline"] is not None
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == status
    assert len(saved_files(server, tag, "kept")) == kept
    assert len(saved_files(server, tag, "rejected")) == rejected
    resolved = events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])
    assert resolved["timed_out"] is True and resolved["kind"] == "grid"


def text_prompt(tag, on_timeout, timeout=1):
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": RED}},
        "2": {"class_type": TEXT_GATE_NODE_ID, "inputs": {"text": "a red square", "image": ["1", 0],
                                                          "timeout": timeout, "on_timeout": on_timeout}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 1], "filename_prefix": f"{tag}_passed"}},
    }


@pytest.mark.parametrize("on_timeout, passed, status", [
    ("approve", 1, "success"), ("reject", 0, "success"), ("block", 0, "success"), ("cancel", 0, "error")])
def test_the_text_gate_times_out(server, events, on_timeout, passed, status):
    tag = new_tag()
    prompt_id = server.queue(text_prompt(tag, on_timeout), events.client_id)
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    assert entry["kind"] == "text" and entry["timeout"] == 1
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == status
    assert len(saved_files(server, tag, "passed")) == passed
    if on_timeout == "approve":
        assert history["outputs"]["2"]["text"] == ["a red square"]
    resolved = events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])
    assert resolved["timed_out"] is True and resolved["kind"] == "text"
