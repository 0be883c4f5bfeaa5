"""Every waiting gate can be found and answered: inside subgraphs, in another workflow tab, off screen.

Each test runs in every combination of the frontend matrix (frontends.py). Subgraphs are made the way a
person makes them ("Convert to Subgraph" is LGraph.convertToSubgraph, in 1.27 as in 1.58). With
DATASETE_UPDATE_SCREENSHOT=1 the newest-classic run refreshes docs/subgraph_waiting.png and
docs/waiting_panel.png.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import uuid
from io import BytesIO

import numpy as np
import pytest
from browser_helpers import (
    GATE_NODE_ID,
    example_workflow,
    load_workflow,
    open_comfy,
    queue_from_page,
    wait_idle,
    wait_paused,
)
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

pytestmark = pytest.mark.browser

DOCS = REPO_ROOT / "docs"
SCREENSHOT_FRONTEND = "newest-classic"
MARKER_RGB = (245, 166, 35)  # the amber of the "a gate waits inside" marker (dock.js / dock.css)


# --- helpers ----------------------------------------------------------------------------------------

def new_entry(server, before: set, kind: str | None = None, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [e for e in server.pending() if e["token"] not in before and (kind is None or e["kind"] == kind)]
        if fresh:
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError(f"no gate paused:\n{server.log_tail()}")


def queue(page, server, kind: str | None = None) -> dict:
    before = {entry["token"] for entry in server.pending()}
    queue_from_page(page)
    return new_entry(server, before, kind)


def to_subgraph(page, node_id) -> str:
    """Convert one node of the graph on screen into a subgraph, as "Convert to Subgraph" does; the id
    of the new subgraph node."""
    return page.evaluate(
        """id => {
            const graph = window.app.canvas.graph;
            const { node } = graph.convertToSubgraph(new Set([graph.getNodeById(id)]));
            window.app.canvas.setDirty(true, true);
            return String(node.id);
        }""", str(node_id))


def item(page, token: str):
    return page.locator(f".dsg-dock .dsg-waiting-item[data-token='{token}']")


def wait_item(page, token: str, timeout_ms: int = 30_000, text: str | None = None):
    """The Waiting gates panel's item of the pause `token` (whose heading holds `text`), once visible."""
    found = item(page, token)
    if text is not None:
        found = found.filter(has=page.locator("h3", has_text=text))
    try:
        found.wait_for(state="visible", timeout=timeout_ms)
    except Exception:
        # What the panel held instead, for the failure report.
        print(page.evaluate("""() => [...document.querySelectorAll('.dsg-dock, .dsg-dock-item')]
            .map(e => `${e.className} hidden=${e.hidden} style=${e.style.cssText} ${e.outerHTML.slice(0, 300)}`)"""))
        raise
    return found


def marker_shown(page, frontend, host_id: str) -> bool:
    """The subgraph node `host_id` of the graph on screen wears the "a gate waits inside" marker."""
    if frontend.vue_nodes:
        badge = page.locator(f".lg-node[data-node-id='{host_id}'] > .dsg-sub-waiting")
        return badge.count() == 1 and badge.is_visible()
    # Classic nodes: the marker is drawn on the canvas just above the node's title bar: look for its amber
    # in its left padding, before the text.
    x, y = page.evaluate(
        """id => {
            const node = window.app.canvas.graph.getNodeById(id);
            window.app.canvas.setDirty(true, true);
            window.app.canvas.draw(true, true);
            const top = node.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT - 15;
            const [x, y] = window.app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 1, top]);
            const box = window.app.canvas.canvas.getBoundingClientRect();
            return [box.left + x, box.top + y];
        }""", host_id)
    shot = page.screenshot(clip={"x": x, "y": y - 3, "width": 5, "height": 6})
    pixels = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).reshape(-1, 3).tolist()
    amber = [p for p in pixels if all(abs(a - b) <= 24 for a, b in zip(p, MARKER_RGB, strict=True))]
    return len(amber) >= len(pixels) // 2


def wait_marker(page, frontend, host_id: str, shown: bool = True, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker_shown(page, frontend, host_id) == shown:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"the subgraph node {host_id} {'never showed' if shown else 'kept'} the waiting marker")


def done(server, entry) -> None:
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)


def maybe_save(page, frontend, name: str) -> None:
    if frontend.id != SCREENSHOT_FRONTEND:
        return
    shot = page.screenshot()
    if os.environ.get("DATASETE_UPDATE_SCREENSHOT") == "1":
        (DOCS / name).write_bytes(shot)


# --- subgraphs ---------------------------------------------------------------------------------------

def test_a_gate_in_a_subgraph_is_marked_on_its_subgraph_node_and_answered_from_the_root_graph(
        browser_server, frontend, context, page_errors):
    page = open_comfy(context, browser_server, page_errors)
    load_workflow(page, example_workflow())
    host = to_subgraph(page, GATE_NODE_ID)
    entry = queue(page, browser_server)
    assert entry["node_id"] == f"{host}:{GATE_NODE_ID}" or entry["node_id"].startswith(f"{host}:")
    assert entry["workflow_id"] == page.evaluate("() => String(window.app.graph.id)")

    # The gate's node is not on screen (its subgraph is closed): the panel appears by itself, named.
    waiting = wait_item(page, entry["token"])
    assert "Image Gate" in waiting.locator("h3").inner_text()
    waiting.locator("img.dsg-img").first.wait_for(state="visible")
    # Its routes leave the subgraph: the buttons name the nodes they reach outside it.
    assert waiting.locator(".dsg-route-label").all_inner_texts() == ["Approved", "Needs inpaint"]
    wait_marker(page, frontend, host)
    maybe_save(page, frontend, "subgraph_waiting.png")

    waiting.locator("button[data-route='1']").click()
    done(browser_server, entry)
    item(page, entry["token"]).wait_for(state="detached")
    wait_marker(page, frontend, host, shown=False)


def test_a_gate_two_subgraphs_deep_is_answered_on_its_node_after_the_jump(
        browser_server, frontend, context, page_errors):
    page = open_comfy(context, browser_server, page_errors)
    load_workflow(page, example_workflow())
    inner_host = to_subgraph(page, GATE_NODE_ID)
    outer_host = to_subgraph(page, inner_host)
    entry = queue(page, browser_server)
    assert entry["node_id"].count(":") == 2 and entry["node_id"].startswith(f"{outer_host}:")
    wait_marker(page, frontend, outer_host)

    wait_item(page, entry["token"]).locator("button.dsg-jump").click()
    # The jump opened both subgraphs and centred the gate.
    page.wait_for_function(
        "id => window.app.canvas.graph !== window.app.graph && !!window.app.canvas.graph.getNodeById(id)",
        arg=GATE_NODE_ID, timeout=15_000)
    assert page.evaluate(
        "id => Object.keys(window.app.canvas.selected_nodes ?? {}).map(String).includes(id)", GATE_NODE_ID)
    if frontend.nodes_show_dom_widgets:
        node_panel = page.locator(f".dsg-gate[data-execution-id='{entry['node_id']}']")
        page.wait_for_selector(f".dsg-gate[data-execution-id='{entry['node_id']}'][data-state='waiting']"
                               f"[data-token='{entry['token']}']", timeout=15_000)
        node_panel.locator("img.dsg-img").first.wait_for(state="visible")
        assert node_panel.locator(".dsg-route-label").all_inner_texts() == ["Approved", "Needs inpaint"]
        # On screen in its node: the panel's own copy steps back.
        item(page, entry["token"]).wait_for(state="hidden", timeout=15_000)
        node_panel.locator("button[data-route='2']").click()
    else:
        # Nodes 2.0 of 1.27 shows no DOM widget in any node: the panel stays the place to answer.
        item(page, entry["token"]).locator("button[data-route='2']").click()
    done(browser_server, entry)
    item(page, entry["token"]).wait_for(state="detached")

    if frontend.nodes_show_dom_widgets:
        # What the gate says without pausing shows on this node too, two subgraphs down: with its image's
        # source muted and a get_id that names no slot, "slot '…' not found: nothing to gate".
        slot = f"never_published_{uuid.uuid4().hex[:8]}"
        page.evaluate("""([id, slot]) => {
            window.app.canvas.graph.getNodeById(id).widgets.find(w => w.name === 'get_id').value = slot;
            window.app.graph.nodes.find(n => n.type === 'ImageCompositeMasked').mode = 2;  // muted
        }""", [GATE_NODE_ID, slot])
        queue_from_page(page)
        page.wait_for_function(
            """([id, text]) => [...document.querySelectorAll(`.dsg-gate[data-node-id='${id}'] .dsg-last`)]
                .some(el => el.offsetParent !== null && el.textContent === text)""",
            arg=[GATE_NODE_ID, f"slot '{slot}' not found: nothing to gate"], timeout=30_000)
        [run] = [run for run in browser_server.get_json("/history").values() if slot in json.dumps(run["outputs"])]
        done(browser_server, {"prompt_id": run["prompt"][1]})


# --- the right pause on the right node ---------------------------------------------------------------

def test_two_workflow_tabs_with_the_same_node_id_only_the_queuing_one_shows_the_pause(
        browser_server, frontend, context, page_errors):
    first = example_workflow()
    second = copy.deepcopy(first)
    second["id"] = str(uuid.uuid4())
    for node in second["nodes"]:
        if str(node["id"]) == GATE_NODE_ID:
            node["title"] = "Second gate"
    page = open_comfy(context, browser_server, page_errors)
    page.evaluate("w => window.app.loadGraphData(w, true, true, 'find_first')", first)
    page.evaluate("w => window.app.loadGraphData(w, true, true, 'find_second')", second)
    page.wait_for_function("id => window.app.graph.id === id", arg=second["id"])
    entry = queue(page, browser_server)
    assert entry["workflow_id"] == second["id"] and entry["node_title"] == "Second gate"
    wait_paused(page, entry["token"])

    # Another browser tab with the first workflow: node 4 there is not the one that waits.
    other = open_comfy(context, browser_server, page_errors)
    load_workflow(other, first)
    waiting = wait_item(other, entry["token"])
    assert "Second gate" in waiting.locator("h3").inner_text()
    assert other.locator(f".dsg-gate[data-node-id='{GATE_NODE_ID}'][data-state='waiting']").count() == 0

    # Back in the first page, the first workflow's tab: the same, and the jump opens the right tab.
    page.evaluate("""name => {
        const store = window.app.extensionManager.workflow;
        const workflow = store.openWorkflows.find(w => w.path.endsWith(name + '.json'));
        return window.app.loadGraphData(workflow.activeState, true, true, workflow);
    }""", "find_first")
    page.wait_for_function("id => window.app.graph.id === id", arg=first["id"])
    # (a workflow tab this page has open is named by its tab's name)
    mine = wait_item(page, entry["token"], text="find_second")
    page.wait_for_timeout(500)
    assert page.locator(f".dsg-gate[data-node-id='{GATE_NODE_ID}'][data-state='waiting']").count() == 0, \
        "the first workflow's gate took the pause"
    mine.locator("button.dsg-jump").click()
    page.wait_for_function("id => window.app.graph.id === id", arg=second["id"], timeout=15_000)
    if frontend.nodes_show_dom_widgets:
        wait_paused(page, entry["token"])
        item(page, entry["token"]).wait_for(state="hidden", timeout=15_000)

    # Answered in the other browser tab's panel: cleared everywhere.
    other.locator(f".dsg-waiting-item[data-token='{entry['token']}'] button[data-route='1']").click()
    done(browser_server, entry)
    item(other, entry["token"]).wait_for(state="detached")
    wait_idle(page)
    item(page, entry["token"]).wait_for(state="detached")


# --- the waiting list --------------------------------------------------------------------------------

def add_node(page, node_type: str, pos: list, widgets: dict | None = None) -> str:
    return page.evaluate(
        """([type, pos, widgets]) => {
            const node = window.LiteGraph.createNode(type);
            node.pos = pos;
            window.app.graph.add(node);
            for (const [name, value] of Object.entries(widgets ?? {})) {
                node.widgets.find(w => w.name === name).value = value;
            }
            return String(node.id);
        }""", [node_type, pos, widgets or {}])


def connect(page, source: str, output: str, target: str, input_name: str) -> None:
    page.evaluate(
        """([source, output, target, input]) => {
            const from = window.app.graph.getNodeById(source);
            const to = window.app.graph.getNodeById(target);
            const slot = from.outputs.findIndex(o => o.name === output);
            from.connect(slot, to, to.inputs.findIndex(i => i.name === input));
        }""", [source, output, target, input_name])


def test_gates_off_screen_appear_in_the_waiting_panel_and_are_answered_there(
        browser_server, frontend, context, page_errors, tmp_path):
    page = open_comfy(context, browser_server, page_errors)
    page.evaluate("() => window.app.graph.clear()")
    far = 8000  # well outside the window at any zoom the page opens with
    picture = add_node(page, "EmptyImage", [far, far], {"width": 96, "height": 64, "batch_size": 3,
                                                             "color": 0x3A7BD5})
    grid = add_node(page, "DataseteGridPoolGate", [far + 300, far])
    kept = add_node(page, "PreviewImage", [far + 900, far])
    text = add_node(page, "DataseteTextGate", [far + 300, far + 700], {"text": "a red cat"})
    shown = add_node(page, "PreviewAny", [far + 900, far + 700])
    connect(page, picture, "IMAGE", grid, "images")
    connect(page, grid, "kept", kept, "images")
    connect(page, text, "text", shown, "source")
    page.evaluate("() => window.app.canvas.setDirty(true, true)")

    before = {e["token"] for e in browser_server.pending()}
    queue_from_page(page)
    answered = []
    for _ in range(2):
        entry = new_entry(browser_server, before | {e["token"] for e in answered})
        waiting = wait_item(page, entry["token"])
        if entry["kind"] == "grid":
            tiles = waiting.locator(".dsg-grid-tile")
            tiles.first.wait_for(state="visible")
            assert entry["node_id"] == grid
            tiles.nth(1).click()
            if frontend.id == SCREENSHOT_FRONTEND and os.environ.get("DATASETE_UPDATE_SCREENSHOT") == "1":
                page.locator(".dsg-dock").screenshot(path=str(tmp_path / "waiting_panel.png"))
                shutil.copyfile(tmp_path / "waiting_panel.png", DOCS / "waiting_panel.png")
            waiting.locator("button.dsg-grid-send").click()
        else:
            assert entry["kind"] == "text" and entry["node_id"] == text
            box = waiting.locator("textarea")
            box.fill("a red cat, sitting")
            waiting.locator("button.dsg-text-approve").click()
        item(page, entry["token"]).wait_for(state="detached")
        answered.append(entry)
    history = browser_server.wait_done(answered[0]["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    assert history["outputs"][shown]["text"] == ["a red cat, sitting"]
    assert len(history["outputs"][kept]["images"]) == 1


def test_the_sidebar_tab_lists_every_waiting_gate_and_a_hidden_panel_comes_back_there(
        browser_server, frontend, context, page_errors):
    page = open_comfy(context, browser_server, page_errors)
    load_workflow(page, example_workflow())
    # Scrolled away from the gate: it is not on screen, so the panel appears.
    page.evaluate("() => { window.app.canvas.ds.offset[0] -= 6000; window.app.canvas.setDirty(true, true); }")
    entry = queue(page, browser_server)
    wait_item(page, entry["token"])
    page.locator(".dsg-dock .dsg-dock-hide").click()
    page.locator(".dsg-dock").wait_for(state="hidden")

    page.locator(".datasete-waiting-gates-tab-button, [data-testid='datasete-waiting-gates-tab-button']").first.click()
    in_sidebar = page.locator(f".dsg-dock.dsg-dock-in-sidebar .dsg-waiting-item[data-token='{entry['token']}']")
    in_sidebar.wait_for(state="visible", timeout=15_000)
    in_sidebar.locator("button.dsg-cancel").click()
    history = browser_server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] != "success"  # cancelled: the run ends as interrupted
    in_sidebar.wait_for(state="detached")
