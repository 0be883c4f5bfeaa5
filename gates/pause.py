"""In-memory rendezvous between a waiting gate and the HTTP routes that decide it.

A gate arms a pause and waits; a route resolves or cancels it by token. Every
pause gets a fresh token, so a stale or doubled click can never decide a later
pause. Stdlib only: every gate node and the server import it.

Every gate kind shares this protocol. A pause has a `kind` ("image", "grid", "text"):
the Image Gate's answer is a route and an optional mask (`resolve`); the other kinds'
answers are checked by the parser registered for their kind (`answer`), so the HTTP
route and the review pages never need to know a kind's rules.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .constants import KIND_IMAGE, RESOLVED_TOKEN_MEMORY, WAIT_SLICE_SECONDS


class GateError(Exception):
    """A request that cannot decide a pause; `status` is the HTTP answer."""

    status = 400


class UnknownToken(GateError):
    status = 404


class AlreadyResolved(GateError):
    status = 409


class RouteOutOfRange(GateError):
    status = 400


class BadAnswer(GateError):
    """An answer body that does not fit the waiting gate's kind; the gate keeps waiting."""

    status = 400


class GateCancelled(Exception):
    """The person pressed the gate's own Cancel."""


__all__ = ["KIND_IMAGE"]  # re-exported: the server and the nodes take it from here too


@dataclass
class Pause:
    token: str
    node_id: str
    prompt_id: str | None
    routes: int
    images: list[dict]
    source: str
    kind: str = KIND_IMAGE
    # Public, kind-specific fields of the pending entry (a grid's "items", a text gate's "text").
    details: dict = field(default_factory=dict)
    # The decision of a kind other than "image", as its parser returned it.
    answer: Any = None
    slot: str | None = None
    width: int = 0
    height: int = 0
    frames: int = 1
    route: int | None = None
    mask: Any = None
    cancelled: bool = False
    # Seconds of no interaction after which the gate answers itself (0: never), and when that is
    # (epoch seconds; None without a timeout). A touch moves the deadline on.
    timeout: int = 0
    deadline: float | None = None
    timed_out: bool = False
    # What the gate does when the deadline passes (shown with the countdown); None without a timeout.
    on_timeout: str | None = None
    # Status entries said about this pause (a timeout), for the node's UI output.
    notes: list = field(default_factory=list)
    decided: threading.Event = field(default_factory=threading.Event)

    @property
    def workflow_id(self) -> str | None:
        """The id of the workflow that queued this pause (see origin.py), or None."""
        return self.details.get("workflow_id")

    def entry(self) -> dict:
        """The public JSON form served by /pending and sent with the preview event."""
        return {
            **self.details,
            "kind": self.kind,
            "token": self.token,
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "routes": self.routes,
            "images": list(self.images),
            "source": self.source,
            "slot": self.slot,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "deadline": self.deadline,
            "timeout": self.timeout,
            "on_timeout": self.on_timeout,
        }


def validate_route(route: Any, routes: int) -> int:
    """A route must be a whole number from 1 to `routes`; bools and strings are refused."""
    if isinstance(route, bool) or not isinstance(route, int):
        raise RouteOutOfRange(f"route must be a whole number from 1 to {routes}, got {route!r}")
    if not 1 <= route <= routes:
        raise RouteOutOfRange(f"route {route} is out of range 1..{routes}")
    return route


class GateBus:
    """Pauses by token. Thread-safe: gates wait in the prompt worker, routes run on the server loop."""

    def __init__(self, resolved_memory: int = RESOLVED_TOKEN_MEMORY, clock: Callable[[], float] = time.time):
        # Deadlines are wall-clock epoch seconds, because browsers count down to them.
        self._clock = clock
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._resolved: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._resolved_memory = resolved_memory

    def arm(self, node_id: str, routes: int = 0, *, prompt_id: str | None = None, images=(),
            source: str = "input", slot: str | None = None, width: int = 0, height: int = 0,
            frames: int = 1, kind: str = KIND_IMAGE, details: dict | None = None, timeout: int = 0,
            on_timeout: str | None = None) -> Pause:
        timeout = max(0, int(timeout or 0))
        pause = Pause(token=secrets.token_urlsafe(16), node_id=str(node_id), prompt_id=prompt_id,
                      routes=int(routes), images=list(images), source=source, slot=slot,
                      width=int(width), height=int(height), frames=int(frames), kind=kind,
                      details=dict(details or {}), timeout=timeout, on_timeout=on_timeout if timeout else None,
                      deadline=self._clock() + timeout if timeout else None)
        with self._lock:
            self._pauses[pause.token] = pause
        return pause

    def pending(self) -> list[dict]:
        with self._lock:
            return [p.entry() for p in self._pauses.values() if not p.decided.is_set()]

    def get(self, token: Any) -> Pause:
        """The undecided pause for `token`, or the error a route should answer."""
        with self._lock:
            return self._undecided(token)

    def resolve(self, token: Any, route: Any, mask: Any = None) -> Pause:
        """Decide a pause: the chosen 1-based route, and an optional decoded mask."""
        with self._lock:
            pause = self._undecided(token)
            validate_route(route, pause.routes)
            pause.route = route
            pause.mask = mask
            self._decide(pause)
        return pause

    def answer(self, token: Any, body: dict) -> Pause:
        """Decide a pause of a kind with a registered parser; a body that does not fit raises BadAnswer.

        The parser runs outside the lock (it may decode pixels); the pause is then decided only if
        it is still undecided, so two answers racing each other decide it once.
        """
        pause = self.get(token)
        if pause.kind == KIND_IMAGE:
            raise BadAnswer("an image gate is answered with a route (and an optional mask)")
        parser = ANSWER_PARSERS.get(pause.kind)
        if parser is None:
            raise BadAnswer(f"gate kind {pause.kind!r} takes no answer")
        parsed = parser(pause, body)
        with self._lock:
            pause = self._undecided(token)
            pause.answer = parsed
            self._decide(pause)
        return pause

    def touch(self, token: Any) -> Pause:
        """The person is still at it: restart the countdown of a pause with a timeout (a no-op without)."""
        with self._lock:
            pause = self._undecided(token)
            if pause.timeout:
                pause.deadline = self._clock() + pause.timeout
        return pause

    def expire(self, pause: Pause) -> bool:
        """Decide `pause` as timed out if its deadline has passed and nothing decided it first."""
        with self._lock:
            if pause.decided.is_set() or pause.deadline is None or self._clock() < pause.deadline:
                return False
            pause.timed_out = True
            self._decide(pause)
        return True

    def cancel(self, token: Any) -> Pause:
        with self._lock:
            pause = self._undecided(token)
            pause.cancelled = True
            self._decide(pause)
        return pause

    def wait(self, pause: Pause, check_interrupt: Callable[[], None] | None = None,
             slice_seconds: float = WAIT_SLICE_SECONDS) -> Pause:
        """Block until the pause is decided or times out; `check_interrupt` raises to abandon the wait.

        Wakes at once on a decision; the slices only bound how late an interrupt or a deadline is
        seen. A timed-out pause returns with `timed_out` set and no answer. The pause is forgotten
        however the wait ends, so nothing is left behind.
        """
        try:
            while not pause.decided.wait(slice_seconds):
                if check_interrupt is not None:
                    check_interrupt()
                self.expire(pause)
        finally:
            self.discard(pause)
        if pause.cancelled:
            raise GateCancelled(f"gate {pause.node_id} was cancelled")
        return pause

    def discard(self, pause: Pause) -> None:
        """Forget a pause (decided or abandoned); later requests with its token get 409."""
        with self._lock:
            if self._pauses.pop(pause.token, None) is not None:
                self._remember(pause.token)
            if not pause.decided.is_set():
                pause.cancelled = True
                pause.decided.set()

    def _undecided(self, token: Any) -> Pause:
        if not isinstance(token, str) or not token:
            raise UnknownToken(f"unknown token {token!r}")
        pause = self._pauses.get(token)
        if pause is None:
            if token in self._resolved:
                raise AlreadyResolved(f"token {token!r} was already resolved")
            raise UnknownToken(f"unknown token {token!r}")
        if pause.decided.is_set():
            raise AlreadyResolved(f"token {token!r} was already resolved")
        return pause

    def _decide(self, pause: Pause) -> None:
        pause.decided.set()
        self._remember(pause.token)

    def _remember(self, token: str) -> None:
        self._resolved[token] = None
        self._resolved.move_to_end(token)
        while len(self._resolved) > self._resolved_memory:
            self._resolved.popitem(last=False)


# kind -> parser(pause, body) -> answer; each gate kind's module registers its own.
ANSWER_PARSERS: dict[str, Callable[[Pause, dict], Any]] = {}


def register_answer_parser(kind: str, parser: Callable[[Pause, dict], Any]) -> None:
    ANSWER_PARSERS[kind] = parser


GATES = GateBus()
