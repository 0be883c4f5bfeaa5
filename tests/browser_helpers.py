"""Driving the real ComfyUI frontend in Debian chromium with Playwright, for the browser tier."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

from comfy_server import REPO_ROOT, ComfyServer

EXAMPLE_WORKFLOW = REPO_ROOT / "example_workflows" / "image_gate_basic.json"
GATE_NODE_ID = "4"  # the Image Gate in image_gate_basic.json
VIEWPORT = {"width": 1600, "height": 1000}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Settings that keep first-run screens (the template browser for a new user) and overlays
# (the minimap, the canvas info and menu, the selection toolbox) out of the way. They live in
# the server's user folder, so a page opened afterwards starts straight on the canvas.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Canvas.SelectionToolbox": False,
    "Comfy.Locale": "en",  # whatever the browser says; a test that switches it leaves no trace
}

# The frontend is ready when it has set window.app, knows the gate node type and has
# restored or loaded a workflow (the workflow store then has an active workflow).
APP_READY = """() => !!(window.app && window.app.graph && window.LiteGraph
    && window.LiteGraph.registered_node_types && window.LiteGraph.registered_node_types.DataseteImageGate
    && window.app.extensionManager && window.app.extensionManager.workflow
    && window.app.extensionManager.workflow.activeWorkflow)"""


def launch_chromium(playwright, executable_path: str):
    return playwright.chromium.launch(executable_path=executable_path, headless=True, args=CHROMIUM_ARGS)


def prepare_frontend(server: ComfyServer, vue_nodes: bool = False) -> None:
    """First-run screens off, and Nodes 2.0 (Vue-rendered nodes) on or off, for pages opened from now on."""
    status, answer = server.post_json("/settings", {**FRONTEND_SETTINGS, "Comfy.VueNodes.Enabled": vue_nodes})
    if status != 200:
        raise AssertionError(f"POST /settings answered {status}: {answer}")


def dismiss_dialogs(page, rounds: int = 5) -> None:
    """Close whatever modal the frontend opened on its own (template browser, notices)."""
    for _ in range(rounds):
        dialogs = page.locator(".p-dialog:visible")
        if dialogs.count() == 0:
            return
        close = page.locator(".p-dialog:visible .p-dialog-close-button")
        if close.count():
            close.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(200)
    raise AssertionError("a frontend dialog would not close")


def open_comfy(context, server: ComfyServer, errors: list | None = None, before_load=None):
    """A new tab on the real ComfyUI page, ready to use; page errors are collected into `errors`.

    `before_load(page)` runs before the page is opened (to route its websocket, say).
    """
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack or ''}"))
    if before_load is not None:
        before_load(page)
    page.goto(server.url)
    wait_ready(page)
    return page


def wait_ready(page, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(APP_READY, timeout=timeout_ms)
    dismiss_dialogs(page)


def example_workflow(*, batch_size: int = 1) -> dict:
    """image_gate_basic.json as shipped, with `batch_size` frames in its picture."""
    workflow = json.loads(EXAMPLE_WORKFLOW.read_text())
    for node in workflow["nodes"]:
        if node.get("title") == "Background":
            node["widgets_values"][2] = batch_size
    return workflow


def without_gate_image(workflow: dict, get_id: str = "") -> dict:
    """The workflow with the gate's image input unwired (so it reads its get_id slot)."""
    workflow = copy.deepcopy(workflow)
    gate = next(node for node in workflow["nodes"] if str(node["id"]) == GATE_NODE_ID)
    image_input = next(slot for slot in gate["inputs"] if slot["name"] == "image")
    link_id = image_input["link"]
    image_input["link"] = None
    workflow["links"] = [link for link in workflow["links"] if link[0] != link_id]
    for node in workflow["nodes"]:
        for output in node.get("outputs", []):
            if output.get("links") and link_id in output["links"]:
                output["links"].remove(link_id)
    gate["widgets_values"][2] = get_id
    return workflow


def load_workflow(page, workflow: dict, node_id: str = GATE_NODE_ID) -> None:
    """Open `workflow` as a person would; ready when the gate node carries its panel widget (which a
    frontend without DOM widgets in Nodes 2.0 attaches to the page only when the gate waits)."""
    page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    page.wait_for_function(
        """id => (window.app.graph.getNodeById(id)?.widgets ?? []).some(w => w.name === 'gate_panel')""",
        arg=node_id, timeout=30_000)


def queue_from_page(page) -> None:
    """Queue the workflow on screen, as the Run button does."""
    page.evaluate("() => window.app.queuePrompt(0, 1)")


def queue_gate(page, server: ComfyServer, timeout: float = 60.0, node_id: str = GATE_NODE_ID) -> dict:
    """Queue the page's workflow (as the Run button does); the new pending entry of gate `node_id`."""
    before = {entry["token"] for entry in server.pending()}
    queue_from_page(page)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [e for e in server.pending() if e["token"] not in before and e["node_id"] == node_id]
        if fresh:
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError(f"the queued workflow did not pause at the gate:\n{server.log_tail()}")


def panel(page, node_id: str = GATE_NODE_ID):
    return page.locator(f".dsg-gate[data-node-id='{node_id}']")


def wait_paused(page, token: str, node_id: str = GATE_NODE_ID, timeout_ms: int = 30_000):
    """The node's panel shows the pause `token`, with its preview image loaded."""
    gate = panel(page, node_id)
    page.wait_for_selector(
        f".dsg-gate[data-node-id='{node_id}'][data-state='waiting'][data-token='{token}']", timeout=timeout_ms)
    page.wait_for_function(
        """nodeId => {
            const img = document.querySelector(`.dsg-gate[data-node-id='${nodeId}'] img.dsg-img`);
            return !!img && img.complete && img.naturalWidth > 0;
        }""", arg=node_id, timeout=timeout_ms)
    return gate


def wait_idle(page, node_id: str = GATE_NODE_ID, timeout_ms: int = 30_000) -> None:
    page.wait_for_selector(f".dsg-gate[data-node-id='{node_id}'][data-state='idle']",
                           state="attached", timeout=timeout_ms)


def set_range(page, locator, value: int) -> None:
    """Move a range input to `value` the way a person dragging it would end up."""
    locator.fill(str(value))
    page.wait_for_timeout(50)


def paint_stroke(page, node_id: str, start: tuple[float, float], end: tuple[float, float], steps: int = 24) -> None:
    """Drag the mouse across the mask canvas, from `start` to `end` given as fractions of the image."""
    box = panel(page, node_id).locator("canvas.dsg-mask").bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, f"mask canvas too small to paint on: {box}"

    def client(point):
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    page.mouse.move(*client(start))
    page.mouse.down()
    for step in range(1, steps + 1):
        t = step / steps
        page.mouse.move(*client((start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)))
    page.mouse.up()


# Two clicks on a title within the double-click interval open the frontend's title editor, whose text
# field then takes the keys a test means for the gate: space the clicks out.
DOUBLE_CLICK_SECONDS = 0.6
_last_title_click = [0.0]


def click_node_title(page, node_id: str = GATE_NODE_ID) -> None:
    """Select a node the ordinary way: a single click on its title bar."""
    time.sleep(max(0.0, _last_title_click[0] + DOUBLE_CLICK_SECONDS - time.monotonic()))
    x, y = page.evaluate(
        """nodeId => {
            const node = window.app.graph.getNodeById(nodeId);
            const titleHeight = window.LiteGraph.NODE_TITLE_HEIGHT;
            return window.app.canvasPosToClientPos([node.pos[0] + 80, node.pos[1] - titleHeight / 2]);
        }""", node_id)
    page.mouse.click(x, y)
    _last_title_click[0] = time.monotonic()
    page.wait_for_function(
        "nodeId => Object.keys(window.app.canvas.selected_nodes ?? {}).map(String).includes(String(nodeId))",
        arg=node_id, timeout=5_000)


def click_empty_canvas(page, canvas_point: tuple[float, float] = (300, 700)) -> None:
    """Click the canvas where the example workflow has no node, which clears the selection."""
    x, y = page.evaluate("point => window.app.canvasPosToClientPos(point)", list(canvas_point))
    page.mouse.click(x, y)
    page.wait_for_function("() => Object.keys(window.app.canvas.selected_nodes ?? {}).length === 0", timeout=5_000)


def workflow_clip(page, margin: int = 16) -> dict:
    """The screen rectangle holding every node of the graph, for a screenshot."""
    left, top, right, bottom = page.evaluate(
        """() => {
            const titleHeight = window.LiteGraph.NODE_TITLE_HEIGHT;
            let box = [Infinity, Infinity, -Infinity, -Infinity];
            for (const node of window.app.graph.nodes) {
                const [x0, y0] = window.app.canvasPosToClientPos([node.pos[0], node.pos[1] - titleHeight]);
                const [x1, y1] = window.app.canvasPosToClientPos([node.pos[0] + node.size[0],
                                                                  node.pos[1] + node.size[1]]);
                box = [Math.min(box[0], x0), Math.min(box[1], y0), Math.max(box[2], x1), Math.max(box[3], y1)];
            }
            return box;
        }""")
    size = page.viewport_size
    badge = 24  # the node source badge sits above the title bar
    x0, y0 = max(0, left - margin), max(0, top - margin - badge)
    x1, y1 = min(size["width"], right + margin), min(size["height"], bottom + margin)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


class NewOutputs:
    """The files SaveImage writes into ComfyUI's output folder from now on."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.before = set(folder.rglob("*.png")) if folder.exists() else set()

    def of(self, prefix: str) -> list[Path]:
        return sorted(p for p in self.folder.glob(f"{prefix}_*.png") if p not in self.before)

    def all(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*.png") if p not in self.before)


def drop_websocket_events(page, event_type: str) -> None:
    """Relay the page's websocket to the server, leaving out the messages of one event type."""

    def route(socket):
        server_side = socket.connect_to_server()

        def to_page(message):
            if isinstance(message, str):
                try:
                    if json.loads(message).get("type") == event_type:
                        return
                except ValueError:
                    pass
            socket.send(message)

        server_side.on_message(to_page)
        socket.on_message(lambda message: server_side.send(message))

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)


class ChooseRequests:
    """Records the bodies the page POSTs to /datasete_gate/choose."""

    def __init__(self, page):
        self.bodies: list[dict] = []
        page.on("request", self._on_request)

    def _on_request(self, request):
        if request.method == "POST" and request.url.split("?")[0].endswith("/datasete_gate/choose"):
            self.bodies.append(json.loads(request.post_data or "{}"))
