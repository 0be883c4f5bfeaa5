"""The HTTP routes in a real aiohttp server (no ComfyUI), with a gate waiting on its own thread.

Every bad request must answer JSON {"error": ...} with the right 4xx, never a 500, and leave
the waiting gate pending and still answerable.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading

import numpy as np
import pytest
import torch
from comfy_fakes import JOIN_SECONDS, WaitingPause
from PIL import Image
from route_testkit import serve_handlers

from gates import imaging, server, slots
from gates.constants import MAX_REQUEST_BYTES, ROUTE_BUS_LIST, ROUTE_CANCEL, ROUTE_CHOOSE, ROUTE_PENDING
from gates.pause import GateBus, GateCancelled

WIDTH, HEIGHT = 6, 4
LIMIT = 4096  # a small body limit so the oversize cases need no megabytes


class WaitingGate(WaitingPause):
    """A pause armed on the bus and waited for on another thread, as the node does in ComfyUI's worker."""

    def __init__(self, bus: GateBus, routes: int = 3):
        super().__init__(bus, bus.arm("11", routes, prompt_id="prompt-1", width=WIDTH, height=HEIGHT,
                                      images=[{"filename": "p.png", "subfolder": "", "type": "temp"}]))


def run_with_server(body, bus: GateBus, tmp_path, max_body: int = LIMIT):
    """Serve make_handlers() on 127.0.0.1 and run `await body(client)` against it."""
    serve_handlers(body, bus=bus, bus_base=lambda: str(tmp_path / "gate_bus"), max_body=max_body)


async def post(client, path, payload=None, *, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else json.dumps(payload).encode()
    resp = await client.post(path, data=data, headers=headers or {"Content-Type": "application/json"})
    return resp.status, await resp.json()


async def raw_request(client, head: str, body_parts=(), end: bytes | None = None) -> tuple[int, dict]:
    """Send a hand-written request over a plain socket and read the answer.

    The body may stop short of what its head announces: the server must answer anyway.
    """
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head.encode("latin-1"))
        for part in body_parts:
            writer.write(part)
        if end:
            writer.write(end)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), JOIN_SECONDS)
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), JOIN_SECONDS)
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        payload = await asyncio.wait_for(reader.readexactly(length), JOIN_SECONDS)
        return int(status_line.split()[1]), json.loads(payload)
    finally:
        writer.close()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def still_waiting(client, gate_: WaitingGate):
    resp = await client.get(ROUTE_PENDING)
    assert resp.status == 200
    tokens = [entry["token"] for entry in (await resp.json())["pending"]]
    assert tokens == [gate_.token], "a bad request released or dropped the gate"
    assert gate_.thread.is_alive() and not gate_.pause.decided.is_set()


async def answer_and_check(client, gate_: WaitingGate, route: int = 2):
    status, answer = await post(client, ROUTE_CHOOSE, {"token": gate_.token, "route": route})
    assert (status, answer) == (200, {"ok": True, "token": gate_.token, "route": route})
    gate_.join()
    assert gate_.error is None and gate_.pause.route == route


def assert_error(status, answer, expected_status, *words):
    assert status == expected_status, answer
    assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]
    for word in words:
        assert word.lower() in answer["error"].lower(), answer["error"]


def mask_png(pixels: np.ndarray, mode: str = "L") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# --- the good paths ------------------------------------------------------------------------

def test_pending_lists_the_waiting_gate_and_a_choice_releases_it(tmp_path):
    bus = GateBus()

    async def body(client):
        resp = await client.get(ROUTE_PENDING)
        assert (resp.status, await resp.json()) == (200, {"pending": []})
        waiting = WaitingGate(bus)
        resp = await client.get(ROUTE_PENDING)
        [entry] = (await resp.json())["pending"]
        assert entry["token"] == waiting.token and entry["node_id"] == "11" and entry["routes"] == 3
        assert entry["prompt_id"] == "prompt-1" and entry["source"] == "input"
        assert entry["images"] == [{"filename": "p.png", "subfolder": "", "type": "temp"}]
        await answer_and_check(client, waiting, 3)
        assert waiting.pause.mask is None
        resp = await client.get(ROUTE_PENDING)
        assert (await resp.json()) == {"pending": []}

    run_with_server(body, bus, tmp_path)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_a_choice_with_a_mask_hands_the_decoded_mask_to_the_gate(tmp_path, prefix):
    bus = GateBus()
    painted = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    painted[1:3, 2:5, :3] = 255
    painted[1:3, 2:5, 3] = 255  # a browser stroke: opaque where painted, transparent elsewhere

    async def body(client):
        waiting = WaitingGate(bus)
        payload = {"token": waiting.token, "route": 1, "mask": prefix + mask_png(painted, "RGBA")}
        assert await post(client, ROUTE_CHOOSE, payload) == (200, {"ok": True, "token": waiting.token, "route": 1})
        waiting.join()
        expected = np.zeros((HEIGHT, WIDTH), np.float32)
        expected[1:3, 2:5] = 1.0
        np.testing.assert_array_equal(waiting.pause.mask, expected)

    run_with_server(body, bus, tmp_path)


def test_an_empty_mask_string_means_no_mask(tmp_path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        status, _ = await post(client, ROUTE_CHOOSE, {"token": waiting.token, "route": 1, "mask": ""})
        assert status == 200
        waiting.join()
        assert waiting.pause.mask is None

    run_with_server(body, bus, tmp_path)


def test_cancel_ends_the_wait_as_cancelled(tmp_path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        status, answer = await post(client, ROUTE_CANCEL, {"token": waiting.token})
        assert (status, answer) == (200, {"ok": True, "token": waiting.token, "route": None})
        waiting.join()
        assert isinstance(waiting.error, GateCancelled)

    run_with_server(body, bus, tmp_path)


@pytest.mark.parametrize("first", ["choose", "cancel"])
@pytest.mark.parametrize("second", ["choose", "cancel"])
def test_a_token_already_resolved_answers_409_and_does_not_decide_the_next_pause(tmp_path, first, second):
    bus = GateBus()

    def request_for(kind, token):
        return (ROUTE_CHOOSE, {"token": token, "route": 1}) if kind == "choose" else (ROUTE_CANCEL, {"token": token})

    async def body(client):
        old = WaitingGate(bus)
        assert (await post(client, *request_for(first, old.token)))[0] == 200
        old.join()
        later = WaitingGate(bus)  # the same node pausing again on the next run
        status, answer = await post(client, *request_for(second, old.token))
        assert_error(status, answer, 409, "already resolved", old.token)
        await still_waiting(client, later)
        await answer_and_check(client, later, 3)

    run_with_server(body, bus, tmp_path)


def test_bus_list_names_the_published_slots(tmp_path):
    bus = GateBus()

    async def body(client):
        resp = await client.get(ROUTE_BUS_LIST)
        assert (resp.status, await resp.json()) == (200, {"ids": []})  # no gate_bus folder yet
        image = torch.zeros((1, HEIGHT, WIDTH, 3))
        slots.bus_save(str(tmp_path / "gate_bus"), "cp2", image, None)
        slots.bus_save(str(tmp_path / "gate_bus"), "cp1", image, None)
        resp = await client.get(ROUTE_BUS_LIST)
        assert (resp.status, await resp.json()) == (200, {"ids": ["cp1", "cp2"]})

    run_with_server(body, bus, tmp_path)


# --- every bad request: the right 4xx, and the gate still waiting -----------------------------

BAD_BODIES = {
    "not JSON": (b"{route: 1", 400, ["not valid JSON"]),
    "empty body": (b"", 400, ["not valid JSON"]),
    "not UTF-8": (b'{"token": "\xff\xfe"}', 400, ["not valid JSON"]),
    "a JSON list": (b"[1, 2]", 400, ["JSON object", "list"]),
    "JSON null": (b"null", 400, ["JSON object"]),
    "a JSON string": (b'"choose"', 400, ["JSON object", "str"]),
    "a JSON number": (b"2", 400, ["JSON object", "int"]),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, 400, ["not valid JSON", "nested too deeply"]),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
@pytest.mark.parametrize("path", [ROUTE_CHOOSE, ROUTE_CANCEL])
def test_a_body_that_is_not_a_json_object_answers_400(tmp_path, name, path):
    bus = GateBus()
    raw, expected, words = BAD_BODIES[name]

    async def body(client):
        waiting = WaitingGate(bus)
        status, answer = await post(client, path, raw=raw)
        assert_error(status, answer, expected, *words)
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path, max_body=len(BAD_BODIES["deeply nested JSON"][0]) + 10)


@pytest.mark.parametrize("route", [0, 4, -1, 10**40, True, False, "2", 2.0, 1.5, None, [2], {"n": 2}, "NaN"])
def test_a_route_out_of_range_or_of_the_wrong_type_answers_400(tmp_path, route):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus, routes=3)
        payload = {"token": waiting.token, "route": route}
        raw = json.dumps(payload).replace('"NaN"', "NaN").encode()  # Python's json reads a bare NaN
        status, answer = await post(client, ROUTE_CHOOSE, raw=raw)
        assert_error(status, answer, 400, "route")
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


def test_a_missing_route_answers_400(tmp_path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        assert_error(*await post(client, ROUTE_CHOOSE, {"token": waiting.token}), 400, "route")
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


BAD_MASKS = {
    "not base64": ("%%% not base64 %%%", ["base64"]),
    "not a PNG": (base64.b64encode(b"GIF89a....").decode(), ["not a PNG"]),
    "too wide": (mask_png(np.zeros((HEIGHT, WIDTH + 1), np.uint8)), [f"{WIDTH + 1}x{HEIGHT}", f"{WIDTH}x{HEIGHT}"]),
    "too short": (mask_png(np.zeros((HEIGHT - 1, WIDTH), np.uint8)), [f"{WIDTH}x{HEIGHT - 1}"]),
    "truncated": (base64.b64encode(base64.b64decode(mask_png(np.full((HEIGHT, WIDTH), 9, np.uint8)))[:-20]).decode(),
                  ["truncated"]),
    "a number": (7, ["base64 PNG string"]),
    "a list": ([1, 2], ["base64 PNG string"]),
}


@pytest.mark.parametrize("name", list(BAD_MASKS))
def test_an_undecodable_or_wrong_size_mask_answers_400(tmp_path, name):
    bus = GateBus()
    mask, words = BAD_MASKS[name]

    async def body(client):
        waiting = WaitingGate(bus)
        status, answer = await post(client, ROUTE_CHOOSE, {"token": waiting.token, "route": 1, "mask": mask})
        assert_error(status, answer, 400, "mask", *words)
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)
        assert waiting.pause.mask is None

    run_with_server(body, bus, tmp_path)


@pytest.mark.parametrize("token", ["no-such-token", "", None, 17, ["t"], {"t": 1}])
@pytest.mark.parametrize("path", [ROUTE_CHOOSE, ROUTE_CANCEL])
def test_an_unknown_token_answers_404(tmp_path, token, path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        payload = {"token": token, "route": 1}
        if token is None:
            del payload["token"]
        assert_error(*await post(client, path, payload), 404, "unknown token")
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


@pytest.mark.parametrize("path", [ROUTE_CHOOSE, ROUTE_CANCEL])
def test_a_content_length_over_the_limit_is_refused_before_the_body_is_sent(tmp_path, path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        # Only the head goes out: if the server waited for a body this big the answer would never come.
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {10**12}\r\n\r\n")
        status, answer = await raw_request(client, head, [b'{"token": "'])
        assert_error(status, answer, 400, "over the limit", str(10**12), str(LIMIT))
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


@pytest.mark.parametrize("path", [ROUTE_CHOOSE, ROUTE_CANCEL])
def test_a_chunked_body_over_the_limit_is_refused_without_reading_it_to_the_end(tmp_path, path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        filler = [chunk(b" " * 1000) for _ in range(LIMIT // 1000 + 2)]
        # No terminating chunk: the answer must come once the limit is crossed, not at the end.
        status, answer = await raw_request(client, head, filler)
        assert_error(status, answer, 400, "over the limit", str(LIMIT))
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


def test_a_chunked_body_within_the_limit_is_read_whole(tmp_path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        text = json.dumps({"token": waiting.token, "route": 2}).encode()
        head = (f"POST {ROUTE_CHOOSE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        parts = [chunk(text[i:i + 7]) for i in range(0, len(text), 7)]
        status, answer = await raw_request(client, head, parts, end=b"0\r\n\r\n")
        assert (status, answer) == (200, {"ok": True, "token": waiting.token, "route": 2})
        waiting.join()
        assert waiting.pause.route == 2

    run_with_server(body, bus, tmp_path)


def test_a_body_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not(tmp_path):
    bus = GateBus()

    async def body(client):
        waiting = WaitingGate(bus)
        text = json.dumps({"token": waiting.token, "route": 1}).encode()
        too_big = text + b" " * (LIMIT + 1 - len(text))
        assert_error(*await post(client, ROUTE_CHOOSE, raw=too_big), 400, "over the limit")
        await still_waiting(client, waiting)
        exact = text + b" " * (LIMIT - len(text))
        assert (await post(client, ROUTE_CHOOSE, raw=exact))[0] == 200
        waiting.join()

    run_with_server(body, bus, tmp_path)


def test_the_default_limit_is_the_documented_one():
    import inspect

    assert inspect.signature(server.make_handlers).parameters["max_body"].default == MAX_REQUEST_BYTES


def test_an_unexpected_failure_answers_json_4xx_not_500_and_leaves_the_gate_waiting(tmp_path, monkeypatch):
    bus = GateBus()

    def broken(*_args):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(imaging, "decode_mask_payload", broken)

    async def body(client):
        waiting = WaitingGate(bus)
        status, answer = await post(client, ROUTE_CHOOSE, {"token": waiting.token, "route": 1, "mask": "x"})
        assert 400 <= status < 500
        assert_error(status, answer, status, "decoder exploded")
        await still_waiting(client, waiting)
        await answer_and_check(client, waiting)

    run_with_server(body, bus, tmp_path)


def test_a_gate_decided_while_its_mask_was_being_decoded_answers_409(tmp_path, monkeypatch):
    """A slow mask decode must not let a second request decide the gate twice."""
    bus = GateBus()
    decoding = threading.Event()
    release = threading.Event()
    real_decode = imaging.decode_mask_payload

    def slow_decode(*args):
        decoding.set()
        assert release.wait(JOIN_SECONDS)
        return real_decode(*args)

    monkeypatch.setattr(imaging, "decode_mask_payload", slow_decode)

    async def body(client):
        waiting = WaitingGate(bus)
        mask = mask_png(np.full((HEIGHT, WIDTH), 255, np.uint8))
        slow = asyncio.ensure_future(post(client, ROUTE_CHOOSE, {"token": waiting.token, "route": 1, "mask": mask}))
        await asyncio.get_running_loop().run_in_executor(None, decoding.wait, JOIN_SECONDS)
        assert await post(client, ROUTE_CANCEL, {"token": waiting.token}) == (
            200, {"ok": True, "token": waiting.token, "route": None})
        release.set()
        assert_error(*await slow, 409, "already resolved")
        waiting.join()
        assert isinstance(waiting.error, GateCancelled) and waiting.pause.mask is None

    run_with_server(body, bus, tmp_path)
