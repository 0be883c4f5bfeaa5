"""Decompression bombs through a real ComfyUI: a small PNG that declares 15000x15000 (675 MB of pixels),
uploaded with ComfyUI's own /upload/image into a slot folder, or painted as a mask over HTTP. The prompt
(or the request) fails with an error that names the slot and the declared size, the server stays up, and
its peak memory does not jump by the 675 MB a decode would take."""

from __future__ import annotations

import base64
import uuid

import pytest
from bus_testkit import png_bomb
from comfy_server import ComfyServer
from test_comfy_bus import (
    SETTLE_SECONDS,
    choose,
    execution_error,
    gate_prompt,
    new_tag,
    pause_of,
    publish,
)

from gates.constants import ROUTE_CHOOSE

pytestmark = pytest.mark.comfy

DECLARED = "declares 15000x15000 = 225,000,000 pixels, over the limit of 178,956,970"
# The server's peak resident memory may grow a little (a request, a log line), never by the 675 MB
# (or the 225 MB of a mask) that decoding the bomb would take.
PEAK_GROWTH_LIMIT = 64 * 2**20


@pytest.fixture(scope="module")
def server():
    """A server of its own, so its peak memory reflects only these tests."""
    server = ComfyServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(15000, 15000, 3)


def peak_rss(server) -> int:
    """VmHWM of the ComfyUI process: the most resident memory it ever had, in bytes."""
    with open(f"/proc/{server.process.pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def upload(server, data: bytes, subfolder: str, filename: str = "image.png") -> dict:
    """POST /upload/image as the frontend does (multipart), into input/<subfolder>/<filename>."""
    boundary = uuid.uuid4().hex
    fields = {"subfolder": subfolder, "type": "input", "overwrite": "true"}
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
                    for name, value in fields.items())
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
             "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, answer = server.request("POST", "/upload/image", raw=body,
                                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    return answer


def still_serves(server) -> None:
    """The server answers and runs a whole publish-and-pass prompt after the refusal."""
    assert server.process.poll() is None, server.log_tail()
    assert "DataseteImageGate" in server.get_json("/object_info/DataseteImageGate")
    publish(server, "after_" + uuid.uuid4().hex[:6], [0x336699])


def test_a_bomb_uploaded_into_a_slot_fails_the_prompt_naming_the_slot(server, bomb):
    slot = "bomb_" + uuid.uuid4().hex[:6]
    answer = upload(server, bomb, f"gate_bus/{slot}")
    assert (server.input_dir / "gate_bus" / slot / answer["name"]).read_bytes() == bomb
    before = peak_rss(server)
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "error"
    message = execution_error(history)
    assert f"slot {slot!r}: image.png {DECLARED}" in message, message
    assert history["outputs"] == {} and server.pending() == []
    grown = peak_rss(server) - before
    assert grown < PEAK_GROWTH_LIMIT, f"peak memory grew by {grown / 2**20:.0f} MiB"
    still_serves(server)


def test_a_bomb_frame_in_a_published_slot_fails_the_prompt_before_decoding(server, bomb):
    slot = "bomb_" + uuid.uuid4().hex[:6]
    publish(server, slot, [0x102030, 0x302010])
    upload(server, bomb, f"gate_bus/{slot}", "frame_0001.png")
    before = peak_rss(server)
    prompt_id = server.queue(gate_prompt(new_tag(), None, get_id=slot))
    history = server.wait_done(prompt_id, SETTLE_SECONDS)
    assert history["status"]["status_str"] == "error"
    assert f"slot {slot!r}: frame_0001.png {DECLARED}" in execution_error(history)
    assert peak_rss(server) - before < PEAK_GROWTH_LIMIT
    still_serves(server)


def test_a_bomb_painted_as_the_mask_is_a_400_and_the_gate_keeps_waiting(server, bomb):
    prompt_id = server.queue(gate_prompt(new_tag(), [0x445566]))
    entry = pause_of(server, prompt_id)
    before = peak_rss(server)
    status, answer = server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "route": 1,
                                                     "mask": base64.b64encode(bomb).decode()})
    assert status == 400 and f"mask {DECLARED}" in answer["error"], (status, answer)
    assert peak_rss(server) - before < PEAK_GROWTH_LIMIT
    assert [e["token"] for e in server.pending()] == [entry["token"]]
    choose(server, entry["token"], 1)
    assert server.wait_done(prompt_id, SETTLE_SECONDS)["status"]["status_str"] == "success"
    still_serves(server)
