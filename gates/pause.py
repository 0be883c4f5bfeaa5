"""In-memory rendezvous between a waiting gate and the HTTP routes that decide it.

A gate arms a pause and waits; a route resolves or cancels it by token. Every
pause gets a fresh token, so a stale or doubled click can never decide a later
pause. Stdlib only: the gate node and the server both import it.
"""

from __future__ import annotations

import collections
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .constants import RESOLVED_TOKEN_MEMORY, WAIT_SLICE_SECONDS


class GateError(Exception):
    """A request that cannot decide a pause; `status` is the HTTP answer."""

    status = 400


class UnknownToken(GateError):
    status = 404


class AlreadyResolved(GateError):
    status = 409


class RouteOutOfRange(GateError):
    status = 400


class GateCancelled(Exception):
    """The person pressed the gate's own Cancel."""


@dataclass
class Pause:
    token: str
    node_id: str
    prompt_id: str | None
    routes: int
    images: list[dict]
    source: str
    slot: str | None = None
    width: int = 0
    height: int = 0
    frames: int = 1
    route: int | None = None
    mask: Any = None
    cancelled: bool = False
    decided: threading.Event = field(default_factory=threading.Event)

    def entry(self) -> dict:
        """The public JSON form served by /pending and sent with the preview event."""
        return {
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

    def __init__(self, resolved_memory: int = RESOLVED_TOKEN_MEMORY):
        self._lock = threading.Lock()
        self._pauses: dict[str, Pause] = {}
        self._resolved: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._resolved_memory = resolved_memory

    def arm(self, node_id: str, routes: int, *, prompt_id: str | None = None, images=(),
            source: str = "input", slot: str | None = None, width: int = 0, height: int = 0,
            frames: int = 1) -> Pause:
        pause = Pause(token=secrets.token_urlsafe(16), node_id=str(node_id), prompt_id=prompt_id,
                      routes=int(routes), images=list(images), source=source, slot=slot,
                      width=int(width), height=int(height), frames=int(frames))
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

    def cancel(self, token: Any) -> Pause:
        with self._lock:
            pause = self._undecided(token)
            pause.cancelled = True
            self._decide(pause)
        return pause

    def wait(self, pause: Pause, check_interrupt: Callable[[], None] | None = None,
             slice_seconds: float = WAIT_SLICE_SECONDS) -> Pause:
        """Block until the pause is decided; `check_interrupt` raises to abandon the wait.

        Wakes at once on a decision; the slices only bound how late an interrupt is seen.
        The pause is forgotten however the wait ends, so nothing is left behind.
        """
        try:
            while not pause.decided.wait(slice_seconds):
                if check_interrupt is not None:
                    check_interrupt()
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


GATES = GateBus()
