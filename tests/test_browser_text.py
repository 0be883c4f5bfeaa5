"""The Text Gate and the Image Folder Loader in the real ComfyUI frontend, driven in Debian chromium.

The example workflow caption_folder.json (Loader -> Text Gate -> Image Gate -> keep: Add to Image Pool /
reject) is loaded as a person would open it, pointed at a small dataset and a pool of its own, queued,
and the caption is edited with the keyboard; what Approve wrote, and what reached the pool, is checked on
disk byte for byte.

Set DATASETE_UPDATE_SCREENSHOT=1 to refresh docs/text_gate_paused.png (from the pinned-classic run).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from browser_helpers import (
    ChooseRequests,
    NewOutputs,
    click_empty_canvas,
    click_node_title,
    open_comfy,
    wait_ready,
    workflow_clip,
)
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

from gates.constants import ROUTE_CHOOSE, ROUTE_LOADER_STATE

pytestmark = pytest.mark.browser

EXAMPLE = REPO_ROOT / "example_workflows" / "caption_folder.json"
SCREENSHOT = REPO_ROOT / "docs" / "text_gate_paused.png"
LOADER, TEXT_GATE, IMAGE_GATE, POOL = "1", "2", "3", "4"
SETTLE_SECONDS = 60.0
BOM = b"\xef\xbb\xbf"
FIRST_CAPTION = "a cat on a mat"


@pytest.fixture
def server(browser_server):
    return browser_server


# --- helpers -------------------------------------------------------------------------------

def new_dataset(server) -> str:
    """datasets/bt_<id>: 1.png with a BOM + CRLF caption, 2.png without one, 3.png with CRLF line ends."""
    folder = f"datasets/bt_{uuid.uuid4().hex[:8]}"
    path = server.input_dir / folder
    path.mkdir(parents=True)
    Image.new("RGB", (320, 200), (200, 120, 40)).save(path / "1.png")
    (path / "1.txt").write_bytes(BOM + FIRST_CAPTION.encode() + b"\r\n")
    Image.new("RGB", (120, 180), (40, 120, 200)).save(path / "2.png")
    Image.new("RGB", (64, 64), (90, 200, 90)).save(path / "3.png")
    (path / "3.txt").write_bytes(b"line one\r\nline two")
    return folder


def example(folder: str, trigger: str = "") -> dict:
    """The example, walking `folder`; what is kept goes to a pool named after the folder (bt_<id>)."""
    workflow = json.loads(EXAMPLE.read_text())
    for node in workflow["nodes"]:
        if str(node["id"]) == POOL:
            node["widgets_values"][0] = pool_of(folder)
        if str(node["id"]) == LOADER:
            node["widgets_values"][0] = folder
        if str(node["id"]) == TEXT_GATE:
            node["widgets_values"][2] = trigger
    return workflow


def pool_of(folder: str) -> str:
    return folder.rsplit("/", 1)[-1]


def pool_pending(server, folder: str) -> NewOutputs:
    """The images the example's Add to Image Pool writes (input/gate_pool/<pool>/pending/) from now on."""
    return NewOutputs(server.input_dir / "gate_pool" / pool_of(folder) / "pending")


def open_example(context, server, errors, folder, trigger=""):
    page = open_comfy(context, server, errors)
    load(page, example(folder, trigger))
    return page


def load(page, workflow):
    page.evaluate("workflow => window.app.loadGraphData(workflow)", copy.deepcopy(workflow))
    page.wait_for_function("id => !!window.app.graph.getNodeById(id)", arg=TEXT_GATE)
    loader_panel(page).wait_for(state="attached")


def text_panel(page):
    return page.locator(f".dsg-text-gate[data-node-id='{TEXT_GATE}']")


def loader_panel(page):
    return page.locator(f".dsg-loader[data-node-id='{LOADER}']")


def queue_until(server, page, kind: str, node_id: str, before: set | None = None) -> dict:
    before = {e["token"] for e in server.pending()} if before is None else before
    if page is not None:
        page.evaluate("() => window.app.queuePrompt(0, 1)")
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        fresh = [e for e in server.pending()
                 if e["token"] not in before and e["kind"] == kind and e["node_id"] == node_id]
        if fresh:
            return fresh[0]
        time.sleep(0.05)
    raise AssertionError(f"no {kind} gate {node_id} paused:\n{server.log_tail()}")


def wait_text_paused(page, token: str, with_image: bool = True):
    page.wait_for_selector(f".dsg-text-gate[data-node-id='{TEXT_GATE}'][data-state='waiting'][data-token='{token}']",
                           timeout=30_000)
    if with_image:
        page.wait_for_function(
            """id => {
                const img = document.querySelector(`.dsg-text-gate[data-node-id='${id}'] img.dsg-text-img`);
                return !!img && img.complete && img.naturalWidth > 0;
            }""", arg=TEXT_GATE, timeout=30_000)
    return text_panel(page)


def wait_text_idle(page):
    page.wait_for_function(
        """id => {
            const panel = document.querySelector(`.dsg-text-gate[data-node-id='${id}']`);
            return !panel || panel.dataset.state === 'idle';
        }""", arg=TEXT_GATE, timeout=30_000)


def keep_image(server, before: set, route: int = 1) -> None:
    """Answer the Image Gate behind the Text Gate over HTTP (route 1 keeps, 2 rejects)."""
    entry = queue_until(server, None, "image", IMAGE_GATE, before)
    status, answer = server.post_json(ROUTE_CHOOSE, {"token": entry["token"], "route": route})
    assert status == 200, answer


def walk_state(server, folder) -> dict:
    return server.get_json(f"{ROUTE_LOADER_STATE}?folder={folder}")


def node_count(page) -> int:
    return page.evaluate("() => window.app.graph.nodes.length")


# --- tests ---------------------------------------------------------------------------------

def test_edit_a_caption_with_the_keyboard_and_approve_writes_it_byte_for_byte(server, frontend, context,
                                                                             page_errors, tmp_path):
    folder = new_dataset(server)
    page = open_example(context, server, page_errors, folder, trigger="cat")
    requests = ChooseRequests(page)
    outputs = pool_pending(server, folder)
    size_before = page.evaluate("id => [...window.app.graph.getNodeById(id).size]", TEXT_GATE)
    entry = queue_until(server, page, "text", TEXT_GATE)
    gate = wait_text_paused(page, entry["token"])
    box = gate.locator("textarea.dsg-text-input")

    assert box.input_value() == FIRST_CAPTION
    assert gate.locator(".dsg-text-counts").inner_text() == "5 words · 14 characters"
    assert gate.locator(".dsg-text-file").inner_text() == f"→ {folder}/1.txt"
    assert gate.locator(".dsg-text-trigger").get_attribute("data-missing") == "false"
    assert gate.locator(".dsg-text-backdrop mark").all_inner_texts() == ["cat"]
    # The node keeps its size; the preview fits inside the panel.
    assert page.evaluate("id => [...window.app.graph.getNodeById(id).size]", TEXT_GATE) == size_before
    image_box, viewport_box = (gate.locator(sel).bounding_box() for sel in ("img.dsg-text-img", ".dsg-text-viewport"))
    assert image_box["width"] <= viewport_box["width"] + 1 and image_box["height"] <= viewport_box["height"] + 1

    # Type with the keyboard. Letters that are canvas shortcuts (r, q, n, m, w, p, .), Delete, Backspace and
    # Ctrl+A must stay in the box: no node deleted, no other prompt queued, no nodes selected.
    nodes = node_count(page)
    box.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(", sitting in the sun")
    page.mouse.move(700, 950)  # off the nodes, and off the tab bar (whose hover opens a preview)
    shots = Path(os.environ.get("DATASETE_SHOTS_DIR") or tmp_path)
    shot = shots / f"text_gate_{frontend.id}.png"
    page.screenshot(path=str(shot), clip=workflow_clip(page) if frontend.id.endswith("classic") else None)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DATASETE_UPDATE_SCREENSHOT") and frontend.id == "pinned-classic":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    page.keyboard.type("; rmqwp.")
    page.keyboard.press("Backspace")
    page.keyboard.press("Delete")
    page.keyboard.press("Enter")
    page.keyboard.type("второй ряд 🐈 — שלום")
    page.keyboard.press("Control+a")
    page.keyboard.press("ArrowRight")
    edited = FIRST_CAPTION + ", sitting in the sun; rmqwp\nвторой ряд 🐈 — שלום"
    assert box.input_value() == edited
    assert node_count(page) == nodes, "a key typed into the caption reached the canvas"
    assert page.evaluate("() => Object.keys(window.app.canvas.selected_nodes ?? {}).length") <= 1
    assert gate.locator(".dsg-text-counts").inner_text() == "13 words · 61 characters"
    assert server.queue_remaining() == 1, "a key typed into the caption queued a prompt"

    before = {e["token"] for e in server.pending()}
    page.keyboard.press("Control+Enter")  # the box has focus: approve
    keep_image(server, before)
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    wait_text_idle(page)
    assert requests.bodies == [{"token": entry["token"], "approve": True, "text": edited}]
    assert history["outputs"][TEXT_GATE]["text"] == [edited]
    # The file keeps its BOM and its CRLF ending; the text in between is exactly what was typed.
    assert (server.input_dir / folder / "1.txt").read_bytes() == BOM + edited.encode() + b"\r\n"
    # Kept: the image and its edited caption are in the pool, waiting for review.
    [kept] = outputs.all()
    with Image.open(kept) as png:
        assert png.size == (320, 200) and png.getpixel((5, 5))[:3] == (200, 120, 40)
    assert kept.with_suffix(".txt").read_text(encoding="utf-8") == edited
    assert server.queue_remaining() == 0
    page.wait_for_function("id => document.querySelector(`.dsg-loader[data-node-id='${id}'] .dsg-loader-status`)"
                           ".textContent === 'next: 2 of 3'", arg=LOADER, timeout=15_000)


def test_a_missing_trigger_is_warned_about_before_approve_and_reject_blocks_everything(server, context, page_errors):
    folder = new_dataset(server)
    page = open_example(context, server, page_errors, folder, trigger="ohwx")
    requests = ChooseRequests(page)
    outputs = pool_pending(server, folder)
    entry = queue_until(server, page, "text", TEXT_GATE)
    gate = wait_text_paused(page, entry["token"])
    trigger = gate.locator(".dsg-text-trigger")
    approve = gate.locator("button.dsg-text-approve")
    assert trigger.get_attribute("data-missing") == "true" and "ohwx" in trigger.inner_text()
    assert gate.locator(".dsg-text-backdrop mark").count() == 0

    approve.click()  # warns instead of approving
    assert approve.inner_text() == "Approve without “ohwx”"
    assert "not in the text" in gate.locator(".dsg-status").inner_text()
    page.wait_for_timeout(300)
    assert requests.bodies == [] and len(server.pending()) == 1

    box = gate.locator("textarea.dsg-text-input")
    box.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" OHWX")
    assert trigger.get_attribute("data-missing") == "false"
    assert gate.locator(".dsg-text-backdrop mark").all_inner_texts() == ["OHWX"]
    assert approve.inner_text() == "Approve"

    gate.locator("button.dsg-text-reject").click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    assert requests.bodies == [{"token": entry["token"], "approve": False}]
    assert IMAGE_GATE not in history["outputs"] and outputs.all() == [], "Reject must block everything behind"
    assert (server.input_dir / folder / "1.txt").read_bytes() == BOM + FIRST_CAPTION.encode() + b"\r\n"
    wait_text_idle(page)

    # Image 2 has no caption and no trigger: a second Approve goes ahead without it, and writes 2.txt.
    entry = queue_until(server, page, "text", TEXT_GATE)
    gate = wait_text_paused(page, entry["token"])
    assert gate.locator("textarea.dsg-text-input").input_value() == ""
    assert gate.locator(".dsg-text-counts").inner_text() == "0 words · 0 characters"
    approve.click()
    page.wait_for_timeout(200)
    assert len(requests.bodies) == 1
    before = {e["token"] for e in server.pending()}
    approve.click()
    keep_image(server, before, route=2)
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success"
    assert requests.bodies[-1] == {"token": entry["token"], "approve": True, "text": ""}
    assert (server.input_dir / folder / "2.txt").read_bytes() == b""

    # Image 3's caption has \r\n line ends, which a text box shows as \n: an edit keeps them \r\n.
    entry = queue_until(server, page, "text", TEXT_GATE)
    gate = wait_text_paused(page, entry["token"])
    box = gate.locator("textarea.dsg-text-input")
    assert box.input_value() == "line one\nline two"
    box.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(" ohwx")
    before = {e["token"] for e in server.pending()}
    page.keyboard.press("Control+Enter")
    keep_image(server, before)
    assert server.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
    assert requests.bodies[-1] == {"token": entry["token"], "approve": True, "text": "line one\r\nline two ohwx"}
    assert (server.input_dir / folder / "3.txt").read_bytes() == b"line one\r\nline two ohwx"


def test_esc_and_ctrl_enter_act_only_for_the_selected_or_focused_gate(server, context, page_errors):
    folder = new_dataset(server)
    page = open_example(context, server, page_errors, folder)
    requests = ChooseRequests(page)
    entry = queue_until(server, page, "text", TEXT_GATE)
    wait_text_paused(page, entry["token"])

    click_empty_canvas(page, (300, 800))  # nothing selected, the box not focused
    page.evaluate("() => document.activeElement?.blur()")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert requests.bodies == [] and [e["token"] for e in server.pending()] == [entry["token"]]

    click_node_title(page, TEXT_GATE)
    page.keyboard.press("Escape")
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "error" and "execution_interrupted" in status_messages(history)
    wait_text_idle(page)
    # Cancelled: the caption is untouched and the walk did not move.
    assert (server.input_dir / folder / "1.txt").read_bytes() == BOM + FIRST_CAPTION.encode() + b"\r\n"
    assert walk_state(server, folder)["next_index"] == 0

    entry = queue_until(server, page, "text", TEXT_GATE)
    wait_text_paused(page, entry["token"])
    click_node_title(page, TEXT_GATE)
    before = {e["token"] for e in server.pending()}
    page.keyboard.press("Control+Enter")  # approves the selected gate, and queues nothing
    keep_image(server, before)
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success"
    assert requests.bodies[-1] == {"token": entry["token"], "approve": True, "text": FIRST_CAPTION}
    # Approved unchanged: the very same bytes, BOM and CRLF included.
    assert (server.input_dir / folder / "1.txt").read_bytes() == BOM + FIRST_CAPTION.encode() + b"\r\n"
    assert server.queue_remaining() == 0 and walk_state(server, folder)["next_index"] == 1


def test_the_loader_panel_picks_a_folder_shows_the_walk_and_resets_it(server, context, page_errors):
    folder = new_dataset(server)
    page = open_example(context, server, page_errors, "")
    panel = loader_panel(page)
    status = panel.locator(".dsg-loader-status")
    assert status.inner_text() == "pick a folder"
    picker = panel.locator("select.dsg-folder-pick")
    picker.dispatch_event("pointerdown")  # opening the list refreshes it
    page.wait_for_function(
        "folder => [...document.querySelectorAll('select.dsg-folder-pick option')].some(o => o.value === folder)",
        arg=folder, timeout=15_000)
    picker.select_option(folder)
    assert page.evaluate(
        "id => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'folder').value", LOADER) == folder
    page.wait_for_function("() => document.querySelector('.dsg-loader-status').textContent === 'next: 1 of 3'",
                           timeout=15_000)

    entry = queue_until(server, page, "text", TEXT_GATE)
    page.wait_for_function("() => document.querySelector('.dsg-loader-status').textContent === '1 of 3'",
                           timeout=15_000)
    # A reloaded page shows the waiting gate again, from /pending.
    page.reload()
    wait_ready(page)
    gate = wait_text_paused(page, entry["token"])
    assert gate.locator("textarea.dsg-text-input").input_value() == FIRST_CAPTION
    before = {e["token"] for e in server.pending()}
    gate.locator("button.dsg-text-approve").click()
    keep_image(server, before)
    assert server.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
    status = loader_panel(page).locator(".dsg-loader-status")
    page.wait_for_function("() => document.querySelector('.dsg-loader-status')?.textContent === 'next: 2 of 3'",
                           timeout=15_000)
    assert walk_state(server, folder)["next_index"] == 1

    loader_panel(page).locator("button.dsg-loader-reset").click()
    page.wait_for_function("() => document.querySelector('.dsg-loader-status').textContent === 'next: 1 of 3'",
                           timeout=15_000)
    assert walk_state(server, folder)["next_index"] == 0

    # A folder that leaves the input folder is named in the status line, and nothing runs.
    page.evaluate("""id => {
        const widget = window.app.graph.getNodeById(id).widgets.find(w => w.name === 'folder');
        widget.value = '../outside';
        widget.callback?.(widget.value);
    }""", LOADER)
    page.wait_for_function(
        "() => document.querySelector('.dsg-loader-status').dataset.state === 'error'", timeout=15_000)
    assert "'../outside' leaves the input folder" in status.inner_text()
