"""The loader's and the Text Gate's HTTP doors in a real aiohttp server (no ComfyUI).

Folder picker, walk state and Reset with hostile folder values; a waiting Text Gate answered through
/datasete_gate/choose with hostile bodies. Every refusal is JSON {"error"} with a 4xx, never a 500, and
a refused answer leaves the gate waiting and still answerable.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from comfy_fakes import WaitingPause
from loader_testkit import make_dataset, mtime_settle
from route_testkit import serve_handlers

from gates import captions, folders, loader, server  # noqa: F401 - captions registers the "text" parser
from gates.constants import (
    KIND_TEXT,
    MAX_TEXT_BYTES,
    ROUTE_CANCEL,
    ROUTE_CHOOSE,
    ROUTE_FOLDERS,
    ROUTE_LOADER_RESET,
    ROUTE_LOADER_STATE,
    ROUTE_PENDING,
)
from gates.pause import GateBus, GateCancelled

FOLDER = "datasets/cats"
HOSTILE = ["", "..", "../", "../x", "a/../../x", "/etc", "/", "\\\\server\\share", "C:\\x", "C:x", "a\x00b",
           "a\nb", "x" * 5000, "datasets/../../..", "%2e%2e"]


@pytest.fixture
def dirs(tmp_path):
    inputs, user = tmp_path / "input", tmp_path / "user"
    make_dataset(inputs / "datasets" / "cats", count=12)
    (inputs / "datasets" / "empty").mkdir()
    (inputs / "gate_bus" / "slot").mkdir(parents=True)
    mtime_settle(inputs / "datasets" / "cats")
    return inputs, user


def run_with_server(body, bus: GateBus, dirs, max_body: int = 4 * MAX_TEXT_BYTES):
    inputs, user = dirs
    serve_handlers(body, bus=bus, bus_base=lambda: str(inputs / "gate_bus"), max_body=max_body,
                   input_dir=lambda: str(inputs), user_dir=lambda: str(user))


async def get(client, path):
    resp = await client.get(path)
    return resp.status, await resp.json()


async def post(client, path, payload=None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(payload).encode()
    resp = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


# --- the loader's routes --------------------------------------------------------------------------

def test_the_picker_lists_input_folders_but_not_the_bus(dirs):
    async def body(client):
        status, answer = await get(client, ROUTE_FOLDERS)
        assert status == 200
        assert answer == {"folders": ["datasets", "datasets/cats", "datasets/empty"], "truncated": False}
        status, answer = await get(client, "/datasete_gate/folders?depth=99&folder=..")  # nothing to steer
        assert status == 200 and answer["folders"][0] == "datasets"

    run_with_server(body, GateBus(), dirs)


def test_state_and_reset_follow_a_walk(dirs):
    inputs, user = dirs
    store = loader.position_store(user)
    store.write(folders.position_key(FOLDER, False), folders.Position("3.webp"), folder=FOLDER, recursive=False)

    async def body(client):
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder={quote(FOLDER)}")
        assert status == 200
        assert answer["text"] == "next: 4 of 12" and answer["next_index"] == 3 and answer["remaining"] == 9
        assert answer["folder"] == FOLDER and answer["include_subfolders"] is False
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder=datasets%5Ccats%2F&include_subfolders=1")
        assert status == 200 and answer["text"] == "next: 1 of 12" and answer["include_subfolders"] is True
        status, answer = await post(client, ROUTE_LOADER_RESET, {"folder": FOLDER})
        assert status == 200 and answer["text"] == "next: 1 of 12" and answer["last"] is None
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder=datasets/empty")
        assert status == 200 and answer["text"] == "no images" and answer["state"] == "empty"

    run_with_server(body, GateBus(), dirs)
    assert store.read(folders.position_key(FOLDER, False)) == folders.Position(None, 1)


def test_a_finished_walk_says_done(dirs):
    inputs, user = dirs
    loader.position_store(user).write(folders.position_key(FOLDER, False), folders.Position("12.gif"),
                                      folder=FOLDER, recursive=False)

    async def body(client):
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder={FOLDER}")
        assert status == 200 and answer["text"] == "done: 12 of 12" and answer["done"] is True

    run_with_server(body, GateBus(), dirs)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_folders_are_refused_by_the_state_and_reset_routes(dirs, value):
    inputs, user = dirs
    before = sorted(p for p in inputs.parent.rglob("*"))

    async def body(client):
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder={quote(value)}")
        assert status in (400, 404) and "error" in answer
        status, answer = await post(client, ROUTE_LOADER_RESET, {"folder": value})
        assert status in (400, 404) and "error" in answer
        if value not in ("%2e%2e",):
            assert repr(value[:60])[:-1] in answer["error"]

    run_with_server(body, GateBus(), dirs)
    assert sorted(p for p in inputs.parent.rglob("*")) == before, "a refused reset wrote something"


@pytest.mark.parametrize(("request_", "status_"), [
    ({"path": ROUTE_LOADER_STATE}, 400),
    ({"path": f"{ROUTE_LOADER_STATE}?folder=nope"}, 404),
    ({"path": f"{ROUTE_LOADER_STATE}?folder={FOLDER}&include_subfolders=maybe"}, 400),
    ({"post": {}}, 400),
    ({"post": {"folder": 5}}, 400),
    ({"post": {"folder": None}}, 400),
    ({"post": {"folder": FOLDER, "include_subfolders": "yes please"}}, 400),
    ({"post": {"folder": "nope"}}, 404),
    ({"raw": b"[1, 2]"}, 400),
    ({"raw": b"{not json"}, 400),
    ({"raw": b"\xff\xfe"}, 400),
])
def test_bad_loader_requests_answer_a_json_4xx(dirs, request_, status_):
    async def body(client):
        if "path" in request_:
            status, answer = await get(client, request_["path"])
        else:
            status, answer = await post(client, ROUTE_LOADER_RESET, request_.get("post"), raw=request_.get("raw"))
        assert status == status_ and isinstance(answer.get("error"), str) and answer["error"]

    run_with_server(body, GateBus(), dirs)


def test_a_damaged_position_file_is_a_400_and_reset_repairs_it(dirs):
    inputs, user = dirs
    store = loader.position_store(user)
    path = store.path_for(folders.position_key(FOLDER, False))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{damaged")

    async def body(client):
        status, answer = await get(client, f"{ROUTE_LOADER_STATE}?folder={FOLDER}")
        assert status == 400 and "damaged" in answer["error"] and "Reset" in answer["error"]
        status, answer = await post(client, ROUTE_LOADER_RESET, {"folder": FOLDER})
        assert status == 200 and answer["text"] == "next: 1 of 12"

    run_with_server(body, GateBus(), dirs)


# --- a waiting Text Gate through /choose ------------------------------------------------------------

class WaitingText(WaitingPause):
    def __init__(self, bus: GateBus, text="a cat"):
        super().__init__(bus, bus.arm("12", 0, prompt_id="p", kind=KIND_TEXT, details={"text": text, "trigger": ""}))


BAD_ANSWERS = [
    {},
    {"text": "x"},
    {"approve": "true", "text": "x"},
    {"approve": 1, "text": "x"},
    {"approve": None, "text": "x"},
    {"approve": True},
    {"approve": True, "text": None},
    {"approve": True, "text": 12},
    {"approve": True, "text": {"x": 1}},
    {"approve": True, "text": "x" * (MAX_TEXT_BYTES + 1)},
    {"approve": True, "text": "é" * (MAX_TEXT_BYTES // 2 + 1)},
    {"approve": True, "route": 1},
]


def test_a_text_gate_refuses_bad_answers_keeps_waiting_then_takes_a_good_one(dirs):
    bus = GateBus()
    gate = WaitingText(bus, text="猫 🐈‍⬛")

    async def body(client):
        status, answer = await get(client, ROUTE_PENDING)
        [entry] = answer["pending"]
        assert entry["kind"] == "text" and entry["text"] == "猫 🐈‍⬛" and entry["images"] == []
        for bad in BAD_ANSWERS:
            status, answer = await post(client, ROUTE_CHOOSE, {"token": gate.token, **bad})
            assert status == 400 and answer["error"], bad
        # A lone surrogate can only come as a JSON escape.
        raw = b'{"token": "%s", "approve": true, "text": "bad \\ud800 half"}' % gate.token.encode()
        status, answer = await post(client, ROUTE_CHOOSE, raw=raw)
        assert status == 400 and "surrogate" in answer["error"]
        status, answer = await get(client, ROUTE_PENDING)
        assert [e["token"] for e in answer["pending"]] == [gate.token], "a refused answer released the gate"
        good = "edited: مرحبا\r\n  kept  "
        status, answer = await post(client, ROUTE_CHOOSE, {"token": gate.token, "approve": True, "text": good})
        assert status == 200 and answer == {"ok": True, "token": gate.token, "kind": "text"}
        status, answer = await post(client, ROUTE_CHOOSE, {"token": gate.token, "approve": False})
        assert status == 409

    run_with_server(body, bus, dirs)
    gate.join()
    assert gate.error is None and gate.pause.answer == {"approve": True, "text": "edited: مرحبا\r\n  kept  "}


def test_a_text_gate_is_cancelled_through_the_cancel_route(dirs):
    bus = GateBus()
    gate = WaitingText(bus)

    async def body(client):
        status, _ = await post(client, ROUTE_CANCEL, {"token": gate.token})
        assert status == 200

    run_with_server(body, bus, dirs)
    assert isinstance(gate.join().error, GateCancelled)


def test_an_exactly_one_mebibyte_text_is_taken(dirs):
    bus = GateBus()
    gate = WaitingText(bus)
    text = "x" * MAX_TEXT_BYTES

    async def body(client):
        status, _ = await post(client, ROUTE_CHOOSE, {"token": gate.token, "approve": True, "text": text})
        assert status == 200

    run_with_server(body, bus, dirs)
    assert gate.join().pause.answer["text"] == text
