"""The pause skeleton every gate kind shares: show the pause, wait for the person, always clean up.

A gate node arms a pause on the GateBus, then runs its decision inside `waiting(...)`: the preview
event goes to every tab, the wait ends on an answer (or raises ComfyUI's interrupt on Cancel), and
however the block ends the pause is forgotten and every tab hears that it was resolved. Plain
Python: `comfy` is any object with broadcast / check_interrupt / interrupted_exception (gates_compat
in ComfyUI, a fake in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .constants import EVENT_PREVIEW, EVENT_RESOLVED, WAIT_SLICE_SECONDS
from .pause import GateBus, GateCancelled, Pause


@contextmanager
def waiting(bus: GateBus, comfy, pause: Pause, resolved: Callable[[Pause], dict],
            slice_seconds: float = WAIT_SLICE_SECONDS) -> Iterator[Pause]:
    """Announce `pause`, wait for its answer and yield the decided pause.

    `resolved(pause)` gives the kind's fields of the resolved event; it is called when the block ends
    (after whatever the block did with the answer, such as a publish), so it can report that too.
    """
    try:
        comfy.broadcast(EVENT_PREVIEW, pause.entry())
        try:
            bus.wait(pause, comfy.check_interrupt, slice_seconds)
        except GateCancelled:
            raise comfy.interrupted_exception() from None
        yield pause
    finally:
        bus.discard(pause)
        comfy.broadcast(EVENT_RESOLVED, {"token": pause.token, "node_id": pause.node_id, **resolved(pause)})
