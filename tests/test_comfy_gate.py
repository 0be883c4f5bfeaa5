"""Image Gate in a real ComfyUI: prompts through POST /prompt, the gate's HTTP routes, /history and the websocket.

Only core nodes that need no model feed and read the gate (EmptyImage, ImageBatch, SaveImage,
MaskToImage), so every route's output can be checked pixel by pixel on disk.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
import time
import uuid

import numpy as np
import pytest
from comfy_server import status_messages
from PIL import Image

from gates.constants import (
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    MAX_REQUEST_BYTES,
    MAX_ROUTES,
    NODE_ID,
    PREVIEW_PREFIX,
    ROUTE_CANCEL,
    ROUTE_CHOOSE,
    ROUTE_PENDING,
)

pytestmark = pytest.mark.comfy

WIDTH, HEIGHT = 40, 24
RED, GREEN, BLUE, GREY = 0xFF0000, 0x00FF00, 0x0000FF, 0x808080
GATE = "10"
SETTLE_SECONDS = 60.0


# --- building prompts ----------------------------------------------------------------------

def rgb(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def empty_image(colour: int) -> dict:
    return {"class_type": "EmptyImage",
            "inputs": {"width": WIDTH, "height": HEIGHT, "batch_size": 1, "color": colour}}


def gate_prompt(tag: str, routes: int = 3, colours: tuple[int, ...] | None = (RED,)) -> dict:
    """Image(s) -> gate -> one SaveImage per route ("<tag>_route<n>") and mask -> image -> SaveImage ("<tag>_mask").

    colours=None wires no image into the gate. Several colours are batched in order with ImageBatch.
    """
    prompt: dict = {}
    gate_inputs: dict = {"routes": routes}
    if colours:
        for index, colour in enumerate(colours):
            prompt[str(1 + index)] = empty_image(colour)
        source = ["1", 0]
        for index in range(1, len(colours)):
            batch_id = str(50 + index)
            prompt[batch_id] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [str(1 + index), 0]}}
            source = [batch_id, 0]
        gate_inputs["image"] = source
    prompt[GATE] = {"class_type": NODE_ID, "inputs": gate_inputs}
    for route in range(1, routes + 1):
        prompt[str(20 + route)] = {"class_type": "SaveImage",
                                   "inputs": {"images": [GATE, route], "filename_prefix": f"{tag}_route{route}"}}
    prompt["30"] = {"class_type": "MaskToImage", "inputs": {"mask": [GATE, 0]}}
    prompt["31"] = {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": f"{tag}_mask"}}
    return prompt


def new_tag() -> str:
    return "gate" + uuid.uuid4().hex[:10]


# --- reading what ran --------------------------------------------------------------------

def saved_files(server, tag: str, what: str) -> list:
    return sorted(server.output_dir.glob(f"{tag}_{what}_*.png"))


def saved_pixels(server, history: dict, node_id: str) -> list[np.ndarray]:
    """The images a SaveImage node wrote, in batch order, as (H,W,3) uint8 arrays."""
    frames = []
    for entry in history["outputs"][node_id]["images"]:
        path = server.output_dir / entry["subfolder"] / entry["filename"]
        with Image.open(path) as png:
            frames.append(np.array(png.convert("RGB")))
    return frames


def assert_flat(pixels: np.ndarray, colour: tuple[int, int, int]):
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    found = np.unique(pixels.reshape(-1, 3), axis=0)
    assert (pixels == np.array(colour, np.uint8)).all(), f"expected {colour}, got {found}"


def assert_only_route_ran(server, history: dict, tag: str, chosen: int, routes: int):
    for route in range(1, routes + 1):
        files = saved_files(server, tag, f"route{route}")
        if route == chosen:
            assert files, f"route {route} was chosen but its SaveImage wrote nothing"
            assert str(20 + route) in history["outputs"]
        else:
            assert files == [], f"route {route} was not chosen but wrote {files}"
            assert str(20 + route) not in history["outputs"]


def preview_files(server) -> list:
    return sorted(server.temp_dir.glob(f"{PREVIEW_PREFIX}*")) if server.temp_dir.exists() else []


def mask_data_url(alpha: np.ndarray) -> str:
    rgba = np.zeros(alpha.shape + (4,), np.uint8)
    rgba[..., 0] = 255  # the brush colour a canvas would export; only alpha is the mask
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()




def choose(server, token: str, route: int, **extra):
    return server.post_json(ROUTE_CHOOSE, {"token": token, "route": route, **extra})


def run_to_pause(server, prompt: dict, client_id: str | None = None) -> tuple[str, dict]:
    prompt_id = server.queue(prompt, client_id)
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    return prompt_id, entry


# --- routing -----------------------------------------------------------------------------

def test_a_choice_without_a_mask_routes_the_image_and_the_mask_is_black(server):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=3, colours=(RED,)))
    assert entry["node_id"] == GATE and entry["routes"] == 3 and entry["source"] == "input"
    assert (entry["width"], entry["height"], entry["frames"]) == (WIDTH, HEIGHT, 1)
    assert choose(server, entry["token"], 2) == (200, {"ok": True, "token": entry["token"], "route": 2})
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", history["status"]
    assert_only_route_ran(server, history, tag, chosen=2, routes=3)
    [route_2] = saved_pixels(server, history, "22")
    assert_flat(route_2, rgb(RED))
    [mask] = saved_pixels(server, history, "31")
    assert_flat(mask, (0, 0, 0))


def test_a_choice_with_a_mask_routes_the_image_and_outputs_the_painted_mask(server):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2, colours=(BLUE,)))
    alpha = np.zeros((HEIGHT, WIDTH), np.uint8)
    alpha[5:15, 10:30] = 255  # a painted block
    alpha[0, 0] = 128  # and one half-painted pixel
    assert choose(server, entry["token"], 1, mask=mask_data_url(alpha))[0] == 200
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", history["status"]
    assert_only_route_ran(server, history, tag, chosen=1, routes=2)
    [route_1] = saved_pixels(server, history, "21")
    assert_flat(route_1, rgb(BLUE))
    [mask] = saved_pixels(server, history, "31")
    np.testing.assert_array_equal(mask, np.repeat(alpha[..., None], 3, axis=2))


def test_every_route_can_be_chosen(server):
    for chosen in (1, MAX_ROUTES):
        tag = new_tag()
        prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=MAX_ROUTES, colours=(GREEN,)))
        assert choose(server, entry["token"], chosen)[0] == 200
        history = server.wait_done(prompt_id)
        assert_only_route_ran(server, history, tag, chosen=chosen, routes=MAX_ROUTES)
        [pixels] = saved_pixels(server, history, str(20 + chosen))
        assert_flat(pixels, rgb(GREEN))


def test_an_identical_requeue_pauses_again_with_a_fresh_token(server):
    tag = new_tag()
    prompt = gate_prompt(tag, routes=3, colours=(GREY,))
    first_id, first = run_to_pause(server, prompt)
    assert choose(server, first["token"], 1)[0] == 200
    assert server.wait_done(first_id)["status"]["status_str"] == "success"

    second_id, second = run_to_pause(server, prompt)  # the very same prompt: must not come from the cache
    assert second["token"] != first["token"]
    status, answer = choose(server, first["token"], 3)
    assert status == 409 and "already resolved" in answer["error"]
    assert [e["token"] for e in server.pending()] == [second["token"]]
    assert choose(server, second["token"], 3)[0] == 200
    history = server.wait_done(second_id)
    assert history["status"]["status_str"] == "success"
    assert len(saved_files(server, tag, "route1")) == 1  # only from the first run
    assert len(saved_files(server, tag, "route3")) == 1  # only from the second run
    assert saved_files(server, tag, "route2") == []
    assert len(saved_files(server, tag, "mask")) == 2


def test_a_batch_of_three_frames_comes_out_whole_and_in_order(server):
    tag = new_tag()
    colours = (RED, GREEN, BLUE)
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2, colours=colours))
    assert entry["frames"] == 3 and len(entry["images"]) == 3
    for image, colour in zip(entry["images"], colours, strict=True):
        assert image["type"] == "temp"
        with Image.open(io.BytesIO(server.view(image))) as png:
            assert_flat(np.array(png.convert("RGB")), rgb(colour))
    assert len(preview_files(server)) == 3
    assert choose(server, entry["token"], 2)[0] == 200
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success"
    assert_only_route_ran(server, history, tag, chosen=2, routes=2)
    frames = saved_pixels(server, history, "22")
    assert len(frames) == 3
    for pixels, colour in zip(frames, colours, strict=True):
        assert_flat(pixels, rgb(colour))
    masks = saved_pixels(server, history, "31")
    assert len(masks) == 3 and all((m == 0).all() for m in masks)
    assert preview_files(server) == [], "preview files were left in temp after the choice"


def test_the_websocket_carries_the_preview_then_the_resolution(server, events):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2), events.client_id)
    preview = events.wait_for(EVENT_PREVIEW, lambda data: data["token"] == entry["token"])
    assert preview == entry
    assert preview["prompt_id"] == prompt_id
    assert choose(server, entry["token"], 2)[0] == 200
    resolved = events.wait_for(EVENT_RESOLVED, lambda data: data["token"] == entry["token"])
    assert resolved["node_id"] == GATE and resolved["route"] == 2
    server.wait_done(prompt_id)


# --- stopping ----------------------------------------------------------------------------

def test_the_gates_cancel_ends_the_prompt_as_interrupted(server, events):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2), events.client_id)
    assert server.post_json(ROUTE_CANCEL, {"token": entry["token"]}) == (
        200, {"ok": True, "token": entry["token"], "route": None})
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    assert history["outputs"] == {}
    for what in ("route1", "route2", "mask"):
        assert saved_files(server, tag, what) == []
    assert events.wait_for(EVENT_RESOLVED, lambda d: d["token"] == entry["token"])["route"] is None
    assert server.pending() == [] and preview_files(server) == []
    status, answer = choose(server, entry["token"], 1)
    assert status == 409, answer


def test_comfyuis_interrupt_ends_the_waiting_prompt_and_the_next_one_runs(server):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2))
    started = time.monotonic()
    assert server.post_json("/interrupt", {})[0] == 200
    history = server.wait_done(prompt_id)
    took = time.monotonic() - started
    print(f"interrupted {took:.2f}s after POST /interrupt")  # the 1 s budget is checked by eye, not asserted
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    assert server.pending() == [] and preview_files(server) == []
    assert choose(server, entry["token"], 1)[0] == 409  # the abandoned pause decides nothing later

    next_tag = new_tag()
    next_id, next_entry = run_to_pause(server, gate_prompt(next_tag, routes=2, colours=(GREEN,)))
    assert next_entry["token"] != entry["token"]
    assert choose(server, next_entry["token"], 1)[0] == 200
    next_history = server.wait_done(next_id)
    assert next_history["status"]["status_str"] == "success"
    [pixels] = saved_pixels(server, next_history, "21")
    assert_flat(pixels, rgb(GREEN))


def test_a_gate_with_no_image_blocks_everything_and_says_so(server, events):
    tag = new_tag()
    prompt_id = server.queue(gate_prompt(tag, routes=3, colours=None), events.client_id)
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", history["status"]
    assert list(history["outputs"]) == [GATE]  # only the gate's own note: nothing behind it ran
    [status] = history["outputs"][GATE]["datasete_gate_status"]
    assert status["reason"] == "no_image" and "nothing to gate" in status["text"]
    for what in ("route1", "route2", "route3", "mask"):
        assert saved_files(server, tag, what) == []
    assert server.pending() == []
    assert events.of(EVENT_PREVIEW) == []
    assert "execution_error" not in status_messages(history)


# --- the HTTP API against the real server --------------------------------------------------

def raw_exchange(server, head: bytes, body_parts) -> tuple[int, dict]:
    """Send a request whose body may never end, and read the answer while still sending.

    A server that read the whole body before answering would never answer these.
    """
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SETTLE_SECONDS)
    sock.sendall(head)

    def send():
        try:
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass  # the server answered and stopped reading: expected once the limit is crossed

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        sender.join(SETTLE_SECONDS)


def request_head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n").encode()


def bad_requests(token: str):
    """(name, method, path, body bytes or a raw exchange, expected status, words in the error)."""
    wrong_size = mask_data_url(np.zeros((HEIGHT + 1, WIDTH), np.uint8))
    good = mask_data_url(np.zeros((HEIGHT, WIDTH), np.uint8))
    truncated = good[: len(good) // 2]
    truncated += "=" * (-len(truncated.partition(",")[2]) % 4)
    yield "not JSON", ROUTE_CHOOSE, b"{token:", 400, "JSON"
    yield "a JSON list", ROUTE_CHOOSE, b"[]", 400, "object"
    yield "cancel with a JSON string", ROUTE_CANCEL, b'"x"', 400, "object"
    for route in (0, 3, -1, "1", 1.0, True, None):
        yield f"route {route!r}", ROUTE_CHOOSE, json.dumps({"token": token, "route": route}).encode(), 400, "route"
    yield "mask not base64", ROUTE_CHOOSE, json.dumps(
        {"token": token, "route": 1, "mask": "@@"}).encode(), 400, "base64"
    yield "mask not PNG", ROUTE_CHOOSE, json.dumps(
        {"token": token, "route": 1, "mask": base64.b64encode(b"GIF89a").decode()}).encode(), 400, "PNG"
    yield "mask wrong size", ROUTE_CHOOSE, json.dumps(
        {"token": token, "route": 1, "mask": wrong_size}).encode(), 400, f"{WIDTH}x{HEIGHT + 1}"
    yield "mask truncated", ROUTE_CHOOSE, json.dumps(
        {"token": token, "route": 1, "mask": truncated}).encode(), 400, "mask"
    yield "unknown token", ROUTE_CHOOSE, json.dumps({"token": "nope", "route": 1}).encode(), 404, "unknown token"
    yield "cancel unknown token", ROUTE_CANCEL, json.dumps({"token": "nope"}).encode(), 404, "unknown token"
    yield "no token", ROUTE_CHOOSE, json.dumps({"route": 1}).encode(), 404, "unknown token"


def test_every_bad_request_answers_4xx_and_leaves_the_gate_waiting_and_answerable(server):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2, colours=(RED,)))
    token = entry["token"]

    def still_waiting(case):
        assert [e["token"] for e in server.pending()] == [token], f"after {case}: the gate is no longer pending"
        assert server.history(prompt_id) is None, f"after {case}: the prompt finished"

    for case, path, raw, expected, words in bad_requests(token):
        for prefix in ("", "/api"):
            status, answer = server.request("POST", prefix + path, raw=raw)
            assert status == expected, f"{case} on {prefix + path}: {status} {answer}"
            assert isinstance(answer, dict) and words.lower() in answer["error"].lower(), (case, answer)
            still_waiting(case)

    # Content-Length far over the limit: refused from the head, before any body is sent.
    status, answer = raw_exchange(server, request_head(ROUTE_CHOOSE, f"Content-Length: {10**12}\r\n"), [b"{"])
    assert status == 400 and "over the limit" in answer["error"], answer
    still_waiting("an oversized Content-Length")

    # Chunked with no Content-Length, over the limit and never finished: refused once the limit is crossed.
    piece = b" " * (1 << 20)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks = [chunk] * (MAX_REQUEST_BYTES // len(piece) + 2)
    status, answer = raw_exchange(server, request_head(ROUTE_CHOOSE, "Transfer-Encoding: chunked\r\n"), chunks)
    assert status == 400 and "over the limit" in answer["error"], answer
    still_waiting("an oversized chunked body")

    assert choose(server, token, 2)[0] == 200
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success"
    assert_only_route_ran(server, history, tag, chosen=2, routes=2)
    status, answer = choose(server, token, 1)
    assert status == 409 and "already resolved" in answer["error"]
    status, answer = server.post_json(ROUTE_CANCEL, {"token": token})
    assert status == 409


def test_the_api_prefixed_routes_work(server):
    tag = new_tag()
    prompt_id, entry = run_to_pause(server, gate_prompt(tag, routes=2, colours=(GREEN,)))
    assert server.get_json("/api" + ROUTE_PENDING)["pending"] == [entry]
    status, answer = server.post_json("/api" + ROUTE_CHOOSE, {"token": entry["token"], "route": 1})
    assert (status, answer) == (200, {"ok": True, "token": entry["token"], "route": 1})
    history = server.wait_done(prompt_id)
    assert_only_route_ran(server, history, tag, chosen=1, routes=2)

    prompt_id, entry = run_to_pause(server, gate_prompt(new_tag(), routes=2))
    assert server.post_json("/api" + ROUTE_CANCEL, {"token": entry["token"]})[0] == 200
    assert "execution_interrupted" in status_messages(server.wait_done(prompt_id))
