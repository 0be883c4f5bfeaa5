"""Help pages and translations in the real ComfyUI frontend, driven in Debian chromium by Playwright.

The help page is opened the way a person does: select the node, then the selection toolbox's info
button (the pinned frontend shows the page in the node library's side bar, the newest one in the right
side panel's Info tab). The language is the setting Comfy.Locale, written before the page opens, as a
person's choice in the settings dialog is stored.

Set DATASETE_I18N_SCREENSHOTS=<folder> to keep the screenshots (help pages, the Chinese node).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from browser_helpers import (
    GATE_NODE_ID,
    click_node_title,
    example_workflow,
    load_workflow,
    open_comfy,
    panel,
    queue_gate,
    wait_idle,
    wait_paused,
    workflow_clip,
)
from comfy_server import REPO_ROOT, status_messages
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.browser

NODE_ID = "DataseteImageGate"
ZH = json.loads((REPO_ROOT / "locales" / "zh" / "main.json").read_text(encoding="utf-8"))
ZH_NODE = ZH["nodeDefs"][NODE_ID]
ZH_PANEL = ZH["dataseteGates"]["panel"]
# Text only the help pages hold (not the node's description, which the frontend shows without a page).
EN_PAGE_HEADING = "In 30 seconds"
ZH_PAGE_HEADING = "30 秒上手"
EN_PAGE_TEXT = "Keys typed into a text field or a list go to the field, not to the gate."
ZH_PAGE_TEXT = "在文本框或下拉列表中按键时，按键交给该控件，而不是闸门。"


@pytest.fixture
def server(browser_server):
    yield browser_server
    # prepare_frontend resets these for the next browser test; this covers any other client of the server.
    browser_server.post_json("/settings", {"Comfy.Locale": "en", "Comfy.Canvas.SelectionToolbox": False})


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = os.environ.get("DATASETE_I18N_SCREENSHOTS")
    if not folder:
        return tmp_path
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_settings(server, settings: dict) -> None:
    status, answer = server.post_json("/settings", settings)
    assert status == 200, answer


class DocRequests:
    """The help pages the page fetched from the pack (/extensions/<pack>/docs/...), with their status."""

    def __init__(self, page):
        self.seen: list[tuple[str, int]] = []
        page.on("response", self._on_response)

    def _on_response(self, response):
        path = response.url.split("?")[0]
        if "/docs/" in path and path.endswith(".md"):
            self.seen.append((path.split("/docs/", 1)[1], response.status))


def assert_help_page_shows(page, docs, heading_text: str, body_text: str, served: str) -> None:
    """Open the node's help and see the page: its heading, its text, and the file it came from."""
    open_node_help(page)
    heading = page.get_by_text(heading_text, exact=True)
    heading.wait_for(timeout=15_000)
    assert heading.is_visible()
    assert page.get_by_text(body_text).is_visible()
    assert (served, 200) in docs.seen, docs.seen


def open_node_help(page) -> None:
    """Select the gate with a click on its title, then click the selection toolbox's info button."""
    # The toolbox floats above the selected node: leave it room below the tab bar.
    page.evaluate("() => { window.app.canvas.ds.offset[1] += 200; window.app.canvas.setDirty(true, true); }")
    page.wait_for_timeout(200)
    click_node_title(page)
    page.mouse.move(5, 600)  # no title tooltip over what follows
    info = page.locator("[data-testid='info-button']:visible")
    info.first.wait_for(timeout=10_000)
    info.first.click()


def open_node_search(page, canvas_point: list[int]) -> None:
    """Double click the empty canvas at canvas_point and wait until the node search's input has the focus.

    On a loaded machine the first double click can land while the canvas is still busy, and keys typed
    before the dialog has mounted and focused its input go nowhere: so wait for the focus, not a fixed time.
    """
    assert page.evaluate("p => window.app.graph.getNodeOnPos(p[0], p[1]) === null", canvas_point), (
        f"canvas point {canvas_point} is on a node, not on the empty canvas"
    )
    # The search box differs between frontends (1.27's PrimeVue dialog, the newest's v1 or v2 box):
    # what they share is a text input, in a dialog or search region, that takes the focus.
    search_has_focus = """() => {
        const input = document.activeElement;
        return input?.tagName === 'INPUT' && input.closest("[role='search'], [role='dialog']") != null;
    }"""
    for _attempt in range(3):
        x, y = page.evaluate("point => window.app.canvasPosToClientPos(point)", canvas_point)
        page.mouse.dblclick(x, y)
        try:
            page.wait_for_function(search_has_focus, timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("a double click on the empty canvas opened no focused node search box, three times")


def shoot(page, path: Path, **options) -> Path:
    page.screenshot(path=str(path), **options)
    assert path.stat().st_size > 10_000
    return path


def test_the_help_page_opens_from_the_node(server, frontend, context, page_errors, shots):
    use_settings(server, {"Comfy.Canvas.SelectionToolbox": True})
    page = open_comfy(context, server, page_errors)
    docs = DocRequests(page)
    load_workflow(page, example_workflow())

    # English has no page of its own: the frontend asks for it, then takes the plain page.
    assert_help_page_shows(page, docs, EN_PAGE_HEADING, EN_PAGE_TEXT, f"{NODE_ID}.md")
    shoot(page, shots / f"help_page_en_{frontend.id}.png")


def test_a_chinese_frontend_shows_the_node_and_its_help_in_chinese(server, frontend, context, page_errors, shots):
    use_settings(server, {"Comfy.Locale": "zh", "Comfy.Canvas.SelectionToolbox": True})
    page = open_comfy(context, server, page_errors)
    docs = DocRequests(page)
    load_workflow(page, example_workflow())

    # The node on the canvas: its title, and its input and output names.
    title = ZH_NODE["display_name"]
    assert page.evaluate("id => window.app.graph.getNodeById(id).title", GATE_NODE_ID) == title
    slots = page.evaluate("""id => {
        const node = window.app.graph.getNodeById(id);
        return {
            inputs: Object.fromEntries(node.inputs.map(s => [s.name, s.localized_name ?? s.label ?? s.name])),
            outputs: Object.fromEntries(node.outputs.map(s => [s.name, s.localized_name ?? s.label ?? s.name])),
        };
    }""", GATE_NODE_ID)
    assert slots["inputs"]["image"] == ZH_NODE["inputs"]["image"]["name"]
    assert slots["inputs"]["routes"] == ZH_NODE["inputs"]["routes"]["name"]
    assert slots["outputs"]["mask"] == ZH_NODE["outputs"]["0"]["name"]
    assert slots["outputs"]["route_1"] == ZH_NODE["outputs"]["1"]["name"]
    if frontend.vue_nodes:  # Vue nodes are DOM: the title is text on the page (classic nodes draw it on a canvas)
        node = page.locator(f"[data-node-id='{GATE_NODE_ID}']").first
        assert node.get_by_text(title, exact=True).first.is_visible()

    # The node search (double click on the empty canvas) finds it by its Chinese name.
    open_node_search(page, [300, 700])
    page.keyboard.type("闸门")
    result = page.locator("[role='option']", has_text=title).first
    result.wait_for(timeout=10_000)
    assert result.is_visible()
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)

    gate = panel(page)
    if frontend.nodes_show_dom_widgets:
        assert gate.locator(".dsg-hint").inner_text() == ZH_PANEL["idleHint"]
    # A pause in Chinese: the panel's title, tools and Cancel are translated, and Cancel still cancels.
    # (A frontend whose nodes hold no DOM widget shows the waiting panel in the pack's dock instead.)
    entry = queue_gate(page, server)
    wait_paused(page, entry["token"])
    assert gate.locator(".dsg-title").inner_text() == ZH_PANEL["chooseRoute"]
    assert gate.locator("button.dsg-tool", has_text=ZH_PANEL["brush"]).is_visible()
    assert gate.locator("button.dsg-tool", has_text=ZH_PANEL["eraser"]).is_visible()
    assert gate.locator("button.dsg-clear").inner_text() == ZH_PANEL["clear"]
    assert ZH_PANEL["size"] in gate.locator(".dsg-tools").inner_text()
    page.mouse.move(5, 600)
    clip = workflow_clip(page) if frontend.nodes_show_dom_widgets else None
    shoot(page, shots / f"node_zh_{frontend.id}.png", **({"clip": clip} if clip else {}))
    cancel = gate.locator("button.dsg-cancel")
    assert cancel.inner_text() == ZH_PANEL["cancel"]
    cancel.click()
    history = server.wait_done(entry["prompt_id"])
    assert "execution_interrupted" in status_messages(history)
    wait_idle(page)

    # The help page in Chinese, from web/docs/<NodeId>/zh.md.
    assert_help_page_shows(page, docs, ZH_PAGE_HEADING, ZH_PAGE_TEXT, f"{NODE_ID}/zh.md")
    shoot(page, shots / f"help_page_zh_{frontend.id}.png")
