"""The Grid Pool Gate and Add to Image Pool in the real ComfyUI frontend, driven in Debian chromium.

A pool of 40 images (three sizes, each with a caption) is filled by queued prompts through Add to Image
Pool, then reviewed with example_workflows/pool_review.json in three pages: with the mouse (clicks,
a double click into the full-size viewer), with the keyboard (arrows, Enter, Space, A, N, Ctrl+Enter,
Esc) and with the buttons. What the grid sent is checked against the files SaveImage wrote (pixel by
pixel), the captions PreviewAny received, and the pool's folders on disk.

Set DATASETE_UPDATE_SCREENSHOT=1 to refresh docs/grid_pool_gate.png from the first test.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import ChooseRequests, click_empty_canvas, click_node_title, open_comfy, workflow_clip
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

pytestmark = pytest.mark.browser

GRID = "1"  # the Grid Pool Gate in pool_review.json
SAVE = "3"  # its SaveImage
CAPTIONS = "4"  # its PreviewAny of the captions
REVIEW = REPO_ROOT / "example_workflows" / "pool_review.json"
OVERNIGHT = REPO_ROOT / "example_workflows" / "pool_overnight.json"
ADD = "8"  # Add to Image Pool in pool_overnight.json
SCREENSHOT = REPO_ROOT / "docs" / "grid_pool_gate.png"
SIZES = ((96, 64), (64, 96), (80, 80))  # width, height: three sizes, in three prompts
SETTLE = 60.0


@pytest.fixture
def server(browser_server):
    return browser_server


# --- filling a pool through queued prompts ---------------------------------------------------------

def colour_of(index: int) -> int:
    r, g, b = colorsys.hsv_to_rgb((index * 0.61803) % 1.0, 0.35 + 0.5 * (index % 3) / 2, 0.55 + 0.4 * (index % 2))
    return (int(r * 255) << 16) | (int(g * 255) << 8) | int(b * 255)


def rgb(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def caption_of(index: int) -> str:
    return f"item {index}: colour #{colour_of(index):06x}, ✓ ünïcode"


def add_prompt(pool: str, indexes: list[int], size: tuple[int, int]) -> dict:
    prompt: dict = {}
    source = None
    for position, index in enumerate(indexes):
        key = str(10 + position)
        prompt[key] = {"class_type": "EmptyImage", "inputs": {"width": size[0], "height": size[1], "batch_size": 1,
                                                              "color": colour_of(index)}}
        if source is None:
            source = [key, 0]
        else:
            prompt[str(100 + position)] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [key, 0]}}
            source = [str(100 + position), 0]
    prompt["200"] = {"class_type": "DataseteAddToImagePool",
                     "inputs": {"images": source, "pool": pool, "captions": "\n".join(caption_of(i) for i in indexes),
                                "skip_duplicates": True}}
    return prompt


def fill_pool(server, pool: str, count: int = 40) -> dict[int, tuple[int, int]]:
    """Queue the prompts that add `count` images; {index: (width, height)} in the order they were added."""
    sizes = {}
    chunks = np.array_split(np.arange(count), len(SIZES))
    for chunk, size in zip(chunks, SIZES, strict=True):
        indexes = [int(i) for i in chunk]
        history = server.wait_done(server.queue(add_prompt(pool, indexes, size)))
        assert history["status"]["status_str"] == "success", status_messages(history)
        sizes.update(dict.fromkeys(indexes, size))
    return sizes


def pool_counts(server, pool: str) -> dict:
    found = [entry for entry in server.get_json("/datasete_gate/pool/list")["pools"] if entry["id"] == pool]
    return found[0] if found else {}


# --- the page --------------------------------------------------------------------------------------

def review_workflow(pool: str, page_size: int = 16) -> dict:
    workflow = json.loads(REVIEW.read_text())
    grid = next(node for node in workflow["nodes"] if str(node["id"]) == GRID)
    grid["widgets_values"][:2] = [pool, page_size]
    return workflow


def load(page, workflow: dict, node_id: str = GRID, widget: str = "grid_panel") -> None:
    """Open `workflow`; ready when the node carries its panel widget (which a frontend without DOM widgets
    in Nodes 2.0 shows in the pack's dock only once the panel has something to show)."""
    page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    page.wait_for_function(
        "([id, name]) => (window.app.graph.getNodeById(id)?.widgets ?? []).some(w => w.name === name)",
        arg=[node_id, widget], timeout=30_000)


def panel(page, node_id: str = GRID):
    return page.locator(f".dsg-grid[data-node-id='{node_id}']")


def queue_grid(page, server, node_id: str = GRID) -> dict:
    """Queue the page's workflow as the Run button does; the grid's new pending entry, once it shows."""
    before = {entry["token"] for entry in server.pending()}
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        fresh = [e for e in server.pending() if e["token"] not in before and e["node_id"] == node_id]
        if fresh:
            entry = fresh[0]
            page.wait_for_selector(f".dsg-grid[data-node-id='{node_id}'][data-state='waiting']"
                                   f"[data-token='{entry['token']}']", timeout=30_000)
            page.wait_for_function(
                """nodeId => [...document.querySelectorAll(`.dsg-grid[data-node-id='${nodeId}'] .dsg-grid-tile img`)]
                    .every(img => img.complete && img.naturalWidth > 0)""", arg=node_id, timeout=30_000)
            return entry
        time.sleep(0.05)
    raise AssertionError(f"the queued workflow did not pause at the grid:\n{server.log_tail()}")


def kept_count(page) -> int:
    return int(panel(page).get_attribute("data-kept"))


def tile(page, index: int):
    return panel(page).locator(f".dsg-grid-tile[data-index='{index}']")


def pressed(page) -> list[int]:
    return [int(i) for i in panel(page).locator(".dsg-grid-tile[aria-pressed='true']").evaluate_all(
        "tiles => tiles.map(t => t.dataset.index)")]


class Outputs:
    """The PNGs SaveImage writes under output/pool_review/ from now on."""

    def __init__(self, server):
        self.folder = server.output_dir / "pool_review"
        self.before = set(self.folder.glob("*.png")) if self.folder.exists() else set()

    def new(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.png") if p not in self.before) if self.folder.exists() else []


def check_decision(server, pool: str, entry: dict, keep: list[int], history: dict, outputs: Outputs,
                   index_of: dict[str, int], sizes: dict) -> None:
    """Kept items saved by SaveImage under their names with their exact pixels, their captions in PreviewAny,
    and every shown item in kept/ or rejected/ with its caption beside it."""
    assert history["status"]["status_str"] == "success", status_messages(history)
    names = [entry["items"][i]["name"] for i in keep]
    saved = outputs.new()
    assert sorted(path.name.split("_")[0] for path in saved) == sorted(names), saved
    for path in saved:
        index = index_of[path.name.split("_")[0]]
        pixels = np.asarray(Image.open(path).convert("RGB"))
        width, height = sizes[index]
        assert pixels.shape == (height, width, 3), f"{path.name} has the wrong size"
        assert (pixels == rgb(colour_of(index))).all(), f"{path.name} is not the pixels of item {index}"
    if names:
        texts = history["outputs"][CAPTIONS]["text"]
        assert texts == [caption_of(index_of[name]) for name in names]
    else:
        assert SAVE not in history["outputs"] and CAPTIONS not in history["outputs"], "nothing kept: all blocked"
    folder = server.input_dir / "gate_pool" / pool
    for position, item in enumerate(entry["items"]):
        state = "kept" if position in keep else "rejected"
        name = item["name"]
        assert (folder / state / f"{name}.png").exists(), f"{name} is not in {state}/"
        assert (folder / state / f"{name}.txt").read_bytes() == caption_of(index_of[name]).encode()
        assert not (folder / "pending" / f"{name}.png").exists()


# --- tests -----------------------------------------------------------------------------------------

def test_a_40_image_pool_is_reviewed_in_three_pages_with_clicks_keys_and_buttons(server, context, page_errors,
                                                                                 tmp_path):
    pool = f"night_{uuid.uuid4().hex[:8]}"
    sizes = fill_pool(server, pool, 40)
    assert pool_counts(server, pool) == {"id": pool, "pending": 40, "kept": 0, "rejected": 0}
    index_of = {f"{n + 1:06d}": n for n in range(40)}  # added in index order: 000001 is item 0

    page = open_comfy(context, server, page_errors)
    requests = ChooseRequests(page)
    load(page, review_workflow(pool))

    # --- page 1: the mouse -------------------------------------------------------------------
    outputs = Outputs(server)
    entry = queue_grid(page, server)
    # The pool picker lists the pool with its pending count.
    page.wait_for_function(
        "pool => [...document.querySelectorAll(`.dsg-grid select.dsg-slot-pick option`)].some(o => o.value === pool)",
        arg=pool, timeout=15_000)
    assert f"{pool} · 40 pending" in panel(page).locator("select.dsg-slot-pick").inner_text()
    assert [item["name"] for item in entry["items"]] == [f"{n:06d}" for n in range(1, 17)]
    assert (entry["pending"], entry["remaining"]) == (40, 24)
    gate = panel(page)
    assert gate.locator(".dsg-grid-tile").count() == 16
    assert gate.locator(".dsg-grid-count").inner_text() == "0 of 16 kept"
    assert gate.locator(".dsg-grid-remaining").inner_text() == "24 more after this page"
    # Thumbnails are small files, not the full-size PNGs.
    thumbs = [item["image"] for item in entry["items"]]
    assert all(t["type"] == "temp" and t["filename"].endswith((".webp", ".png")) for t in thumbs)

    # The node keeps its size: the grid fits into it.
    size_before = page.evaluate("id => [...window.app.graph.getNodeById(id).size]", GRID)
    for index in (0, 2, 5):
        tile(page, index).click()
    assert pressed(page) == [0, 2, 5] and gate.locator(".dsg-grid-count").inner_text() == "3 of 16 kept"
    assert page.evaluate("id => [...window.app.graph.getNodeById(id).size]", GRID) == size_before

    shot = tmp_path / "grid_pool_gate.png"
    page.mouse.move(5, 5)
    page.screenshot(path=str(shot), clip=workflow_clip(page))
    assert shot.stat().st_size > 20_000
    if os.environ.get("DATASETE_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)

    # A double click opens the item at full size: the item's own file, with its caption.
    tile(page, 9).dblclick()
    viewer = page.locator(".dsg-grid-viewer")
    viewer.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector('.dsg-grid-viewer img.dsg-grid-full');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    natural = viewer.locator("img.dsg-grid-full").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(natural) == sizes[9]
    assert "type=input" in viewer.locator("img.dsg-grid-full").get_attribute("src")
    assert viewer.locator(".dsg-grid-viewer-caption").inner_text() == caption_of(9)
    assert pressed(page) == [0, 2, 5], "a double click toggles twice: no change"
    page.keyboard.press("Space")  # in the viewer: keep the one shown
    page.keyboard.press("ArrowRight")
    assert viewer.get_attribute("data-index") == "10"
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")  # closes the viewer, does not cancel the gate
    viewer.wait_for(state="detached")
    assert server.pending() and pressed(page) == [0, 2, 5, 9, 10]
    tile(page, 2).click()  # changed my mind
    gate.locator("button.dsg-grid-send").click()
    history = server.wait_done(entry["prompt_id"])
    check_decision(server, pool, entry, [0, 5, 9, 10], history, outputs, index_of, sizes)
    assert requests.bodies[-1] == {"token": entry["token"], "keep": [0, 5, 9, 10]}
    page.wait_for_selector(f".dsg-grid[data-node-id='{GRID}'][data-state='idle']", state="attached")
    page.wait_for_function("id => (document.querySelector(`.dsg-grid[data-node-id='${id}'] .dsg-grid-hint`)"
                           "?.textContent ?? '').startsWith('kept 4 of 16')", arg=GRID, timeout=15_000)
    assert pool_counts(server, pool) == {"id": pool, "pending": 24, "kept": 4, "rejected": 12}

    # --- page 2: the keyboard ----------------------------------------------------------------
    outputs = Outputs(server)
    entry = queue_grid(page, server)
    assert [item["name"] for item in entry["items"]] == [f"{n:06d}" for n in range(17, 33)]
    assert entry["remaining"] == 8
    # Not selected: the keys are not the grid's. (Enter: a key the frontend itself leaves alone; its own
    # shortcuts, such as A for the assets panel in newer frontends, belong to it then.)
    click_empty_canvas(page, (675, 800))
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert kept_count(page) == 0
    click_node_title(page, GRID)
    page.keyboard.press("a")
    assert kept_count(page) == 16
    page.keyboard.press("n")
    assert kept_count(page) == 0
    columns = int(gate.locator(".dsg-grid-tiles").get_attribute("data-columns"))
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # keep 2
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # keep 2 + a row
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Space")  # full size of the focused one
    viewer.wait_for(state="visible")
    assert viewer.get_attribute("data-index") == str(1 + columns)
    page.keyboard.press("Escape")
    viewer.wait_for(state="detached")
    page.keyboard.press("Enter")  # keep it after all
    keep = sorted([2, 2 + columns, 1 + columns])
    assert pressed(page) == keep
    page.keyboard.press("Control+Enter")
    history = server.wait_done(entry["prompt_id"])
    check_decision(server, pool, entry, keep, history, outputs, index_of, sizes)
    assert requests.bodies[-1] == {"token": entry["token"], "keep": keep}
    # Ctrl+Enter went to the grid, not to the frontend's "queue the workflow" shortcut.
    assert server.queue_remaining() == 0

    # --- page 3: the buttons; the last page -------------------------------------------------
    outputs = Outputs(server)
    entry = queue_grid(page, server)
    assert [item["name"] for item in entry["items"]] == [f"{n:06d}" for n in range(33, 41)]
    assert gate.locator(".dsg-grid-remaining").inner_text() == "last page"
    gate.locator("button.dsg-grid-all").click()
    tile(page, 4).click()
    gate.locator("button.dsg-grid-send").click()
    history = server.wait_done(entry["prompt_id"])
    check_decision(server, pool, entry, [0, 1, 2, 3, 5, 6, 7], history, outputs, index_of, sizes)
    assert pool_counts(server, pool) == {"id": pool, "pending": 0, "kept": 4 + 3 + 7, "rejected": 12 + 13 + 1}

    # --- a fourth run: nothing pending, no pause, the node says why ----------------------------
    before = {e["token"] for e in server.pending()}
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    page.wait_for_function(
        "id => document.querySelector(`.dsg-grid[data-node-id='${id}'] .dsg-grid-hint`)?.textContent"
        ".includes('has nothing pending')", arg=GRID, timeout=30_000)
    assert f"pool '{pool}' has nothing pending" in gate.locator(".dsg-grid-hint").inner_text()
    assert not [e for e in server.pending() if e["token"] not in before]


def test_a_reloaded_page_and_a_second_tab_show_the_waiting_grid_and_esc_cancels(server, context, page_errors):
    pool = f"tabs_{uuid.uuid4().hex[:8]}"
    server.wait_done(server.queue(add_prompt(pool, [1, 2, 3], SIZES[0])))
    page = open_comfy(context, server, page_errors)
    load(page, review_workflow(pool))
    entry = queue_grid(page, server)
    tile(page, 1).click()

    page.reload()
    page.wait_for_function("() => !!(window.app && window.app.graph)")
    page.wait_for_selector(f".dsg-grid[data-node-id='{GRID}'][data-token='{entry['token']}']", timeout=60_000)
    second = open_comfy(context, server, page_errors)
    second.wait_for_selector(f".dsg-grid[data-node-id='{GRID}'][data-token='{entry['token']}']", timeout=60_000)
    assert panel(second).locator(".dsg-grid-tile").count() == 3

    click_node_title(page, GRID)
    page.keyboard.press("Escape")
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    for tab in (page, second):  # the cancel in one tab clears the other
        # (idle, a panel in the dock is hidden: attached, not visible)
        tab.wait_for_selector(f".dsg-grid[data-node-id='{GRID}'][data-state='idle']", state="attached",
                              timeout=30_000)
    assert pool_counts(server, pool) == {"id": pool, "pending": 3, "kept": 0, "rejected": 0}, "nothing moved"


def history_statuses(server, node_id: str, pool: str) -> list[str]:
    """The status lines a pool node of `pool` left in /history (its UI output), oldest first."""
    found = []
    for entry in server.get_json("/history").values():
        for status in entry.get("outputs", {}).get(node_id, {}).get("datasete_pool", []):
            if status.get("pool") == pool:
                found.append(status["text"])
    return found


def wait_for_history_status(server, node_id: str, pool: str, count: int, timeout: float = SETTLE) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = history_statuses(server, node_id, pool)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no status of pool {pool!r} in the history:\n{server.log_tail()}")


def test_add_to_image_pool_shows_its_counts_and_an_unknown_pool_says_so(server, frontend, context, page_errors):
    pool = f"add_{uuid.uuid4().hex[:8]}"
    page = open_comfy(context, server, page_errors)
    workflow = json.loads(OVERNIGHT.read_text())
    add = next(node for node in workflow["nodes"] if str(node["id"]) == ADD)
    add["widgets_values"][0] = pool
    load(page, workflow, ADD, "pool_status")
    status = page.locator(f".dsg-pool-add[data-node-id='{ADD}'] .dsg-pool-status")
    first = "added 4 · pending 4 · kept 0 · rejected 0"
    again = "added 0 · pending 4 · kept 0 · rejected 0 · 4 duplicates skipped"
    for run, expected in enumerate((first, again), start=1):  # the second run: the same four frames again
        page.evaluate("() => window.app.queuePrompt(0, 1)")
        assert wait_for_history_status(server, ADD, pool, run)[-1] == expected
        if frontend.nodes_show_dom_widgets:
            status.filter(has_text=expected).wait_for(timeout=30_000)
            assert status.inner_text() == expected
        # (1.27's Nodes 2.0 mounts no DOM widget and only waiting gates go to the dock: an idle pool node's
        # line is then in the log and the history only; see README, Tested with.)
    folder = server.input_dir / "gate_pool" / pool / "pending"
    assert sorted(p.name for p in folder.iterdir()) == [f"00000{n}.{e}" for n in range(1, 5) for e in ("png", "txt")]
    assert (folder / "000002.txt").read_bytes() == b"an orange square"

    missing = f"missing_{uuid.uuid4().hex[:8]}"
    load(page, review_workflow(missing))
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    assert wait_for_history_status(server, GRID, missing, 1) == [f"pool '{missing}' does not exist"]
    if frontend.nodes_show_dom_widgets:
        page.wait_for_function(
            "id => document.querySelector(`.dsg-grid[data-node-id='${id}'] .dsg-grid-hint`)?.textContent"
            ".includes('does not exist')", arg=GRID, timeout=60_000)
        assert panel(page).locator(".dsg-grid-hint").inner_text() == f"pool '{missing}' does not exist"
