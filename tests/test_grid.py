"""The Grid Pool Gate's answer and thumbnails (gates.grid), and its HTTP side in a real aiohttp server.

A waiting grid is answered by POST /datasete_gate/choose {"token", "keep": [indexes]}; every body that
does not fit is a JSON 400 and the grid keeps waiting. GET /datasete_gate/pool/list lists the pools.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from comfy_fakes import WaitingPause
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from route_testkit import serve_handlers

from gates import grid, pools, previews
from gates.constants import GRID_THUMB_SIZE, KIND_GRID, ROUTE_CANCEL, ROUTE_CHOOSE, ROUTE_PENDING, ROUTE_POOL_LIST
from gates.pause import AlreadyResolved, BadAnswer, GateBus, GateCancelled


def grid_pause(bus: GateBus, count: int = 4):
    items = [{"index": i, "name": f"{i + 1:06d}", "image": {"filename": f"t{i}.webp", "subfolder": "",
                                                            "type": "temp"}, "caption": None} for i in range(count)]
    return bus.arm("21", 0, kind=KIND_GRID, details={"items": items, "pool": "p", "pending": count})


# --- the parser ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("keep", "expected"), [
    ([], ()), ([2], (2,)), ([3, 0, 2], (0, 2, 3)), ([0, 1, 2, 3], (0, 1, 2, 3))])
def test_keep_is_a_list_of_distinct_indexes_in_range(keep, expected):
    pause = grid_pause(GateBus())
    assert grid.parse_keep(pause, {"keep": keep}) == expected


@pytest.mark.parametrize(("body", "message"), [
    ({}, "answered with \"keep\""),
    ({"keep": None}, "must be a list"),
    ({"keep": "0,1"}, "must be a list"),
    ({"keep": {"0": True}}, "must be a list"),
    ({"keep": 1}, "must be a list"),
    ({"keep": [0, 0]}, "given twice"),
    ({"keep": [4]}, "out of range 0..3"),
    ({"keep": [-1]}, "out of range"),
    ({"keep": [True]}, "whole numbers"),
    ({"keep": [1.0]}, "whole numbers"),
    ({"keep": ["1"]}, "whole numbers"),
    ({"keep": [None]}, "whole numbers"),
    ({"keep": [[0]]}, "whole numbers"),
    ({"keep": [2 ** 80]}, "out of range"),
])
def test_bad_keep_bodies_are_refused_by_name(body, message):
    with pytest.raises(BadAnswer, match=message):
        grid.parse_keep(grid_pause(GateBus()), body)


def test_the_parser_is_registered_for_the_grid_kind_and_a_refusal_leaves_the_gate_waiting():
    bus = GateBus()
    pause = grid_pause(bus)
    with pytest.raises(BadAnswer):
        bus.answer(pause.token, {"keep": [9]})
    assert not pause.decided.is_set()
    bus.answer(pause.token, {"keep": [1, 3]})
    assert pause.answer == (1, 3)
    with pytest.raises(AlreadyResolved):
        bus.answer(pause.token, {"keep": []})


# --- thumbnails ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("height", "width"), [(1024, 768), (300, 2000), (100, 80), (1, 1)])
def test_thumbnails_are_small_keep_the_aspect_and_alpha(tmp_path, height, width):
    rgba = np.random.default_rng(0).integers(0, 256, (height, width, 4), dtype=np.uint8)
    [entry] = grid.save_thumbnails([rgba], str(tmp_path))
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    with Image.open(tmp_path / entry["filename"]) as thumb:
        assert max(thumb.size) == min(GRID_THUMB_SIZE, max(height, width))
        assert abs(thumb.size[0] / thumb.size[1] - width / height) < 0.05 * width / height + 2 / thumb.size[1]
        assert thumb.mode == "RGBA"
    previews.remove_previews([entry], str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_64_tile_page_of_large_frames_is_a_few_megabytes_at_most(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = np.kron(base, np.ones((16, 16, 1), np.uint8))  # 1024x1024, photo-like blocks
    entries = grid.save_thumbnails([frame] * 64, str(tmp_path))
    total = sum((tmp_path / e["filename"]).stat().st_size for e in entries)
    assert total < 4 * 2 ** 20, f"64 thumbnails take {total} bytes"


# --- HTTP --------------------------------------------------------------------------------------------

class WaitingGrid(WaitingPause):
    def __init__(self, bus: GateBus, count: int = 4):
        super().__init__(bus, grid_pause(bus, count))


def run_with_server(body, bus: GateBus, pool_base: str):
    serve_handlers(body, bus=bus, bus_base=lambda: pool_base + "_bus", pool_base=lambda: pool_base, max_body=4096)


async def post(client, path, payload=None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(payload).encode()
    response = await client.post(path, data=data, headers={"Content-Type": "application/json"})
    return response.status, await response.json()


def test_pool_list_route_answers_sorted_pools_with_counts(tmp_path):
    base = str(tmp_path / "gate_pool")
    frame = np.zeros((2, 2, 3), np.uint8)
    pools.add_frames(base, "b_pool", [frame])
    pools.add_frames(base, "a_pool", [frame, frame + 1, frame + 2])
    pools.move(base, "a_pool", {"000001": "kept", "000002": "rejected"})

    async def body(client):
        response = await client.get(ROUTE_POOL_LIST)
        assert response.status == 200
        assert await response.json() == {"pools": [
            {"id": "a_pool", "pending": 1, "kept": 1, "rejected": 1},
            {"id": "b_pool", "pending": 1, "kept": 0, "rejected": 0}]}

    run_with_server(body, GateBus(), base)


def test_pool_list_of_no_gate_pool_folder_is_empty(tmp_path):
    async def body(client):
        response = await client.get(ROUTE_POOL_LIST)
        assert (response.status, await response.json()) == (200, {"pools": []})

    run_with_server(body, GateBus(), str(tmp_path / "missing"))


def test_a_grid_is_listed_with_its_kind_and_items_decided_by_keep_and_cancelled_like_a_gate(tmp_path):
    bus = GateBus()
    first = WaitingGrid(bus)
    second = WaitingGrid(bus, 2)

    async def body(client):
        response = await client.get(ROUTE_PENDING)
        entries = {e["token"]: e for e in (await response.json())["pending"]}
        assert entries[first.token]["kind"] == "grid" and len(entries[first.token]["items"]) == 4
        assert entries[first.token]["items"][2] == {"index": 2, "name": "000003", "caption": None,
                                                    "image": {"filename": "t2.webp", "subfolder": "", "type": "temp"}}
        status, answer = await post(client, ROUTE_CHOOSE, {"token": first.token, "route": 1})
        assert status == 400 and "keep" in answer["error"], "a route does not answer a grid"
        status, answer = await post(client, ROUTE_CHOOSE, {"token": first.token, "keep": [3, 1]})
        assert (status, answer) == (200, {"ok": True, "token": first.token, "kind": "grid"})
        status, answer = await post(client, ROUTE_CHOOSE, {"token": first.token, "keep": [0]})
        assert status == 409
        status, answer = await post(client, ROUTE_CANCEL, {"token": second.token})
        assert status == 200

    run_with_server(body, bus, str(tmp_path))
    assert first.join().error is None and first.pause.answer == (1, 3)
    assert isinstance(second.join().error, GateCancelled)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


def is_valid_keep(value, count: int) -> bool:
    return (isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < count
                                            for i in value) and len(set(value)) == len(value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=JSON | st.lists(st.integers(-3, 8), max_size=10))
def test_fuzzed_keep_bodies_answer_200_only_when_valid_and_otherwise_400_leaving_the_grid_waiting(keep):
    bus = GateBus()
    waiting = WaitingGrid(bus, 6)
    outcome = {}

    async def body(client):
        status, answer = await post(client, ROUTE_CHOOSE, {"token": waiting.token, "keep": keep})
        outcome["status"], outcome["answer"] = status, answer
        if status != 200:
            response = await client.get(ROUTE_PENDING)
            assert [e["token"] for e in (await response.json())["pending"]] == [waiting.token]
            status, _ = await post(client, ROUTE_CHOOSE, {"token": waiting.token, "keep": []})
            assert status == 200, "the grid must still be answerable after a refused body"

    run_with_server(body, bus, "/nonexistent")
    waiting.join()
    if is_valid_keep(keep, 6):
        assert outcome["status"] == 200 and waiting.pause.answer == tuple(sorted(keep))
    else:
        assert outcome["status"] == 400 and isinstance(outcome["answer"].get("error"), str)
        assert waiting.pause.answer == ()


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b'{"token": 5}', b"\xff\xfe", b'{"keep": [0]}', b"null"])
def test_malformed_requests_to_a_waiting_grid_are_4xx_json(tmp_path, raw):
    bus = GateBus()
    waiting = WaitingGrid(bus)

    async def body(client):
        status, answer = await post(client, ROUTE_CHOOSE, raw=raw)
        assert 400 <= status < 500 and "error" in answer
        assert len(bus.pending()) == 1
        await post(client, ROUTE_CANCEL, {"token": waiting.token})

    run_with_server(body, bus, str(tmp_path))
    waiting.join()
