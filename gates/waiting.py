"""The pause skeleton every gate kind shares: show the pause, wait for the person, always clean up.

A gate node arms a pause on the GateBus, then runs its decision inside `waiting(...)`: the preview
event goes to every tab, the wait ends on an answer (or raises ComfyUI's interrupt on Cancel, or on a
timeout whose on_timeout is cancel), and however the block ends the pause is forgotten and every tab
hears that it was resolved. `say` is how a gate tells the log, every tab and the node's UI output
what it did when that was not a person's choice. Plain Python: `comfy` is any object with broadcast /
check_interrupt / interrupted_exception (gates_compat in ComfyUI, a fake in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .constants import (
    EVENT_GATE_STATUS,
    EVENT_PREVIEW,
    EVENT_RESOLVED,
    GATE_STATUS_UI_KEY,
    ON_TIMEOUT_CANCEL,
    WAIT_SLICE_SECONDS,
)
from .pause import GateBus, GateCancelled, Pause
from .timeouts import describe

log = logging.getLogger("datasete_gates")

GATE_NAMES = {"image": "Image Gate", "grid": "Grid Pool Gate", "text": "Text Gate"}


def say(comfy, node_id, prompt_id, kind: str, reason: str, text: str, level: int = logging.INFO,
        tell: bool = True, workflow_id: str | None = None, **extra) -> dict:
    """Log `text` once, show it on the node in every tab (EVENT_GATE_STATUS, unless `tell` is false:
    then the caller sends it); the entry.

    `reason` and the fields in `extra` let the browser word it in its own language; `text` is the
    English sentence for the log and /history. `workflow_id` (origin.py) lets a page show it only on
    the node of the workflow that queued the run, at any depth of subgraphs, not on any node of that id.
    """
    entry = {"node_id": None if node_id is None else str(node_id), "prompt_id": prompt_id, "kind": kind,
             "workflow_id": workflow_id, "reason": reason, "text": text,
             "level": logging.getLevelName(level).lower(), **extra}
    log.log(level, "%s %s: %s", GATE_NAMES.get(kind, kind), entry["node_id"], text)
    if tell:
        comfy.broadcast(EVENT_GATE_STATUS, entry)
    return entry


def say_of(comfy, pause: Pause, reason: str, text: str, level: int = logging.INFO, tell: bool = True,
           **extra) -> dict:
    """say() about what became of `pause`: its node, prompt, kind and workflow come from the pause."""
    return say(comfy, pause.node_id, pause.prompt_id, pause.kind, reason, text, level, tell,
               workflow_id=pause.workflow_id, **extra)


def status_ui(*entries) -> dict:
    """The node's UI output holding these status entries ({} for none)."""
    found = [entry for entry in entries if entry]
    return {GATE_STATUS_UI_KEY: found} if found else {}


@contextmanager
def waiting(bus: GateBus, comfy, pause: Pause, resolved: Callable[[Pause], dict],
            slice_seconds: float = WAIT_SLICE_SECONDS, on_timeout: str = ON_TIMEOUT_CANCEL) -> Iterator[Pause]:
    """Announce `pause`, wait for its answer and yield the decided pause.

    A pause that timed out is yielded with `timed_out` set and no answer (the node applies
    `on_timeout`), except for on_timeout cancel, which ends the run as interrupted here.
    `resolved(pause)` gives the kind's fields of the resolved event; it is called when the block ends
    (after whatever the block did with the answer, such as a publish), so it can report that too.
    """
    try:
        comfy.broadcast(EVENT_PREVIEW, pause.entry())
        try:
            bus.wait(pause, comfy.check_interrupt, slice_seconds)
        except GateCancelled:
            raise comfy.interrupted_exception() from None
        if pause.timed_out:
            # Told after the resolved event, so a panel that goes idle on it then shows why.
            pause.notes.append(say_of(comfy, pause, "timed_out", describe(pause.timeout, on_timeout), tell=False,
                                      timeout=pause.timeout, on_timeout=on_timeout))
            if on_timeout == ON_TIMEOUT_CANCEL:
                raise comfy.interrupted_exception()
        yield pause
    finally:
        bus.discard(pause)
        event = {"token": pause.token, "node_id": pause.node_id, **resolved(pause), "timed_out": pause.timed_out}
        if pause.timed_out:
            event.update(on_timeout=on_timeout, timeout=pause.timeout)
        comfy.broadcast(EVENT_RESOLVED, event)
        for note in pause.notes:
            if note.get("reason") == "timed_out":
                comfy.broadcast(EVENT_GATE_STATUS, note)
