"""What a new user hit in the first hour with the Image Gate, each reproduced in the real frontend.

Every test runs in each combination of the frontend matrix (see frontends.py). Screenshots of the
paused examples at 100% zoom in a 1400x900 window go to pytest's tmp folder, and to docs/ with
DATASETE_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import numpy as np
import pytest
from browser_helpers import (
    GATE_NODE_ID,
    NewOutputs,
    example_workflow,
    load_workflow,
    open_comfy,
    panel,
    queue_gate,
    wait_idle,
    wait_paused,
    without_gate_image,
)
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

from gates import imagebus, slots

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 512, 384
SMALL_WINDOW = {"width": 1400, "height": 900}
RESTART_EXAMPLE = REPO_ROOT / "example_workflows" / "gate_bus_restart.json"
IDLE_TEXT = "Pauses here when the workflow runs"


def open_basic(context, server, errors, workflow=None):
    page = open_comfy(context, server, errors)
    load_workflow(page, workflow or example_workflow())
    return page


def pause(page, server, node_id: str = GATE_NODE_ID) -> dict:
    entry = queue_gate(page, server, node_id=node_id)
    wait_paused(page, entry["token"], node_id)
    return entry


def finished(server, entry) -> str:
    return server.wait_done(entry["prompt_id"])["status"]["status_str"]


def read_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


# --- 1. Cancel stays live ------------------------------------------------------------------

def test_cancel_still_works_after_a_route_was_chosen(browser_server, context, page_errors):
    server = browser_server
    page = open_basic(context, server, page_errors)
    cancel = panel(page).locator("button.dsg-cancel")

    entry = pause(page, server)
    panel(page).locator("button[data-route='1']").click()
    assert finished(server, entry) == "success"
    wait_idle(page)

    entry = pause(page, server)
    assert cancel.is_enabled(), "Cancel was left disabled by the previous answer"
    cancel.click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    wait_idle(page)

    entry = pause(page, server)  # and after a Cancel, every button of the next pause works
    assert cancel.is_enabled() and panel(page).locator("button[data-route='2']").is_enabled()
    panel(page).locator("button[data-route='2']").click()
    assert finished(server, entry) == "success"


# --- 2. a slot's mask is visible and editable --------------------------------------------------

def painted_alpha(page) -> np.ndarray:
    data = panel(page).locator("canvas.dsg-mask").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 3))")
    return np.array(data, np.uint8).reshape(HEIGHT, WIDTH)


def test_a_mask_loaded_from_a_slot_shows_in_the_painter_and_can_be_kept_or_cleared(
        browser_server, context, page_errors):
    server = browser_server
    slot = f"masked_{uuid.uuid4().hex[:8]}"
    frame = np.zeros((1, HEIGHT, WIDTH, 3), np.uint8)
    frame[..., 2] = 200
    mask = np.zeros((1, HEIGHT, WIDTH), np.uint8)
    mask[0, 100:200, 150:350] = 255
    slots.bus_write(server.bus_dir, slot, frame, mask)
    page = open_basic(context, server, page_errors, without_gate_image(example_workflow(), get_id=slot))

    outputs = NewOutputs(server.output_dir)
    entry = pause(page, server)
    page.wait_for_selector(f".dsg-gate[data-node-id='{GATE_NODE_ID}'][data-mask-loaded='true']")
    assert (painted_alpha(page) == mask[0]).all(), "the painter does not show the slot's mask"
    assert "mask loaded" in panel(page).locator(".dsg-source").inner_text()
    panel(page).locator("button[data-route='1']").click()  # untouched: the slot's mask goes on
    assert finished(server, entry) == "success"
    [saved] = outputs.of("gate_mask")
    assert (read_gray(saved) == mask[0]).all()

    outputs = NewOutputs(server.output_dir)
    entry = pause(page, server)
    page.wait_for_selector(f".dsg-gate[data-node-id='{GATE_NODE_ID}'][data-mask-loaded='true']")
    panel(page).locator("button.dsg-clear").click()  # the person removes the mask they can see
    panel(page).locator("button[data-route='1']").click()
    assert finished(server, entry) == "success"
    [saved] = outputs.of("gate_mask")
    assert (read_gray(saved) == 0).all(), "Clear must remove the loaded mask, not fall back to it"
    imagebus.delete_id(server.bus_dir, slot)


# --- 3. a reject route does not publish -------------------------------------------------------

def test_in_the_restart_example_only_the_accept_route_publishes(browser_server, context, page_errors):
    server = browser_server
    imagebus.delete_id(server.bus_dir, "restart_point")
    page = open_comfy(context, server, page_errors)
    load_workflow(page, json.loads(RESTART_EXAMPLE.read_text()), node_id="2")

    entry = pause(page, server, node_id="2")
    panel(page, "2").locator("button[data-route='2']").click()  # "Save rejected"
    assert finished(server, entry) == "success"
    assert "restart_point" not in imagebus.list_ids(server.bus_dir), "a rejected image became the restart point"

    entry = pause(page, server, node_id="2")
    panel(page, "2").locator("button[data-route='1']").click()
    assert finished(server, entry) == "success"
    assert "restart_point" in imagebus.list_ids(server.bus_dir)


# --- 4. the bad input is the one blamed ---------------------------------------------------------

def test_a_bad_get_id_is_reported_under_get_id_alone(browser_server, context, page_errors):
    server = browser_server
    page = open_basic(context, server, page_errors)
    page.evaluate("""id => {
        const widget = window.app.graph.getNodeById(id).widgets.find(w => w.name === 'get_id');
        widget.value = 'bad id!';
    }""", GATE_NODE_ID)
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/prompt") and r.request.method == "POST") as got:
        page.evaluate("() => window.app.queuePrompt(0, 1)")
    answer = got.value.json()
    errors = answer["node_errors"][GATE_NODE_ID]["errors"]
    assert [error["extra_info"]["input_name"] for error in errors] == ["get_id"], errors
    assert "bad id!" in errors[0]["details"]


# --- 5. idle says what will happen, and what happened -----------------------------------------

def test_an_idle_gate_says_what_will_happen_and_shows_the_last_decision(browser_server, frontend, context,
                                                                         page_errors):
    server = browser_server
    page = open_basic(context, server, page_errors)
    gate = panel(page)
    if frontend.nodes_show_dom_widgets:
        assert IDLE_TEXT in gate.locator(".dsg-hint").inner_text()
        assert "waiting for an image" not in gate.inner_text()
    entry = pause(page, server)
    gate.locator("button[data-route='2']").click()
    assert finished(server, entry) == "success"
    wait_idle(page)
    assert IDLE_TEXT in gate.locator(".dsg-hint").text_content()
    assert gate.locator(".dsg-last").text_content() == "Last: route 2 → Needs inpaint"

    entry = pause(page, server)
    gate.locator("button.dsg-cancel").click()
    wait_idle(page)
    assert gate.locator(".dsg-last").text_content() == "Last: cancelled"


# --- 6 and 9. the paused examples fit: no overlaps, controls inside, size kept ---------------------

RECTS = """() => {
    const canvas = window.app.canvas;
    const titleHeight = window.LiteGraph.NODE_TITLE_HEIGHT;
    const badge = 24;  // the node source badge sits above a classic node's title
    const client = (x, y) => window.app.canvasPosToClientPos([x, y]);
    const vue = document.querySelector('[data-node-id].lg-node') !== null;
    const nodes = window.app.graph.nodes.map(node => {
        const element = vue ? document.querySelector(`.lg-node[data-node-id='${node.id}']`) : null;
        if (element) {
            const r = element.getBoundingClientRect();
            return {id: String(node.id), x0: r.left, y0: r.top, x1: r.right, y1: r.bottom};
        }
        const above = titleHeight + (node.type === 'DataseteImageGate' ? badge : 0);
        const [x0, y0] = client(node.pos[0], node.pos[1] - above);
        const [x1, y1] = client(node.pos[0] + node.size[0], node.pos[1] + node.size[1]);
        return {id: String(node.id), x0, y0, x1, y1};
    });
    const groups = (window.app.graph.groups ?? window.app.graph._groups ?? []).map(group => {
        const [x, y, w] = group._bounding ?? group.bounding;
        const [x0, y0] = client(x, y);
        const [x1, y1] = client(x + w, y + (group.titleHeight ?? window.LiteGraph.NODE_TITLE_HEIGHT));
        return {id: 'group ' + group.title, x0, y0, x1, y1};
    });
    return {nodes, groups, scale: canvas.ds.scale};
}"""


def overlaps(a, b, slack: float = 1.0) -> bool:
    return (a["x0"] + slack < b["x1"] and b["x0"] + slack < a["x1"]
            and a["y0"] + slack < b["y1"] and b["y0"] + slack < a["y1"])


def inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["x"] >= outer["x0"] - slack and inner["y"] >= outer["y0"] - slack
            and inner["x"] + inner["width"] <= outer["x1"] + slack
            and inner["y"] + inner["height"] <= outer["y1"] + slack)


@pytest.mark.parametrize("example, gate_id", [("image_gate_basic", GATE_NODE_ID), ("gate_bus_restart", "2")])
def test_the_paused_example_keeps_its_size_and_nothing_overlaps_at_100_percent(
        browser_server, frontend, chromium, page_errors, tmp_path, example, gate_id):
    server = browser_server
    server.post_json("/settings", {"Comfy.Minimap.Visible": True})  # as a new user has it
    context = chromium.new_context(viewport=SMALL_WINDOW)
    try:
        page = open_comfy(context, server, page_errors)
        load_workflow(page, json.loads((REPO_ROOT / "example_workflows" / f"{example}.json").read_text()), gate_id)
        page.wait_for_timeout(500)
        size = page.evaluate("id => [...window.app.graph.getNodeById(id).size]", gate_id)
        entry = pause(page, server, node_id=gate_id)
        page.mouse.move(300, 880)  # away from the tabs, whose hover popup would cover the graph
        page.wait_for_timeout(300)
        assert page.evaluate("() => window.app.canvas.ds.scale") == pytest.approx(1.0)
        assert page.evaluate("id => [...window.app.graph.getNodeById(id).size]", gate_id) == size, \
            "a pause must not resize the node over its neighbours"

        shot = tmp_path / f"{example}_paused_{frontend.id}.png"
        page.screenshot(path=str(shot))
        if os.environ.get("DATASETE_UPDATE_SCREENSHOT") and frontend.id in ("pinned-classic", "newest-vue"):
            shutil.copyfile(shot, REPO_ROOT / "docs" / f"{example}_paused_{frontend.id}.png")

        rects = page.evaluate(RECTS)
        if frontend.nodes_show_dom_widgets:
            boxes = rects["nodes"] + rects["groups"]
            clashes = [(a["id"], b["id"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                       if not (a["id"].startswith("group") and b["id"].startswith("group")) and overlaps(a, b)]
            assert clashes == [], f"overlapping while paused: {clashes}"
            gate_box = next(r for r in rects["nodes"] if r["id"] == gate_id)
        else:
            # 1.27's experimental Nodes 2.0 draws every node, core ones too, larger than its saved size, so
            # nodes overlap in any workflow there; the waiting gate is answered in the dock, checked here.
            dock = page.locator(".dsg-dock").bounding_box()
            gate_box = {"x0": dock["x"], "y0": dock["y"], "x1": dock["x"] + dock["width"],
                        "y1": dock["y"] + dock["height"]}
        window = {"x0": 0, "y0": 0, "x1": SMALL_WINDOW["width"], "y1": SMALL_WINDOW["height"]}
        blockers = [page.locator(selector).first.bounding_box() for selector in
                    (".litegraph-minimap, .minimap-main-container", ".p-buttongroup, .graph-canvas-menu")
                    if page.locator(selector).count() and page.locator(selector).first.is_visible()]
        controls = panel(page, gate_id).locator(".dsg-routes button, .dsg-tools button, .dsg-tools input")
        assert controls.count() >= 6
        for index in range(controls.count()):
            box = controls.nth(index).bounding_box()
            assert box and inside(box, gate_box) and inside(box, window), f"control {index} outside: {box}"
            for blocker in blockers:
                covered = {"x0": blocker["x"], "y0": blocker["y"], "x1": blocker["x"] + blocker["width"],
                           "y1": blocker["y"] + blocker["height"]}
                assert not overlaps({"x0": box["x"], "y0": box["y"], "x1": box["x"] + box["width"],
                                     "y1": box["y"] + box["height"]}, covered), f"control {index} under {covered}"
        panel(page, gate_id).locator("button.dsg-cancel").click()
        assert finished(server, entry) == "error"
    finally:
        context.close()


# --- 7. zoomed out, a waiting gate still says so ------------------------------------------------

def test_a_waiting_gate_zoomed_out_still_shows_that_it_waits(browser_server, frontend, context, page_errors,
                                                              tmp_path):
    """Fit view gives about 49% on the restart example: the classic canvas then hides DOM widgets."""
    server = browser_server
    page = open_basic(context, server, page_errors)
    entry = pause(page, server)
    page.evaluate("() => { const c = window.app.canvas; c.ds.scale = 0.45; c.setDirty(true, true); }")
    page.wait_for_timeout(500)
    if frontend.vue_nodes:
        # Vue-rendered nodes (and the dock) keep the panel itself, image and buttons, at any zoom.
        image = panel(page).locator("img.dsg-img").bounding_box()
        assert image and image["width"] > 20 and panel(page).locator("button.dsg-cancel").is_visible()
        panel(page).locator("button.dsg-cancel").click()
        assert finished(server, entry) == "error"
        return
    box = page.evaluate("""id => {
        const node = window.app.graph.getNodeById(id);
        const [x0, y0] = window.app.canvasPosToClientPos(node.pos);
        const [x1, y1] = window.app.canvasPosToClientPos([node.pos[0] + node.size[0], node.pos[1] + node.size[1]]);
        return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
    }""", GATE_NODE_ID)
    shot = tmp_path / "zoomed_out.png"
    page.screenshot(path=str(shot), clip=box)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    marker = (abs(pixels[..., 0] - 255) < 30) & (abs(pixels[..., 1] - 64) < 40) & (abs(pixels[..., 2] - 129) < 40)
    assert marker.mean() > 0.05, "no waiting marker on the zoomed-out gate"
    page.evaluate("() => { window.app.canvas.ds.scale = 1; window.app.canvas.setDirty(true, true); }")
    panel(page).locator("button.dsg-cancel").click()
    assert finished(server, entry) == "error"


# --- 8. many routes, long labels ------------------------------------------------------------------

LONG_TITLE = "Approved for the training set, ready to caption"


def test_eight_routes_wrap_and_long_labels_end_in_an_ellipsis_with_the_full_title_as_tooltip(
        browser_server, context, page_errors):
    server = browser_server
    workflow = example_workflow()
    for node in workflow["nodes"]:
        if node.get("title") == "Approved":
            node["title"] = LONG_TITLE
    page = open_basic(context, server, page_errors, workflow)
    page.evaluate("""id => {
        const node = window.app.graph.getNodeById(id);
        const widget = node.widgets.find(w => w.name === 'routes');
        widget.value = 8;
        widget.callback?.(8, window.app.canvas, node);
    }""", GATE_NODE_ID)
    assert page.evaluate("id => window.app.graph.getNodeById(id).outputs.map(o => o.name)", GATE_NODE_ID) == \
        ["mask"] + [f"route_{n}" for n in range(1, 9)]
    entry = pause(page, server)
    buttons = panel(page).locator("button.dsg-route")
    assert buttons.count() == 8
    boxes = [buttons.nth(i).bounding_box() for i in range(8)]
    assert min(b["width"] for b in boxes) >= 60, f"route buttons shrank to nothing: {boxes}"
    assert len({round(b["y"]) for b in boxes}) >= 2, "eight routes must wrap to a second row"
    first = buttons.nth(0)
    assert LONG_TITLE in first.get_attribute("title")
    label = first.locator(".dsg-route-label")
    assert label.evaluate("s => getComputedStyle(s).textOverflow") == "ellipsis"
    assert label.evaluate("s => s.scrollWidth > s.clientWidth"), "the long label should be cut with an ellipsis"
    first.click()
    assert finished(server, entry) == "success"


# --- the routes widget drives the outputs ------------------------------------------------------------

def test_outputs_follow_routes_and_a_linked_output_is_never_dropped(browser_server, context, page_errors):
    server = browser_server
    page = open_basic(context, server, page_errors)
    names = "id => window.app.graph.getNodeById(id).outputs.map(o => o.name)"
    assert page.evaluate(names, GATE_NODE_ID) == ["mask", "route_1", "route_2"]
    set_routes = """([id, n]) => {
        const node = window.app.graph.getNodeById(id);
        const widget = node.widgets.find(w => w.name === 'routes');
        widget.value = n;
        widget.callback?.(n, window.app.canvas, node);
    }"""
    page.evaluate(set_routes, [GATE_NODE_ID, 3])
    assert page.evaluate(names, GATE_NODE_ID) == ["mask", "route_1", "route_2", "route_3"]
    page.evaluate(set_routes, [GATE_NODE_ID, 1])
    # route_2 feeds "Needs inpaint": it stays until unlinked, so nothing is disconnected behind the person's back.
    assert page.evaluate(names, GATE_NODE_ID) == ["mask", "route_1", "route_2"]
    saved = page.evaluate("() => window.app.graph.serialize()")
    page.evaluate("workflow => window.app.loadGraphData(workflow)", saved)
    page.wait_for_function(f"() => !!window.app.graph.getNodeById({GATE_NODE_ID})")
    assert page.evaluate(names, GATE_NODE_ID) == ["mask", "route_1", "route_2"]
