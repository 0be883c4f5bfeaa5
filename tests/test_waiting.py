"""The pause skeleton every gate shares (gates/waiting.py), with a fake ComfyUI facade."""

from __future__ import annotations

import threading

import pytest

from gates.constants import EVENT_PREVIEW, EVENT_RESOLVED
from gates.pause import GateBus
from gates.waiting import waiting

JOIN_SECONDS = 10.0


class Interrupted(Exception):
    pass


class FakeComfy:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.interrupt = threading.Event()

    def broadcast(self, event, data):
        self.events.append((event, data))

    def check_interrupt(self):
        if self.interrupt.is_set():
            raise Interrupted()

    def interrupted_exception(self):
        return Interrupted()

    def names(self):
        return [name for name, _ in self.events]


def answer_soon(action):
    thread = threading.Thread(target=action)
    thread.start()
    return thread


def test_an_answer_is_announced_yielded_and_reported_after_the_block():
    bus, comfy = GateBus(), FakeComfy()
    pause = bus.arm("7", 2)
    done = {}

    def resolve_when_shown():
        while not comfy.events:
            threading.Event().wait(0.005)
        bus.resolve(pause.token, 2)

    thread = answer_soon(resolve_when_shown)
    with waiting(bus, comfy, pause, lambda p: {"route": p.route, "extra": done.get("x")}, 0.01) as decided:
        assert decided is pause and decided.route == 2
        assert comfy.names() == [EVENT_PREVIEW]  # resolved only once the block has ended
        done["x"] = "published"
    thread.join(JOIN_SECONDS)
    assert comfy.events[0] == (EVENT_PREVIEW, pause.entry())
    assert comfy.events[1] == (EVENT_RESOLVED, {"token": pause.token, "node_id": "7", "route": 2,
                                                "extra": "published", "timed_out": False})
    assert bus.pending() == []


def test_the_gates_cancel_becomes_comfyuis_interrupt_and_still_reports():
    bus, comfy = GateBus(), FakeComfy()
    pause = bus.arm("3", 1)
    bus.cancel(pause.token)
    with pytest.raises(Interrupted), waiting(bus, comfy, pause, lambda p: {"cancelled": p.cancelled}, 0.01):
        raise AssertionError("the block must not run after Cancel")
    assert comfy.names() == [EVENT_PREVIEW, EVENT_RESOLVED]
    assert comfy.events[1][1]["cancelled"] is True


def test_comfyuis_interrupt_abandons_the_wait_and_forgets_the_pause():
    bus, comfy = GateBus(), FakeComfy()
    pause = bus.arm("4", 1)
    comfy.interrupt.set()
    with pytest.raises(Interrupted), waiting(bus, comfy, pause, lambda p: {}, 0.01):
        raise AssertionError("unreachable")
    assert bus.pending() == [] and comfy.names() == [EVENT_PREVIEW, EVENT_RESOLVED]


def test_a_failure_inside_the_block_still_forgets_the_pause_and_reports():
    bus, comfy = GateBus(), FakeComfy()
    pause = bus.arm("5", 1)
    bus.resolve(pause.token, 1)
    with pytest.raises(OSError), waiting(bus, comfy, pause, lambda p: {"route": p.route}, 0.01):
        raise OSError("disk full")
    assert comfy.events[-1] == (EVENT_RESOLVED, {"token": pause.token, "node_id": "5", "route": 1, "timed_out": False})
    assert bus.pending() == []
