"""Part 8: the gate's in-node UI in a real browser, through reloads, two tabs and a dropped websocket.

Each scenario runs in cycles against a real ComfyUI and its own frontend in Debian chromium. A cycle passes
only if the node shows the right pause (by token) and a click on a route button inside the node decides it:
the prompt succeeds and every tab goes idle.

The websocket is dropped with Playwright's WebSocket routing: the page's socket is relayed to the server,
then closed; the frontend reconnects every 300 ms, and until the test restores the relay each reconnect
lands on a silent socket, so the page misses every event of that time, as over a dead connection.
"""

from __future__ import annotations

import re
import statistics
import time

from browser_helpers import (
    GATE_NODE_ID,
    example_workflow,
    launch_chromium,
    load_workflow,
    open_comfy,
    panel,
    prepare_frontend,
    queue_gate,
    wait_idle,
    wait_paused,
    wait_ready,
)
from comfy_server import PACK_FOLDER_NAME

from .harness import PartResult, history_status, timed, wait_finished

SETTLE_SECONDS = 60.0


class SocketSwitch:
    """Relays a page's websocket to the server until dropped; while down, reconnects stay silent."""

    def __init__(self, page):
        self.up = True
        self.routes = []
        self.connections = 0
        page.route_web_socket(re.compile(r"/ws(\?|$)"), self._route)

    def _route(self, socket):
        self.connections += 1
        self.routes.append(socket)
        if not self.up:
            return  # not connected to the server: the page sees an open socket that never speaks
        server_side = socket.connect_to_server()
        server_side.on_message(lambda message: socket.send(message))
        socket.on_message(lambda message: server_side.send(message))

    def drop(self) -> None:
        self.up = False
        self._close_all()

    def restore(self) -> None:
        self.up = True
        self._close_all()

    def _close_all(self) -> None:
        routes, self.routes = self.routes, []
        for socket in routes:
            try:
                socket.close(code=1001, reason="reliability test")
            except Exception:  # noqa: BLE001 - a socket the page already closed
                pass


def click_route(page, route: int) -> None:
    panel(page).locator(f"button[data-route='{route}']").click()


def finished_ok(server, prompt_id: str) -> bool:
    return history_status(wait_finished(server, prompt_id, SETTLE_SECONDS)) == "success"


def settle(server) -> None:
    """No gate left waiting and the queue empty, whatever a failed cycle left behind."""
    try:
        server.settle(SETTLE_SECONDS)
    except AssertionError:
        pass  # the next cycle's own checks report what is still wrong


class Scenarios:
    def __init__(self, server, context, result: PartResult):
        self.server = server
        self.context = context
        self.result = result
        self.errors: list[str] = []
        self.passed: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.seconds_to_show: dict[str, list[float]] = {}

    def attempt(self, name: str, cycle) -> None:
        self.passed.setdefault(name, 0)
        self.failed.setdefault(name, 0)
        try:
            ok = cycle()
        except Exception as exc:  # noqa: BLE001 - a failed cycle is a figure, not the end of the run
            ok = False
            self.result.note(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
        if ok:
            self.passed[name] += 1
        else:
            self.failed[name] += 1
        settle(self.server)

    def shown(self, name: str, started: float) -> None:
        self.seconds_to_show.setdefault(name, []).append(time.monotonic() - started)

    # --- the scenarios -------------------------------------------------------------------------------------

    def reload_while_waiting(self, page) -> bool:
        entry = queue_gate(page, self.server)
        wait_paused(page, entry["token"])
        started = time.monotonic()
        page.reload()
        wait_ready(page)
        wait_paused(page, entry["token"])
        self.shown("reload while waiting", started)
        click_route(page, 1)
        ok = finished_ok(self.server, entry["prompt_id"])
        wait_idle(page)
        return ok

    def two_tabs(self, first, second, chooser: int) -> bool:
        entry = queue_gate(first, self.server)
        wait_paused(first, entry["token"])
        wait_paused(second, entry["token"])
        deciding, other = (first, second) if chooser == 0 else (second, first)
        click_route(deciding, 2)
        ok = finished_ok(self.server, entry["prompt_id"])
        wait_idle(deciding)
        wait_idle(other)  # a choice in one tab clears the other
        return ok

    def websocket_dropped(self, page, switch: SocketSwitch) -> bool:
        first = queue_gate(page, self.server)
        wait_paused(page, first["token"])
        switch.drop()
        # Let the frontend's first reconnect land on the silent socket (it then asks /pending, which still
        # lists the first pause), so what follows happens while the page can hear nothing.
        page.wait_for_timeout(1000)
        # While the page is deaf: another client decides the first pause and a second one starts.
        status, _ = self.server.post_json("/datasete_gate/choose", {"token": first["token"], "route": 1})
        if status != 200 or not finished_ok(self.server, first["prompt_id"]):
            return False
        second = queue_gate(page, self.server)
        page.wait_for_timeout(500)
        state = panel(page).get_attribute("data-token")
        if state == second["token"]:
            self.result.note("websocket dropped: the page saw the second pause while its socket was down")
            return False
        started = time.monotonic()
        switch.restore()
        wait_paused(page, second["token"])  # on "reconnected" the page asks /pending
        self.shown("websocket dropped and reconnected", started)
        click_route(page, 2)
        ok = finished_ok(self.server, second["prompt_id"])
        wait_idle(page)
        return ok


def run(server, chromium_executable: str, *, cycles: int, browser=None) -> PartResult:
    """`cycles` rounds of each scenario against `server` (a started ComfyServer), in `browser` if given
    (a running Playwright browser; under pytest, the session's), else in a chromium of its own."""
    from playwright.sync_api import sync_playwright

    result = PartResult("8", "Browser resilience")
    with timed(result):
        prepare_frontend(server)
        if browser is not None:
            scenarios = _run_scenarios(browser, server, result, cycles)
        else:
            with sync_playwright() as playwright:
                own = launch_chromium(playwright, chromium_executable)
                try:
                    scenarios = _run_scenarios(own, server, result, cycles)
                finally:
                    own.close()
    ours = [error for error in scenarios.errors if f"/extensions/{PACK_FOLDER_NAME}/" in error]
    for error in ours[:5]:
        result.note(f"page error: {error[:300]}")
    for name in scenarios.passed:
        result.equal(f"{name}: cycles where the node showed the pause and a click in it decided it",
                     f"{scenarios.passed[name]} / {scenarios.passed[name] + scenarios.failed[name]}",
                     f"{cycles} / {cycles}")
    for name, seconds in scenarios.seconds_to_show.items():
        result.stated(f"{name}: seconds until the node showed the pause again (median, max)",
                      f"{statistics.median(seconds):.2f}, {max(seconds):.2f}")
    result.at_most("uncaught errors from the pack's scripts on the pages", len(ours), 0)
    return result


def _run_scenarios(browser, server, result: PartResult, cycles: int) -> Scenarios:
    from browser_helpers import VIEWPORT

    context = browser.new_context(viewport=VIEWPORT)
    scenarios = Scenarios(server, context, result)
    try:
        page = open_comfy(context, server, scenarios.errors)
        load_workflow(page, example_workflow())
        for _ in range(cycles):
            scenarios.attempt("reload while waiting", lambda: scenarios.reload_while_waiting(page))

        second = open_comfy(context, server, scenarios.errors)  # the same workflow, restored in a new tab
        second.wait_for_selector(f".dsg-gate[data-node-id='{GATE_NODE_ID}']", state="attached")
        for index in range(cycles):
            scenarios.attempt("two tabs, a choice in one clears the other",
                              lambda index=index: scenarios.two_tabs(page, second, index % 2))
        second.close()

        switches: list[SocketSwitch] = []
        deaf = open_comfy(context, server, scenarios.errors,
                          before_load=lambda tab: switches.append(SocketSwitch(tab)))
        deaf.wait_for_selector(f".dsg-gate[data-node-id='{GATE_NODE_ID}']", state="attached")
        for _ in range(cycles):
            scenarios.attempt("websocket dropped and reconnected",
                              lambda: scenarios.websocket_dropped(deaf, switches[0]))
        result.stated("websocket connections the dropped page opened (first + reconnects)", switches[0].connections)
    finally:
        context.close()
    return scenarios
