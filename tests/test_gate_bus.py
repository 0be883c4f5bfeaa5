"""GateBus: the rendezvous between a gate waiting in the prompt worker and the HTTP routes on the server loop."""

from __future__ import annotations

import threading

import pytest

from gates.pause import (
    ANSWER_PARSERS,
    AlreadyResolved,
    BadAnswer,
    GateBus,
    GateCancelled,
    GateError,
    RouteOutOfRange,
    UnknownToken,
    register_answer_parser,
    validate_route,
)

# Long enough that a wait which only noticed the decision at the end of a slice would
# outlive the join below: the tests then fail rather than pass slowly.
NEVER = 3600.0
JOIN_SECONDS = 20.0


class Waiter:
    """Runs bus.wait on its own thread, like ComfyUI's prompt worker, and keeps what it ended with."""

    def __init__(self, bus: GateBus, pause, check_interrupt=None, slice_seconds: float = NEVER):
        self.result = None
        self.error: BaseException | None = None
        self.started = threading.Event()

        def body():
            self.started.set()
            try:
                self.result = bus.wait(pause, check_interrupt, slice_seconds)
            except BaseException as exc:  # noqa: BLE001 - the test inspects whatever ended the wait
                self.error = exc

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        assert self.started.wait(JOIN_SECONDS)

    def join(self):
        self.thread.join(JOIN_SECONDS)
        assert not self.thread.is_alive(), "the wait did not end"
        return self


def in_thread(fn, *args):
    """Call fn on another thread and return what it returned or raised."""
    box = {}

    def body():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(JOIN_SECONDS)
    assert not thread.is_alive()
    return box


def test_resolve_from_another_thread_wakes_the_wait_without_waiting_for_a_slice():
    bus = GateBus()
    pause = bus.arm("7", 3, prompt_id="p1", width=4, height=2)
    waiter = Waiter(bus, pause)
    box = in_thread(bus.resolve, pause.token, 2, "painted")
    assert "error" not in box
    waiter.join()
    assert waiter.error is None
    assert waiter.result is pause
    assert (pause.route, pause.mask, pause.cancelled) == (2, "painted", False)
    assert bus.pending() == []


def test_resolve_before_the_wait_starts_is_not_lost():
    bus = GateBus()
    pause = bus.arm("7", 2)
    bus.resolve(pause.token, 1)
    assert bus.wait(pause, None, NEVER).route == 1


def test_cancel_from_another_thread_raises_gate_cancelled_in_the_waiter():
    bus = GateBus()
    pause = bus.arm("7", 2)
    waiter = Waiter(bus, pause)
    assert "error" not in in_thread(bus.cancel, pause.token)
    waiter.join()
    assert isinstance(waiter.error, GateCancelled)
    assert "7" in str(waiter.error)
    assert pause.route is None
    assert bus.pending() == []


def test_pending_lists_the_armed_pause_as_its_public_entry():
    bus = GateBus()
    images = [{"filename": "a.png", "subfolder": "", "type": "temp"}]
    pause = bus.arm(12, 4, prompt_id="p9", images=images, source="input", width=8, height=6, frames=1)
    [entry] = bus.pending()
    assert entry == {
        "kind": "image", "token": pause.token, "node_id": "12", "prompt_id": "p9", "routes": 4, "images": images,
        "source": "input", "slot": None, "width": 8, "height": 6, "frames": 1, "deadline": None, "timeout": 0,
        "on_timeout": None,
    }
    assert bus.get(pause.token) is pause


def test_every_pause_gets_a_fresh_token_even_for_the_same_node():
    bus = GateBus()
    tokens = {bus.arm("same-node", 2).token for _ in range(500)}
    assert len(tokens) == 500
    assert all(isinstance(t, str) and len(t) >= 16 for t in tokens)


@pytest.mark.parametrize("how", ["resolved", "cancelled", "discarded"])
def test_a_stale_token_answers_409_and_never_decides_a_later_pause(how):
    bus = GateBus()
    first = bus.arm("7", 2)
    if how == "resolved":
        bus.resolve(first.token, 1)
        bus.wait(first, None, NEVER)
    elif how == "cancelled":
        bus.cancel(first.token)
        with pytest.raises(GateCancelled):
            bus.wait(first, None, NEVER)
    else:  # the prompt was interrupted: the node discards its pause on the way out
        bus.discard(first)

    later = bus.arm("7", 2)  # the same node pauses again on the next run
    for attempt in (lambda: bus.resolve(first.token, 2), lambda: bus.cancel(first.token),
                    lambda: bus.get(first.token)):
        with pytest.raises(AlreadyResolved) as caught:
            attempt()
        assert caught.value.status == 409
        assert first.token in str(caught.value)
    assert not later.decided.is_set()
    assert [e["token"] for e in bus.pending()] == [later.token]
    bus.resolve(later.token, 2)
    assert bus.wait(later, None, NEVER).route == 2


def test_a_double_click_decides_once():
    bus = GateBus()
    pause = bus.arm("7", 3)
    bus.resolve(pause.token, 3)
    with pytest.raises(AlreadyResolved):
        bus.resolve(pause.token, 1)
    with pytest.raises(AlreadyResolved):
        bus.cancel(pause.token)
    assert (pause.route, pause.cancelled) == (3, False)


def test_racing_choices_from_many_threads_decide_exactly_once():
    bus = GateBus()
    pause = bus.arm("7", 8)
    barrier = threading.Barrier(8)
    outcomes = []
    lock = threading.Lock()

    def click(route):
        barrier.wait()
        try:
            bus.resolve(pause.token, route)
            result = ("ok", route)
        except AlreadyResolved:
            result = ("409", route)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=click, args=(route,)) for route in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    winners = [route for kind, route in outcomes if kind == "ok"]
    assert len(outcomes) == 8 and len(winners) == 1
    assert pause.route == winners[0]


@pytest.mark.parametrize("token", ["no-such-token", "", None, 5, 1.5, ["x"], {"a": 1}, True])
def test_an_unknown_token_answers_404(token):
    bus = GateBus()
    pause = bus.arm("7", 2)
    for attempt in (lambda: bus.resolve(token, 1), lambda: bus.cancel(token), lambda: bus.get(token)):
        with pytest.raises(UnknownToken) as caught:
            attempt()
        assert caught.value.status == 404
    assert not pause.decided.is_set()


def test_a_token_forgotten_from_the_resolved_memory_still_cannot_decide_anything():
    bus = GateBus(resolved_memory=2)
    old = [bus.arm("7", 2) for _ in range(3)]
    for pause in old:
        bus.resolve(pause.token, 1)
        bus.wait(pause, None, NEVER)
    live = bus.arm("7", 2)
    with pytest.raises(UnknownToken):
        bus.resolve(old[0].token, 2)  # too old to be remembered: 404, not 409
    for pause in old[1:]:
        with pytest.raises(AlreadyResolved):
            bus.resolve(pause.token, 2)
    assert not live.decided.is_set()


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


def test_interrupt_polling_ends_the_wait_and_leaves_no_pending_entry():
    bus = GateBus()
    pause = bus.arm("7", 2)
    flag = threading.Event()
    polls = []

    def check_interrupt():
        polls.append(1)
        if flag.is_set():
            raise Interrupted("processing interrupted")

    waiter = Waiter(bus, pause, check_interrupt, slice_seconds=0.01)
    flag.set()  # what POST /interrupt does in ComfyUI: only a flag, set from the server thread
    waiter.join()
    assert isinstance(waiter.error, Interrupted)
    assert polls, "check_interrupt was never called"
    assert bus.pending() == []
    assert pause.decided.is_set() and pause.cancelled
    with pytest.raises(AlreadyResolved):
        bus.resolve(pause.token, 1)  # a click that arrives late is told so, and decides nothing
    assert pause.route is None


def test_an_interrupt_before_any_decision_does_not_leak_into_the_next_pause():
    bus = GateBus()
    first = bus.arm("7", 2)

    def interrupted():
        raise Interrupted()

    with pytest.raises(Interrupted):
        bus.wait(first, interrupted, 0.001)
    second = bus.arm("7", 2)
    waiter = Waiter(bus, second)
    bus.resolve(second.token, 2)
    waiter.join()
    assert waiter.error is None and second.route == 2


def test_two_gates_waiting_at_once_are_decided_independently():
    bus = GateBus()
    a, b = bus.arm("1", 2), bus.arm("2", 3)
    wa, wb = Waiter(bus, a), Waiter(bus, b)
    bus.resolve(b.token, 3)
    wb.join()
    assert wa.thread.is_alive()
    assert [e["node_id"] for e in bus.pending()] == ["1"]
    bus.cancel(a.token)
    wa.join()
    assert isinstance(wa.error, GateCancelled) and wb.result.route == 3


@pytest.mark.parametrize("route", [True, False, "1", "2", 1.0, 2.5, None, [1], {"r": 1}, 0, -1, 4, 10**30])
def test_bad_routes_are_refused_with_400_and_the_gate_stays_pending(route):
    bus = GateBus()
    pause = bus.arm("7", 3)
    with pytest.raises(RouteOutOfRange) as caught:
        bus.resolve(pause.token, route)
    assert caught.value.status == 400
    assert isinstance(caught.value, GateError)
    assert repr(route)[:20] in str(caught.value) or str(route) in str(caught.value)
    assert not pause.decided.is_set()
    assert bus.pending()[0]["token"] == pause.token
    bus.resolve(pause.token, 3)
    assert bus.wait(pause, None, NEVER).route == 3


@pytest.mark.parametrize("routes", [1, 2, 8])
def test_every_route_from_1_to_routes_is_valid(routes):
    for route in range(1, routes + 1):
        assert validate_route(route, routes) == route
    with pytest.raises(RouteOutOfRange, match=f"1..{routes}"):
        validate_route(routes + 1, routes)
    with pytest.raises(RouteOutOfRange):
        validate_route(0, routes)


# --- kinds other than the Image Gate's -----------------------------------------------------------

def _keep_parser(pause, body):
    keep = body.get("keep")
    if not isinstance(keep, list) or not all(isinstance(i, int) and 0 <= i < pause.details["count"] for i in keep):
        raise BadAnswer(f"keep must be a list of indexes below {pause.details['count']}, got {keep!r}")
    return sorted(keep)


@pytest.fixture
def keep_kind():
    register_answer_parser("test-keep", _keep_parser)
    yield "test-keep"
    ANSWER_PARSERS.pop("test-keep", None)


def test_a_kind_is_answered_through_its_parser_and_its_entry_carries_its_details(keep_kind):
    bus = GateBus()
    pause = bus.arm("9", kind=keep_kind, details={"count": 3, "items": ["a", "b", "c"]})
    entry = bus.pending()[0]
    assert (entry["kind"], entry["count"], entry["items"], entry["node_id"]) == (keep_kind, 3, ["a", "b", "c"], "9")
    waiter = Waiter(bus, pause)
    with pytest.raises(BadAnswer):
        bus.answer(pause.token, {"keep": [0, 7]})
    assert not pause.decided.is_set(), "a refused answer must leave the gate waiting"
    bus.answer(pause.token, {"keep": [2, 0]})
    waiter.join()
    assert waiter.error is None and pause.answer == [0, 2]
    with pytest.raises(AlreadyResolved):
        bus.answer(pause.token, {"keep": []})


def test_an_image_gate_is_not_answered_like_another_kind_and_an_unknown_kind_takes_no_answer():
    bus = GateBus()
    image = bus.arm("1", 2)
    assert bus.pending()[0]["kind"] == "image"
    with pytest.raises(BadAnswer):
        bus.answer(image.token, {"keep": []})
    odd = bus.arm("2", kind="no-such-kind")
    with pytest.raises(BadAnswer):
        bus.answer(odd.token, {})
    assert len(bus.pending()) == 2
