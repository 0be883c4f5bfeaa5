"""Timeouts without ComfyUI: the deadline maths, touch, on_timeout's checks, and what each gate kind
does when nobody answers (with ComfyUI's modules faked, a clock the test moves, and a real aiohttp
server for the touch route)."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from comfy_fakes import FakeComfy, RunningNode, wait_for_pause
from route_testkit import serve_handlers
from test_gate_node import frames_of

from gates import imagebus, slots
from gates.constants import (
    EVENT_DEADLINE,
    EVENT_GATE_STATUS,
    EVENT_RESOLVED,
    GATE_STATUS_UI_KEY,
    GRID_ON_TIMEOUT,
    IMAGE_ON_TIMEOUT,
    MAX_ROUTES,
    NODE_ID,
    ROUTE_PENDING,
    ROUTE_TOUCH,
    TEXT_ON_TIMEOUT,
    TIMEOUT_MAX_SECONDS,
)
from gates.nodes import image_gate
from gates.nodes.grid_pool_gate import GridPoolGate
from gates.nodes.image_gate import ImageGate, mark_route_beyond_routes
from gates.nodes.pool_add import AddToImagePool
from gates.nodes.text_gate import TextGate
from gates.pause import AlreadyResolved, GateBus, UnknownToken
from gates.timeouts import OnTimeoutError, parse_on_timeout, parse_timeout, timeout_route


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- the deadline on the bus ------------------------------------------------------------------------

def test_a_pause_with_a_timeout_has_a_deadline_and_one_without_has_none():
    clock = Clock()
    bus = GateBus(clock=clock)
    timed = bus.arm("1", 2, timeout=30)
    forever = bus.arm("2", 2)
    assert timed.deadline == clock.now + 30 and timed.entry()["deadline"] == clock.now + 30
    assert timed.entry()["timeout"] == 30
    assert forever.deadline is None and forever.entry()["deadline"] is None and forever.entry()["timeout"] == 0
    assert {e["token"]: e["deadline"] for e in bus.pending()} == {timed.token: clock.now + 30, forever.token: None}


def test_touch_restarts_the_countdown_from_now():
    clock = Clock()
    bus = GateBus(clock=clock)
    pause = bus.arm("1", 2, timeout=30)
    clock.now += 25
    assert bus.touch(pause.token).deadline == clock.now + 30
    clock.now += 25  # 50 s after arming, but only 25 s after the touch
    assert bus.expire(pause) is False and not pause.decided.is_set()
    clock.now += 5
    assert bus.expire(pause) is True and pause.timed_out and bus.pending() == []


def test_touch_without_a_timeout_keeps_no_deadline_and_bad_tokens_are_refused():
    bus = GateBus(clock=Clock())
    pause = bus.arm("1", 2)
    assert bus.touch(pause.token).deadline is None
    with pytest.raises(UnknownToken):
        bus.touch("nope")
    bus.resolve(pause.token, 1)
    with pytest.raises(AlreadyResolved):
        bus.touch(pause.token)


def test_an_answer_and_a_timeout_decide_once():
    clock = Clock()
    bus = GateBus(clock=clock)
    answered = bus.arm("1", 2, timeout=5)
    bus.resolve(answered.token, 2)
    clock.now += 10
    assert bus.expire(answered) is False and answered.route == 2 and not answered.timed_out

    expired = bus.arm("2", 2, timeout=5)
    clock.now += 5
    assert bus.expire(expired) is True
    with pytest.raises(AlreadyResolved):
        bus.resolve(expired.token, 1)


def test_wait_returns_a_timed_out_pause_without_an_answer():
    clock = Clock()
    bus = GateBus(clock=clock)
    pause = bus.arm("1", 2, timeout=3)

    def check():
        clock.now += 1  # one second per slice

    assert bus.wait(pause, check, 0.001) is pause
    assert pause.timed_out and pause.route is None and not pause.cancelled


# --- on_timeout and timeout: their checks -----------------------------------------------------------

def test_on_timeout_choices_per_kind():
    assert IMAGE_ON_TIMEOUT == ("cancel", "block") + tuple(f"route_{n}" for n in range(1, MAX_ROUTES + 1))
    assert GRID_ON_TIMEOUT == ("cancel", "block", "keep_all", "keep_none")
    assert TEXT_ON_TIMEOUT == ("cancel", "block", "approve", "reject")
    assert parse_on_timeout("image", None) == "cancel"
    assert parse_on_timeout("image", "route_3", 3) == "route_3" and timeout_route("route_3") == 3
    assert timeout_route("block") is None
    for kind, bad in (("image", "keep_all"), ("grid", "route_1"), ("text", "keep_none"), ("text", "")):
        with pytest.raises(OnTimeoutError, match=repr(bad)):
            parse_on_timeout(kind, bad)


def test_a_route_beyond_routes_is_refused_by_name():
    with pytest.raises(OnTimeoutError, match="route_4 is beyond routes = 3"):
        parse_on_timeout("image", "route_4", 3)
    prompt = {"prompt": {
        "4": {"class_type": NODE_ID, "inputs": {"routes": 3, "on_timeout": "route_4"}},
        "5": {"class_type": NODE_ID, "inputs": {"routes": 4, "on_timeout": "route_4"}},
        "6": {"class_type": NODE_ID, "inputs": {"routes": ["9", 0], "on_timeout": "route_8"}},
        "7": {"class_type": NODE_ID, "inputs": {"routes": 2, "on_timeout": "block"}},
    }}
    marked = mark_route_beyond_routes(prompt)["prompt"]
    # Not one of on_timeout's choices any more: ComfyUI refuses it under on_timeout, naming the value.
    assert marked["4"]["inputs"]["on_timeout"] == "route_4 (beyond routes = 3)"
    assert marked["4"]["inputs"]["on_timeout"] not in ImageGate.INPUT_TYPES()["optional"]["on_timeout"][0]
    assert marked["5"]["inputs"]["on_timeout"] == "route_4"
    assert marked["6"]["inputs"]["on_timeout"] == "route_8"  # routes linked: run() checks
    assert marked["7"]["inputs"]["on_timeout"] == "block"
    for odd in ({}, {"prompt": None}, {"prompt": {"1": "x"}}, []):
        mark_route_beyond_routes(odd)  # never raises
    # The methods ComfyUI files refusals under take only the inputs they check.
    assert ImageGate.VALIDATE_INPUTS(send_id="", get_id="") is True
    assert "pool" in GridPoolGate.VALIDATE_INPUTS(pool="a/b")
    assert TextGate.VALIDATE_INPUTS(caption_path="") is True


def test_timeout_seconds():
    assert parse_timeout(None) == 0 and parse_timeout(0) == 0 and parse_timeout(90) == 90
    for bad in (-1, TIMEOUT_MAX_SECONDS + 1, 1.5, True, "30"):
        with pytest.raises(OnTimeoutError, match="timeout"):
            parse_timeout(bad)


@pytest.mark.parametrize("node, kind", [(ImageGate, "image"), (GridPoolGate, "grid"), (TextGate, "text")])
def test_every_gate_has_the_two_inputs_last_with_tooltips(node, kind):
    optional = node.INPUT_TYPES()["optional"]
    assert list(optional)[-2:] == ["timeout", "on_timeout"]  # last: old saved widgets_values still fit
    timeout, on_timeout = optional["timeout"], optional["on_timeout"]
    assert timeout[0] == "INT" and timeout[1]["default"] == 0 and timeout[1]["min"] == 0
    assert on_timeout[0] == list({"image": IMAGE_ON_TIMEOUT, "grid": GRID_ON_TIMEOUT, "text": TEXT_ON_TIMEOUT}[kind])
    assert on_timeout[1]["default"] == "cancel"
    assert timeout[1]["tooltip"] and on_timeout[1]["tooltip"]


# --- the touch route --------------------------------------------------------------------------------

def serve(body, bus, tmp_path, told):
    serve_handlers(body, bus=bus, bus_base=lambda: str(tmp_path / "gate_bus"),
                   broadcast=lambda event, data: told.append((event, data)))


def test_touch_moves_the_deadline_tells_every_tab_and_refuses_bad_requests(tmp_path):
    clock = Clock()
    bus = GateBus(clock=clock)
    pause = bus.arm("7", 2, timeout=60)
    forever = bus.arm("8", 2)
    told = []

    async def body(client):
        clock.now += 40
        answer = await client.post(ROUTE_TOUCH, json={"token": pause.token})
        assert answer.status == 200 and await answer.json() == {"deadline": clock.now + 60}
        pending = await (await client.get(ROUTE_PENDING)).json()
        assert [e["deadline"] for e in pending["pending"] if e["token"] == pause.token] == [clock.now + 60]
        answer = await client.post(ROUTE_TOUCH, json={"token": forever.token})
        assert answer.status == 200 and await answer.json() == {"deadline": None}
        answer = await client.post(ROUTE_TOUCH, json={"token": "no-such-token"})
        assert answer.status == 404 and "no-such-token" in (await answer.json())["error"]
        for bad in ({}, {"token": 5}, {"token": ""}):
            answer = await client.post(ROUTE_TOUCH, json=bad)
            assert answer.status == 400 and "token" in (await answer.json())["error"]
        answer = await client.post(ROUTE_TOUCH, data=b"{not json", headers={"Content-Type": "application/json"})
        assert answer.status == 400 and "JSON" in (await answer.json())["error"]
        bus.resolve(pause.token, 1)
        answer = await client.post(ROUTE_TOUCH, json={"token": pause.token})
        assert answer.status == 409

    serve(body, bus, tmp_path, told)
    assert told == [(EVENT_DEADLINE, {"token": pause.token, "node_id": "7", "deadline": 1_000_040.0 + 60})]


# --- what each gate does when nobody answers --------------------------------------------------------

@pytest.fixture
def fake(tmp_path):
    fake = FakeComfy(tmp_path, prompt_id="prompt-42")
    with fake.installed():
        yield fake


def gate_with_clock(cls):
    node = cls()
    node.clock = Clock()
    node.bus = GateBus(clock=node.clock)
    return node


def time_out(node, running):
    entry = wait_for_pause(node.bus, running)
    assert entry["deadline"] == node.clock.now + entry["timeout"]
    node.clock.now += entry["timeout"]
    running.join()
    return entry


def resolved_of(fake, token) -> dict:
    [data] = [data for event, data in fake.events if event == EVENT_RESOLVED and data["token"] == token]
    return data


def test_image_gate_cancel_on_timeout_ends_the_run_as_interrupted(fake):
    node = gate_with_clock(ImageGate)
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 2, 3)), timeout=30)
    entry = time_out(node, running)
    assert isinstance(running.error, fake.InterruptProcessingException)
    resolved = resolved_of(fake, entry["token"])
    assert resolved["timed_out"] is True and resolved["on_timeout"] == "cancel"
    status = [data for event, data in fake.events if event == EVENT_GATE_STATUS]
    assert [s["reason"] for s in status] == ["timed_out"] and "timed out after 30 s" in status[0]["text"]
    # The status comes after the resolved event, so a panel that goes idle on the one then shows the other.
    names = [event for event, data in fake.events if data.get("token") == entry["token"] or event == EVENT_GATE_STATUS]
    assert names[-2:] == [EVENT_RESOLVED, EVENT_GATE_STATUS]
    assert node.bus.pending() == [] and fake.preview_files() == []


def test_image_gate_block_on_timeout_blocks_everything_and_succeeds(fake):
    node = gate_with_clock(ImageGate)
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 2, 3)), timeout=5, on_timeout="block")
    entry = time_out(node, running)
    assert running.error is None
    result = running.result["result"]
    assert len(result) == 1 + MAX_ROUTES and all(isinstance(out, fake.ExecutionBlocker) for out in result)
    [note] = running.result["ui"][GATE_STATUS_UI_KEY]
    assert note["reason"] == "timed_out" and note["on_timeout"] == "block"
    assert resolved_of(fake, entry["token"])["timed_out"] is True


def test_image_gate_route_on_timeout_routes_and_publishes_like_a_choice(fake):
    node = gate_with_clock(ImageGate)
    image = frames_of((9, 8, 7))
    running = RunningNode(node, routes=3, unique_id="3", image=image, timeout=5, on_timeout="route_1",
                          send_id="after_timeout")
    entry = time_out(node, running)
    assert running.error is None, running.error
    result = running.result["result"]
    assert result[1] is image and all(isinstance(out, fake.ExecutionBlocker) for out in result[2:])
    resolved = resolved_of(fake, entry["token"])
    assert resolved["route"] == 1 and resolved["timed_out"] is True and resolved["published"] == "after_timeout"


def test_an_answer_before_the_deadline_is_not_a_timeout(fake):
    node = gate_with_clock(ImageGate)
    running = RunningNode(node, routes=2, unique_id="3", image=frames_of((1, 2, 3)), timeout=5, on_timeout="block")
    entry = wait_for_pause(node.bus, running)
    node.bus.resolve(entry["token"], 2)
    running.join()
    assert running.result[2] is not None and not isinstance(running.result[2], fake.ExecutionBlocker)
    assert resolved_of(fake, entry["token"])["timed_out"] is False


def test_an_image_gate_route_beyond_routes_fails_before_pausing(fake):
    node = gate_with_clock(ImageGate)
    with pytest.raises(OnTimeoutError, match="route_3"):
        node.run(routes=2, unique_id="3", image=frames_of((1, 2, 3)), timeout=5, on_timeout="route_3")
    assert node.bus.pending() == []


def test_grid_keep_all_keep_none_and_block_on_timeout(fake):
    pool_base = os.path.join(fake.input, "gate_pool")
    AddToImagePool().run(torch.rand(6, 4, 6, 3), "p", captions="")
    outcomes = {}
    for on_timeout in ("keep_all", "keep_none", "block"):
        node = gate_with_clock(GridPoolGate)
        running = RunningNode(node, pool="p", page_size=2, unique_id="12", timeout=9, on_timeout=on_timeout)
        entry = time_out(node, running)
        assert running.error is None, running.error
        outcomes[on_timeout] = running.result
        assert resolved_of(fake, entry["token"])["timed_out"] is True
    kept, _captions, rejected, names = outcomes["keep_all"]["result"]
    assert names == ["000001", "000002"] and isinstance(rejected, fake.ExecutionBlocker)
    kept, _captions, rejected, names = outcomes["keep_none"]["result"]
    assert isinstance(kept, fake.ExecutionBlocker) and len(rejected) == 2
    assert all(isinstance(out, fake.ExecutionBlocker) for out in outcomes["block"]["result"])
    assert outcomes["block"]["ui"][GATE_STATUS_UI_KEY][0]["on_timeout"] == "block"
    [decided] = outcomes["keep_all"]["ui"]["datasete_pool"]
    assert decided["timed_out"] is True and decided["on_timeout"] == "keep_all" and decided["timeout"] == 9
    assert decided["text"].startswith("timed out (keep_all) · kept 2 of 2")
    folder = os.path.join(pool_base, "p")
    assert sorted(os.listdir(os.path.join(folder, "kept"))) == ["000001.png", "000002.png"]
    assert sorted(os.listdir(os.path.join(folder, "rejected"))) == ["000003.png", "000004.png"]
    assert sorted(name for name in os.listdir(os.path.join(folder, "pending")) if name.endswith(".png")) == [
        "000005.png", "000006.png"]  # block moved nothing


def test_grid_cancel_on_timeout_ends_the_run_and_moves_nothing(fake):
    AddToImagePool().run(torch.rand(2, 4, 6, 3), "p", captions="")
    node = gate_with_clock(GridPoolGate)
    running = RunningNode(node, pool="p", page_size=4, unique_id="12", timeout=9)
    time_out(node, running)
    assert isinstance(running.error, fake.InterruptProcessingException)
    pending = os.listdir(os.path.join(fake.input, "gate_pool", "p", "pending"))
    assert len([name for name in pending if name.endswith(".png")]) == 2


@pytest.fixture
def text_fake(tmp_path):
    fake = FakeComfy(tmp_path)
    (fake.input / "d").mkdir(parents=True)
    with fake.installed():
        yield fake


@pytest.mark.parametrize("on_timeout", ["approve", "reject", "block"])
def test_text_gate_on_timeout(text_fake, on_timeout):
    node = gate_with_clock(TextGate)
    running = RunningNode(node, text="a cat", unique_id="4", caption_path="d/1.png", timeout=9,
                          on_timeout=on_timeout)
    time_out(node, running)
    assert running.error is None, running.error
    text, image = running.result["result"]
    caption = text_fake.input / "d" / "1.txt"
    if on_timeout == "approve":
        assert text == "a cat" and caption.read_text() == "a cat"
    else:
        assert not caption.exists()
        assert type(text).__name__ == "ExecutionBlocker" and type(image).__name__ == "ExecutionBlocker"
    assert running.result["ui"][GATE_STATUS_UI_KEY][0]["on_timeout"] == on_timeout


def test_text_gate_cancel_on_timeout_is_an_interrupt(text_fake):
    node = gate_with_clock(TextGate)
    running = RunningNode(node, text="a cat", unique_id="4", timeout=9)
    time_out(node, running)
    assert type(running.error).__name__ == "InterruptProcessingException"


# --- no silent outcomes -----------------------------------------------------------------------------

def test_a_get_id_naming_no_slot_blocks_and_says_so_once(fake, caplog):
    node = gate_with_clock(ImageGate)
    with caplog.at_level(logging.WARNING, logger="datasete_gates"):
        out = node.run(routes=2, unique_id="3", get_id="nowhere")
    assert all(isinstance(o, fake.ExecutionBlocker) for o in out["result"])
    [note] = out["ui"][GATE_STATUS_UI_KEY]
    assert note["reason"] == "no_slot" and note["text"] == "slot 'nowhere' not found: nothing to gate"
    assert note["slot"] == "nowhere" and note["node_id"] == "3"
    assert [e for e in fake.events if e[0] == EVENT_GATE_STATUS] == [(EVENT_GATE_STATUS, note)]
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("Image Gate 3: slot 'nowhere' not found: nothing to gate") == 1


def test_a_publish_that_fails_after_the_choice_still_routes_and_keeps_the_old_slot(fake, monkeypatch, caplog):
    node = gate_with_clock(ImageGate)
    base = os.path.join(fake.input, "gate_bus")
    old = frames_of((1, 1, 1))
    slots.bus_save(base, "keep", old, None)

    def disk_full(*_args, **_kwargs):
        raise imagebus.SlotError("slot 'keep': could not publish: [Errno 28] No space left on device")

    monkeypatch.setattr(image_gate, "bus_write", disk_full)
    image = frames_of((200, 100, 50))
    with caplog.at_level(logging.ERROR, logger="datasete_gates"):
        running = RunningNode(node, routes=2, unique_id="3", image=image, send_id="keep")
        entry = wait_for_pause(node.bus, running)
        node.bus.resolve(entry["token"], 1)
        running.join()
    assert running.error is None, running.error
    assert running.result["result"][1] is image  # the person's choice stands
    [note] = running.result["ui"][GATE_STATUS_UI_KEY]
    assert note["reason"] == "publish_failed" and "No space left" in note["text"] and note["slot"] == "keep"
    resolved = resolved_of(fake, entry["token"])
    assert resolved["published"] is None and "No space left" in resolved["publish_error"]
    assert any("No space left" in r.getMessage() for r in caplog.records)
    loaded, _mask = slots.bus_load(base, "keep")
    assert (loaded.numpy() == old.numpy()).all()  # the slot keeps its old version
