"""Every gate kind's `timeout` and `on_timeout` inputs: their widgets, their checks, their meaning.

Plain Python (no ComfyUI): the node modules build their inputs from `timeout_inputs` and check the
values with `parse_on_timeout` both when a prompt is queued (VALIDATE_INPUTS) and when the gate runs.
"""

from __future__ import annotations

from .constants import (
    GRID_ON_TIMEOUT,
    IMAGE_ON_TIMEOUT,
    ON_TIMEOUT_BLOCK,
    ON_TIMEOUT_CANCEL,
    TEXT_ON_TIMEOUT,
    TIMEOUT_MAX_SECONDS,
)

# What each choice does, for the tooltips (and the README, which says the same).
_MEANINGS = {
    ON_TIMEOUT_CANCEL: "cancel ends the run as interrupted, as ComfyUI's Cancel does",
    ON_TIMEOUT_BLOCK: "block blocks every output and the run succeeds",
}
KIND_MEANINGS = {
    "image": "route_N sends the image down that route as if it had been clicked (it must be one of the "
             "node's routes; the mask is the loaded one or none)",
    "grid": "keep_all keeps every shown item, keep_none rejects them all",
    "text": "approve passes the text as it was sent to the gate (and writes its caption), reject blocks "
            "the outputs",
}
CHOICES = {"image": IMAGE_ON_TIMEOUT, "grid": GRID_ON_TIMEOUT, "text": TEXT_ON_TIMEOUT}


class OnTimeoutError(ValueError):
    """An on_timeout (or timeout) value the gate cannot act on; the message names the value."""


def timeout_inputs(kind: str) -> dict:
    """The two optional inputs, added at the end of a gate's optional inputs (old workflows still load)."""
    choices = CHOICES[kind]
    return {
        "timeout": ("INT", {
            "default": 0, "min": 0, "max": TIMEOUT_MAX_SECONDS, "step": 1,
            "tooltip": "Seconds the gate waits for a person before it answers itself with on_timeout. "
                       "0 (the default) waits forever. Any interaction with the waiting gate (a stroke, "
                       "a toggle, a keystroke) restarts the countdown."}),
        "on_timeout": (list(choices), {
            "default": ON_TIMEOUT_CANCEL,
            "tooltip": "What the gate does when the timeout passes: " + _MEANINGS[ON_TIMEOUT_CANCEL] + "; "
                       + _MEANINGS[ON_TIMEOUT_BLOCK] + "; " + KIND_MEANINGS[kind] + "."}),
    }


def parse_timeout(timeout) -> int:
    """Seconds as a whole number from 0 to TIMEOUT_MAX_SECONDS; None (unset) is 0."""
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise OnTimeoutError(f"timeout must be a whole number of seconds, got {timeout!r}")
    if not 0 <= timeout <= TIMEOUT_MAX_SECONDS:
        raise OnTimeoutError(f"timeout {timeout} is out of range 0..{TIMEOUT_MAX_SECONDS} seconds")
    return timeout


def parse_on_timeout(kind: str, on_timeout, routes=None) -> str:
    """The checked on_timeout of a gate kind; for the Image Gate a route_N must be within `routes`.

    None (not given, or linked and not known yet) is the default, cancel.
    """
    if on_timeout is None:
        return ON_TIMEOUT_CANCEL
    choices = CHOICES[kind]
    if on_timeout not in choices:
        raise OnTimeoutError(f"on_timeout: {on_timeout!r} is not one of {list(choices)}")
    route = timeout_route(on_timeout)
    if route is not None and routes is not None and route > int(routes):
        raise OnTimeoutError(f"on_timeout: {on_timeout} is beyond routes = {routes}; pick a route from 1 to "
                             f"{routes}, {ON_TIMEOUT_BLOCK!r} or {ON_TIMEOUT_CANCEL!r}")
    return on_timeout


def timeout_route(on_timeout: str) -> int | None:
    """The 1-based route of a route_N choice, else None."""
    if isinstance(on_timeout, str) and on_timeout.startswith("route_"):
        return int(on_timeout.removeprefix("route_"))
    return None


def describe(timeout: int, on_timeout: str) -> str:
    """The English sentence for the log and the node: what the timeout did."""
    return f"timed out after {timeout} s with no answer: {on_timeout}"
