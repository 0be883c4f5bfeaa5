"""The disk image bus in a real ComfyUI: publish in one prompt, get in the next, across a restart.

Prompts use core nodes only (EmptyImage, ImageBatch, SaveImage, MaskToImage, PrimitiveString), so
what a gate routed can be checked pixel by pixel in the output folder.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid

import numpy as np
import pytest
from bus_testkit import HOSTILE_IDS, snapshot
from comfy_server import REPO_ROOT
from PIL import Image

from gates.constants import NODE_ID, ROUTE_BUS_LIST, ROUTE_CHOOSE

pytestmark = pytest.mark.comfy

WIDTH, HEIGHT = 24, 16
GATE = "10"
SETTLE_SECONDS = 60.0


# --- prompts -------------------------------------------------------------------------------

def rgb(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def images(prompt: dict, colours: list[int]) -> list:
    """EmptyImage per colour, batched in order with ImageBatch; the link to the batch."""
    for index, colour in enumerate(colours):
        prompt[str(1 + index)] = {"class_type": "EmptyImage",
                                  "inputs": {"width": WIDTH, "height": HEIGHT, "batch_size": 1, "color": colour}}
    source = ["1", 0]
    for index in range(1, len(colours)):
        prompt[str(50 + index)] = {"class_type": "ImageBatch",
                                   "inputs": {"image1": source, "image2": [str(1 + index), 0]}}
        source = [str(50 + index), 0]
    return source


def gate_prompt(tag: str, colours: list[int] | None = None, send_id="", get_id="") -> dict:
    """[images ->] gate -> route 1 -> SaveImage "<tag>_route1", mask -> MaskToImage -> SaveImage "<tag>_mask".

    Route 2 goes to SaveImage "<tag>_route2", so what did not pass is seen not to run.
    """
    prompt: dict = {}
    inputs: dict = {"routes": 2, "send_id": send_id, "get_id": get_id}
    if colours:
        inputs["image"] = images(prompt, colours)
    prompt[GATE] = {"class_type": NODE_ID, "inputs": inputs}
    prompt["21"] = {"class_type": "SaveImage", "inputs": {"images": [GATE, 1], "filename_prefix": f"{tag}_route1"}}
    prompt["22"] = {"class_type": "SaveImage", "inputs": {"images": [GATE, 2], "filename_prefix": f"{tag}_route2"}}
    prompt["30"] = {"class_type": "MaskToImage", "inputs": {"mask": [GATE, 0]}}
    prompt["31"] = {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": f"{tag}_mask"}}
    return prompt


def new_tag() -> str:
    return "bus" + uuid.uuid4().hex[:10]


def new_slot() -> str:
    return "slot_" + uuid.uuid4().hex[:8]


def mask_payload(gray: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(gray, "L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def stripes() -> np.ndarray:
    """A mask that is not flat, so a mask from anywhere else cannot pass for it."""
    gray = np.zeros((HEIGHT, WIDTH), np.uint8)
    gray[:, ::3] = 255
    gray[::4, :] = 128
    return gray


# --- running ---------------------------------------------------------------------------------

def pause_of(server, prompt_id: str) -> dict:
    return server.wait_pending(1, timeout=SETTLE_SECONDS, prompt_id=prompt_id)[0]


def choose(server, token: str, route: int = 1, mask: np.ndarray | None = None) -> None:
    body = {"token": token, "route": route}
    if mask is not None:
        body["mask"] = mask_payload(mask)
    status, answer = server.post_json(ROUTE_CHOOSE, body)
    assert status == 200, answer


def publish(server, slot: str, colours: list[int], mask: np.ndarray | None = None) -> dict:
    """Run a prompt whose gate passes `colours` on route 1 with `mask` painted and sends them to `slot`."""
    prompt_id = server.queue(gate_prompt(new_tag(), colours, send_id=slot))
    choose(server, pause_of(server, prompt_id)["token"], 1, mask)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "success", history["status"]
    return history


def saved(server, history: dict, node_id: str) -> list[np.ndarray]:
    """What a SaveImage node wrote, frame by frame in batch order, as (H,W,3) uint8."""
    frames = []
    for entry in history["outputs"].get(node_id, {}).get("images", []):
        with Image.open(server.output_dir / entry["subfolder"] / entry["filename"]) as png:
            frames.append(np.array(png.convert("RGB")))
    return frames


def slot_pixels(server, slot: str, name: str, mode: str = "RGB") -> np.ndarray:
    with Image.open(server.bus_dir / slot / name) as png:
        return np.array(png.convert(mode))


def flat(colour: int) -> np.ndarray:
    return np.broadcast_to(np.array(rgb(colour), np.uint8), (HEIGHT, WIDTH, 3))


def execution_error(history: dict) -> str:
    for kind, data in history.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data.get("exception_message", "")
    return ""


def disk_state(server) -> dict:
    return {"input": snapshot(server.input_dir), "output": snapshot(server.output_dir)}


# --- publish and get -------------------------------------------------------------------------

def test_publish_in_one_prompt_and_get_in_the_next(server):
    slot, painted = new_slot(), stripes()
    publish(server, slot, [0x3366CC], painted)
    assert np.array_equal(slot_pixels(server, slot, "image.png"), flat(0x3366CC))
    assert np.array_equal(slot_pixels(server, slot, "mask.png", "L"), painted)
    assert slot in server.get_json(ROUTE_BUS_LIST)["ids"]
    assert slot in server.get_json("/api" + ROUTE_BUS_LIST)["ids"]

    tag = new_tag()
    prompt_id = server.queue(gate_prompt(tag, None, get_id=slot))
    entry = pause_of(server, prompt_id)
    assert entry["source"] == "bus" and entry["slot"] == slot
    assert (entry["width"], entry["height"], entry["frames"]) == (WIDTH, HEIGHT, 1)
    choose(server, entry["token"], 1)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "success"
    [routed] = saved(server, history, "21")
    assert np.array_equal(routed, flat(0x3366CC))
    [mask] = saved(server, history, "31")
    assert np.array_equal(mask[..., 0], painted)
    assert saved(server, history, "22") == []  # route 2 was blocked


def test_a_painted_mask_overrides_the_loaded_one(server):
    slot, published, repainted = new_slot(), stripes(), 255 - stripes()
    publish(server, slot, [0x10A040], published)
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    choose(server, pause_of(server, prompt_id)["token"], 1, repainted)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    [mask] = saved(server, history, "31")
    assert np.array_equal(mask[..., 0], repainted)
    assert np.array_equal(slot_pixels(server, slot, "mask.png", "L"), published)  # the getter did not publish


def test_the_getter_can_publish_to_a_slot_of_its_own(server):
    source, copy = new_slot(), new_slot()
    publish(server, source, [0x202020])
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=source, send_id=copy))
    choose(server, pause_of(server, prompt_id)["token"], 1)  # route_1 publishes (send_on default)
    server.wait_done(prompt_id, SETTLE_SECONDS)
    assert np.array_equal(slot_pixels(server, copy, "image.png"), flat(0x202020))


def test_a_batch_of_three_distinct_frames_round_trips_in_order(server):
    slot, colours = new_slot(), [0xFF0000, 0x00FF00, 0x0000FF]
    publish(server, slot, colours)
    assert sorted(p.name for p in (server.bus_dir / slot).iterdir()) == [
        "frame_0001.png", "frame_0002.png", "image.png", "mask.png", "slot.json"]
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    entry = pause_of(server, prompt_id)
    assert entry["frames"] == 3 and len(entry["images"]) == 3
    choose(server, entry["token"], 1)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    routed = saved(server, history, "21")
    assert len(routed) == 3
    for frame, colour in zip(routed, colours, strict=True):
        assert np.array_equal(frame, flat(colour))


def test_a_wired_image_wins_over_get_id(server):
    slot = new_slot()
    publish(server, slot, [0x111111])
    prompt_id = server.queue(gate_prompt(new_tag(), [0x999999], get_id=slot))
    entry = pause_of(server, prompt_id)
    assert entry["source"] == "input" and entry["slot"] is None
    choose(server, entry["token"], 1)
    [routed] = saved(server, server.wait_done(prompt_id, SETTLE_SECONDS), "21")
    assert np.array_equal(routed, flat(0x999999))


def test_get_after_a_full_restart_on_the_same_base_directory(fresh_comfy):
    server = fresh_comfy.start()
    slot, painted = "restart_point", stripes()
    publish(server, slot, [0x804020, 0x208040], painted)
    server.stop()

    server.start()
    assert slot in server.get_json(ROUTE_BUS_LIST)["ids"]
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    entry = pause_of(server, prompt_id)
    assert entry["source"] == "bus" and entry["slot"] == slot and entry["frames"] == 2
    choose(server, entry["token"], 1)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    routed = saved(server, history, "21")
    assert [f.tolist() for f in routed] == [flat(0x804020).tolist(), flat(0x208040).tolist()]
    masks = saved(server, history, "31")
    assert len(masks) == 2 and all(np.array_equal(m[..., 0], painted) for m in masks)


def test_a_crash_leftover_is_swept_after_a_restart(fresh_comfy):
    """Swept when the pack loads or, at the latest, at the first use of the bus; the slots stay whole."""
    server = fresh_comfy.start()
    publish(server, "kept", [0x0A0B0C])
    server.stop()
    leftover = server.bus_dir / ".staging-new-999999999-00000000-0123456789ab-kept"
    leftover.mkdir()
    (leftover / "image.png").write_bytes(b"half a publish")
    server.start()
    publish(server, "other", [0x0C0B0A])
    assert not leftover.exists()
    assert sorted(p.name for p in server.bus_dir.iterdir()) == ["kept", "other"]
    assert np.array_equal(slot_pixels(server, "kept", "image.png"), flat(0x0A0B0C))


def test_a_slot_put_from_the_command_line_is_gated_by_the_running_server(server, tmp_path):
    """python -m gates.bus writes into the server's input folder; the next run gets it, no restart needed."""
    import subprocess
    import sys

    slot, colours = new_slot(), [0xC08040, 0x4080C0]
    for index, colour in enumerate(colours):
        Image.new("RGB", (WIDTH, HEIGHT), rgb(colour)).save(tmp_path / f"f{index}.png")
    Image.fromarray(stripes(), "L").save(tmp_path / "mask.png")
    done = subprocess.run([sys.executable, "-m", "gates.bus", "--input-dir", str(server.input_dir), "put", slot,
                           str(tmp_path / "f0.png"), str(tmp_path / "f1.png"), "--mask", str(tmp_path / "mask.png")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert slot in server.get_json(ROUTE_BUS_LIST)["ids"]
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    entry = pause_of(server, prompt_id)
    assert entry["source"] == "bus" and entry["frames"] == 2
    choose(server, entry["token"], 1)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert [f.tolist() for f in saved(server, history, "21")] == [flat(c).tolist() for c in colours]
    assert all(np.array_equal(m[..., 0], stripes()) for m in saved(server, history, "31"))


# --- no-ops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("get_id", ["", "no_such_slot"])
def test_no_image_and_an_empty_or_unknown_get_id_blocks_and_says_so(server, get_id):
    before = disk_state(server)
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=get_id))
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "success"
    # Nothing behind the gate ran; the gate's own UI output says why.
    assert list(history["outputs"]) == [GATE]
    [status] = history["outputs"][GATE]["datasete_gate_status"]
    assert status["reason"] == ("no_slot" if get_id else "no_image") and "nothing to gate" in status["text"]
    assert server.pending() == []
    assert disk_state(server) == before


def test_a_muted_upstream_leaves_image_absent_so_the_gate_gets_from_the_bus(server):
    """The frontend leaves a muted (mode 2) node out of the prompt and drops its links: the gate
    then has no image input at all, though the node that would feed it is in the workflow."""
    slot = new_slot()
    publish(server, slot, [0x445566])
    prompt = gate_prompt(new_tag(), [0xFFFFFF], get_id=slot)
    del prompt[GATE]["inputs"]["image"]
    del prompt["1"]  # the muted generator
    prompt_id = server.queue(prompt)
    entry = pause_of(server, prompt_id)
    assert entry["source"] == "bus" and entry["slot"] == slot
    choose(server, entry["token"], 1)
    [routed] = saved(server, server.wait_done(prompt_id, SETTLE_SECONDS), "21")
    assert np.array_equal(routed, flat(0x445566))


def test_sending_and_getting_one_id_in_one_prompt_logs_a_warning(server):
    slot = "race_" + uuid.uuid4().hex[:6]
    prompt = gate_prompt(new_tag(), [0x123456], send_id=slot)
    prompt["40"] = {"class_type": NODE_ID, "inputs": {"routes": 1, "get_id": slot}}
    prompt["41"] = {"class_type": "SaveImage", "inputs": {"images": ["40", 1], "filename_prefix": new_tag()}}
    prompt_id = server.queue(prompt)
    deadline = time.monotonic() + SETTLE_SECONDS
    while server.history(prompt_id) is None and time.monotonic() < deadline:
        for entry in server.pending():
            if entry["prompt_id"] == prompt_id:
                choose(server, entry["token"], 1)
        time.sleep(0.05)
    assert server.wait_done(prompt_id, SETTLE_SECONDS)["status"]["status_str"] == "success"
    log = server.log_path.read_text(errors="replace")
    assert f"slot {slot!r} is both sent (send_id) and got (get_id) in one prompt" in log
    assert log.count(f"slot {slot!r} is both sent") == 1


# --- hostile ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["send_id", "get_id"])
def test_every_hostile_id_is_refused_when_queued_and_touches_nothing(server, field):
    """A bad id typed into the node: /prompt refuses the prompt, naming the id, before anything runs."""
    before = disk_state(server)
    for template in HOSTILE_IDS:
        bus_id = template.replace("{outside}", str(server.input_dir / "planted"))
        colours = [0x777777] if field == "send_id" else None
        status, answer = server.post_json("/prompt", {"prompt": gate_prompt(new_tag(), colours, **{field: bus_id}),
                                                      "client_id": "t"})
        assert status == 400, (bus_id, answer)
        details = [error["details"] for error in answer["node_errors"][GATE]["errors"]]
        assert any(field in d and repr(bus_id) in d for d in details), (bus_id, details)
    assert server.pending() == [] and server.queue_remaining() == 0
    assert disk_state(server) == before


@pytest.mark.parametrize("field", ["send_id", "get_id"])
@pytest.mark.parametrize("bus_id", ["..", "../planted", "{abs}", "a/b", "x" * 65, "café", "CON", "a\x00b"])
def test_a_hostile_id_that_arrives_through_a_link_fails_the_run_and_touches_nothing(server, field, bus_id):
    """An id from another node (here a String primitive) is only known when the gate runs: the run fails
    before any pause, naming the id, and nothing upstream is saved either since the gate fails first."""
    bus_id = bus_id.replace("{abs}", str(server.input_dir / "planted"))
    prompt = gate_prompt(new_tag(), [0x777777] if field == "send_id" else None)
    prompt["60"] = {"class_type": "PrimitiveString", "inputs": {"value": bus_id}}
    prompt[GATE]["inputs"][field] = ["60", 0]
    before = disk_state(server)
    prompt_id = server.queue(prompt)
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "error"
    message = execution_error(history)
    assert f"{field}: invalid slot id {bus_id!r}" in message
    assert server.pending() == []
    assert disk_state(server) == before


def test_a_corrupt_slot_fails_the_run_naming_it(server):
    slot = new_slot()
    publish(server, slot, [0x010203, 0x030201])
    (server.bus_dir / slot / "frame_0001.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "error"
    assert f"slot {slot!r}" in execution_error(history) and "frame_0001.png" in execution_error(history)
    assert history["outputs"] == {} and server.pending() == []


# --- the example workflow, through the real frontend ------------------------------------------

EXAMPLE = REPO_ROOT / "example_workflows" / "gate_bus_restart.json"


def prompt_from_page(page) -> dict:
    """The API prompt the frontend builds from the graph on screen (muted and bypassed nodes handled by it)."""
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def set_modes(page, modes: dict[int, int]) -> None:
    page.evaluate("""modes => {
        for (const [id, mode] of Object.entries(modes)) window.app.graph.getNodeById(Number(id)).mode = mode;
        window.app.graph.setDirtyCanvas(true, true);
    }""", {str(k): v for k, v in modes.items()})


def close_to(pixels: np.ndarray, expected: np.ndarray) -> bool:
    """Equal within 1: SaveImage truncates 255 * x, so an inverted 8-bit value can land one below."""
    return pixels.shape == expected.shape and int(np.abs(pixels.astype(int) - expected).max()) <= 1


def run_from_page(page, server, gate_id: str, expect_source: str) -> dict:
    """Queue the graph as the Run button does, pass its one gate on route 1; the finished history."""
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        entries = [e for e in server.pending() if e["node_id"] == gate_id]
        if entries:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"gate {gate_id} did not pause:\n{server.log_tail()}")
    assert entries[0]["source"] == expect_source
    if expect_source == "bus":
        assert entries[0]["slot"] == "restart_point"
    choose(server, entries[0]["token"], 1)
    history = server.wait_done(entries[0]["prompt_id"], SETTLE_SECONDS)
    assert history["status"]["status_str"] == "success", history["status"]
    return history


@pytest.mark.browser
def test_the_example_workflow_publishes_then_restarts_from_the_gate_point(browser_server, chromium):
    """In every frontend of the matrix: the shipped workflow loads, converts and runs the same."""
    from browser_helpers import open_comfy

    from gates import imagebus

    server = browser_server
    imagebus.delete_id(server.bus_dir, "restart_point")
    workflow = json.loads(EXAMPLE.read_text())
    colour = next(n for n in workflow["nodes"] if n["id"] == 1)["widgets_values"][3]
    inverted = np.broadcast_to(255 - np.array(rgb(colour), np.uint8), (576, 768, 3))  # refine: x1.5, invert
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = open_comfy(context, server)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
        assert page.evaluate("() => window.app.graph.nodes.length") == len(workflow["nodes"])

        # Normal run: the restart path is muted, the gate gets its image from Generate and publishes.
        prompt = prompt_from_page(page)
        assert sorted(prompt, key=int) == ["1", "2", "3", "4", "5", "6"]
        assert prompt["2"]["inputs"]["image"] == ["1", 0]
        assert (prompt["2"]["inputs"]["send_id"], prompt["2"]["inputs"]["get_id"]) == ("restart_point",) * 2
        history = run_from_page(page, server, "2", "input")
        assert close_to(saved(server, history, "5")[0], inverted)
        assert "restart_point" in server.get_json(ROUTE_BUS_LIST)["ids"]

        # Mute or bypass Generate: the gate's image is absent, so it restarts from the slot.
        for mode in (4, 2):
            set_modes(page, {1: mode})
            prompt = prompt_from_page(page)
            assert "1" not in prompt and "image" not in prompt["2"]["inputs"]
        history = run_from_page(page, server, "2", "bus")
        assert close_to(saved(server, history, "5")[0], inverted)
        assert saved(server, history, "6") == []

        # The separate restart path, with the normal row muted.
        set_modes(page, {**{n: 2 for n in range(1, 7)}, **{n: 0 for n in range(7, 11)}})
        prompt = prompt_from_page(page)
        assert sorted(prompt, key=int) == ["7", "8", "9", "10"]
        assert "image" not in prompt["7"]["inputs"] and prompt["7"]["inputs"]["get_id"] == "restart_point"
        history = run_from_page(page, server, "7", "bus")
        assert close_to(saved(server, history, "10")[0], inverted)
        assert not [e for e in errors if "datasete" in e.lower() or "dsg" in e.lower()]
    finally:
        context.close()
