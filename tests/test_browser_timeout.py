"""Timeouts in the real ComfyUI frontend, driven in Debian chromium: every gate kind shows a countdown
while it waits, an interaction (a mask stroke, a grid toggle, a keystroke in the text) restarts it on
the server and on the page, and a gate that times out clears its panel and says what it did.

docs/timeout_countdown.png is written from the pinned-classic run when it is missing or when
DATASETE_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import pytest
from browser_helpers import open_comfy, paint_stroke, wait_ready, workflow_clip
from comfy_server import REPO_ROOT
from test_browser_grid import add_prompt
from test_browser_text import new_dataset

pytestmark = pytest.mark.browser

SCREENSHOT = REPO_ROOT / "docs" / "timeout_countdown.png"
TIMEOUT = 6  # seconds: long enough to look and touch, short enough to wait out
SETTLE = 60.0

# kind -> (example workflow, gate node id, the panel's selector, on_timeout to set)
KINDS = {
    "image": ("image_gate_basic.json", "4", ".dsg-gate", "block"),
    "grid": ("pool_review.json", "1", ".dsg-grid", "keep_none"),
    "text": ("caption_folder.json", "2", ".dsg-text-gate", "reject"),
}


@pytest.fixture
def server(browser_server):
    return browser_server


def workflow_for(server, kind: str) -> dict:
    name, node_id, _selector, _on_timeout = KINDS[kind]
    workflow = json.loads((REPO_ROOT / "example_workflows" / name).read_text())
    gate = next(node for node in workflow["nodes"] if str(node["id"]) == node_id)
    if kind == "grid":
        pool = "to_" + uuid.uuid4().hex[:8]
        history = server.wait_done(server.queue(add_prompt(pool, [0, 1, 2], (64, 48))))
        assert history["status"]["status_str"] == "success"
        gate["widgets_values"][0] = pool
    if kind == "text":
        loader = next(node for node in workflow["nodes"] if node["type"] == "DataseteImageFolderLoader")
        loader["widgets_values"][0] = new_dataset(server)
    return workflow


def open_kind(context, server, errors, kind):
    _name, node_id, _selector, on_timeout = KINDS[kind]
    page = open_comfy(context, server, errors)
    wait_ready(page)
    page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow_for(server, kind))
    page.wait_for_function("id => !!window.app.graph.getNodeById(id)", arg=node_id, timeout=30_000)
    # A workflow saved before the timeout inputs existed loads with their defaults, the rest as saved.
    values = page.evaluate(
        """id => Object.fromEntries(window.app.graph.getNodeById(id).widgets
            .filter(w => ['timeout', 'on_timeout'].includes(w.name)).map(w => [w.name, w.value]))""", node_id)
    assert values == {"timeout": 0, "on_timeout": "cancel"}
    page.evaluate(
        """([id, timeout, onTimeout]) => {
            const node = window.app.graph.getNodeById(id);
            node.widgets.find(w => w.name === 'timeout').value = timeout;
            node.widgets.find(w => w.name === 'on_timeout').value = onTimeout;
        }""", [node_id, TIMEOUT, on_timeout])
    return page


def queue_and_wait(page, server, kind) -> dict:
    _name, node_id, selector, _on_timeout = KINDS[kind]
    before = {entry["token"] for entry in server.pending()}
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        fresh = [e for e in server.pending() if e["token"] not in before and e["kind"] == kind]
        if fresh:
            entry = fresh[0]
            page.wait_for_selector(f"{selector}[data-node-id='{node_id}'][data-state='waiting']"
                                   f"[data-token='{entry['token']}']", timeout=30_000)
            return entry
        time.sleep(0.05)
    raise AssertionError(f"no {kind} gate paused:\n{server.log_tail()}")


def countdown(page, kind):
    _name, node_id, selector, _on_timeout = KINDS[kind]
    return page.locator(f"{selector}[data-node-id='{node_id}'] .dsg-countdown")


def interact(page, kind):
    """What a person does with a waiting gate of this kind."""
    _name, node_id, selector, _on_timeout = KINDS[kind]
    gate = page.locator(f"{selector}[data-node-id='{node_id}']")
    if kind == "image":
        page.wait_for_function(
            """id => { const img = document.querySelector(`.dsg-gate[data-node-id='${id}'] img.dsg-img`);
                       return !!img && img.complete && img.naturalWidth > 0; }""", arg=node_id, timeout=30_000)
        paint_stroke(page, node_id, (0.3, 0.3), (0.6, 0.5))
    elif kind == "grid":
        gate.locator(".dsg-grid-tile[data-index='0']").click()
    else:
        box = gate.locator("textarea")
        box.click()
        page.keyboard.press("End")
        page.keyboard.type("x")


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_countdown_shows_an_interaction_restarts_it_and_a_timeout_clears_the_panel(
        server, frontend, context, page_errors, kind, tmp_path):
    _name, node_id, selector, on_timeout = KINDS[kind]
    page = open_kind(context, server, page_errors, kind)
    entry = queue_and_wait(page, server, kind)
    assert entry["timeout"] == TIMEOUT and entry["on_timeout"] == on_timeout

    clock = countdown(page, kind)
    clock.wait_for(state="visible", timeout=10_000)
    assert float(clock.get_attribute("data-deadline")) == pytest.approx(entry["deadline"], abs=0.01)
    page.wait_for_function(
        "el => /\\d:\\d\\d/.test(el.textContent)",
        arg=clock.element_handle(), timeout=5_000)
    assert on_timeout in clock.text_content()

    if kind == "image" and frontend.id == "pinned-classic":
        shot = tmp_path / "countdown.png"
        page.screenshot(path=str(shot), clip=workflow_clip(page))
        if os.environ.get("DATASETE_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
            SCREENSHOT.parent.mkdir(exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)

    time.sleep(2.0)
    interact(page, kind)
    # The page restarts its countdown at once and the server's deadline moves with it.
    page.wait_for_function(
        "([el, before]) => Number(el.dataset.deadline) > before + 1.5",
        arg=[clock.element_handle(), entry["deadline"]], timeout=5_000)
    moved = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        [pending] = [e for e in server.pending() if e["token"] == entry["token"]]
        if pending["deadline"] > entry["deadline"] + 1.5:
            moved = pending["deadline"]
            break
        time.sleep(0.1)
    assert moved is not None, "touch did not move the server's deadline"

    # Nobody answers: the gate answers itself, the panel clears and the node says so.
    page.wait_for_selector(f"{selector}[data-node-id='{node_id}'][data-state='idle']", state="attached",
                           timeout=(TIMEOUT + 20) * 1000)
    assert time.time() >= moved - 0.5, "the gate timed out before its moved deadline"
    assert not clock.is_visible()
    page.wait_for_function(
        """([sel, id]) => (document.querySelector(`${sel}[data-node-id='${id}']`)?.textContent ?? '')
            .includes('timed out')""", arg=[selector, node_id], timeout=10_000)
    assert entry["token"] not in {e["token"] for e in server.pending()}
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success"
