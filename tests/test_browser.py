"""The Image Gate's in-node UI in the real ComfyUI frontend, driven in Debian chromium by Playwright.

The server is a real ComfyUI with this pack installed; the page is its own frontend. The example
workflow image_gate_basic.json is loaded as a person would open it, queued, and answered with the
mouse and the keyboard; what the routes and the mask wrote is checked on disk, pixel by pixel.

Set DATASETE_UPDATE_SCREENSHOT=1 to refresh docs/image_gate_paused.png from the paint test (newest-vue: what a
new user sees).
"""

from __future__ import annotations

import os
import shutil
import uuid
from urllib.parse import urlencode

import numpy as np
import pytest
from browser_helpers import (
    GATE_NODE_ID,
    ChooseRequests,
    NewOutputs,
    click_empty_canvas,
    click_node_title,
    drop_websocket_events,
    example_workflow,
    load_workflow,
    open_comfy,
    paint_stroke,
    panel,
    prepare_frontend,
    queue_gate,
    set_range,
    wait_idle,
    wait_paused,
    wait_ready,
    without_gate_image,
    workflow_clip,
)
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

from gates.constants import ROUTE_CHOOSE

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 512, 384  # the example workflow's picture
BACKGROUND = (0x2D, 0x6A, 0x8F)
PATCH = (0xF2, 0xA3, 0x3A)
PATCH_BOX = (160, 120, 160 + 192, 120 + 144)  # x0, y0, x1, y1 of the patch in the picture
SETTLE_SECONDS = 60.0
SCREENSHOT = REPO_ROOT / "docs" / "image_gate_paused.png"


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def server(browser_server):
    """The ComfyUI serving this combination's frontend (see conftest.browser_server)."""
    return browser_server


# --- helpers -------------------------------------------------------------------------------

def open_example(context, server, errors: list, **options):
    page = open_comfy(context, server, errors)
    load_workflow(page, example_workflow(**options))
    return page


def queue_and_wait(page, server) -> dict:
    """Queue the page's workflow and wait until its gate shows the pause; the pending entry."""
    entry = queue_gate(page, server, SETTLE_SECONDS)
    wait_paused(page, entry["token"])
    return entry


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def read_gray(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def assert_is_the_picture(pixels: np.ndarray) -> None:
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    x0, y0, x1, y1 = PATCH_BOX
    inside = np.zeros((HEIGHT, WIDTH), dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert (pixels[inside] == PATCH).all(), "the patch of the routed picture is not the patch colour"
    assert (pixels[~inside] == BACKGROUND).all(), "the background of the routed picture is not its colour"


def image_point(fraction: tuple[float, float]) -> tuple[float, float]:
    return fraction[0] * WIDTH, fraction[1] * HEIGHT


def assert_mask_is_strokes(mask: np.ndarray, strokes, brush: int, tolerance: float = 2.0) -> None:
    """White on the strokes' cores, black away from them; the antialiased rim may be anything."""
    assert mask.shape == (HEIGHT, WIDTH)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    centres_x, centres_y = xs + 0.5, ys + 0.5
    distance = np.full((HEIGHT, WIDTH), np.inf)
    for start, end in strokes:
        a, b = image_point(start), image_point(end)
        # the distance of every pixel centre to the segment a-b
        dx, dy = b[0] - a[0], b[1] - a[1]
        t = np.clip(((centres_x - a[0]) * dx + (centres_y - a[1]) * dy) / (dx * dx + dy * dy), 0, 1)
        distance = np.minimum(distance, np.hypot(centres_x - (a[0] + t * dx), centres_y - (a[1] + t * dy)))
    core = distance <= brush / 2 - tolerance
    outside = distance >= brush / 2 + tolerance
    assert core.sum() > 1000, "the test stroke is too small to say anything"
    assert (mask[core] >= 250).all(), f"{int((mask[core] < 250).sum())} pixels on the stroke are not white"
    assert (mask[outside] == 0).all(), f"{int((mask[outside] != 0).sum())} pixels away from the stroke are not black"


# --- tests ---------------------------------------------------------------------------------

def test_paint_a_mask_and_click_route_2(server, frontend, context, page_errors, tmp_path):
    page = open_example(context, server, page_errors)
    requests = ChooseRequests(page)
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    gate = panel(page)

    assert entry["width"] == WIDTH and entry["height"] == HEIGHT
    assert gate.locator("button.dsg-route").count() == 2, "one button per route"
    assert [b.strip()[0] for b in gate.locator("button.dsg-route").all_inner_texts()] == ["1", "2"]
    assert gate.locator("button.dsg-cancel").is_visible()
    canvas = gate.locator("canvas.dsg-mask")
    assert canvas.evaluate("c => [c.width, c.height]") == [WIDTH, HEIGHT], "the mask is at the image's resolution"

    # Opacity only changes how the mask is shown, never the mask sent.
    set_range(page, gate.locator("input.dsg-opacity"), 45)
    assert float(canvas.evaluate("c => getComputedStyle(c).opacity")) == pytest.approx(0.45)
    brush = 30
    set_range(page, gate.locator("input.dsg-size"), brush)
    kept = ((0.12, 0.55), (0.88, 0.62))
    paint_stroke(page, GATE_NODE_ID, *kept)

    page.mouse.move(300, 960)  # the brush ring follows the pointer: keep it (and hover popups) out of the picture
    page.evaluate("() => document.activeElement?.blur()")  # no focus ring on the last slider
    shot = tmp_path / "image_gate_paused.png"
    page.screenshot(path=str(shot), clip=workflow_clip(page))
    assert shot.stat().st_size > 10_000
    if os.environ.get("DATASETE_UPDATE_SCREENSHOT") and frontend.id == "newest-vue":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # A second stroke, then erased whole with a wider eraser: it must leave nothing behind.
    erased = ((0.2, 0.15), (0.7, 0.15))
    paint_stroke(page, GATE_NODE_ID, *erased)
    gate.locator("button.dsg-tool", has_text="Eraser").click()
    set_range(page, gate.locator("input.dsg-size"), 3 * brush)
    paint_stroke(page, GATE_NODE_ID, (erased[0][0] - 0.08, erased[0][1]), (erased[1][0] + 0.08, erased[1][1]))

    gate.locator("button[data-route='2']").click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    wait_idle(page)

    [body] = requests.bodies
    assert body["route"] == 2 and body["token"] == entry["token"]
    assert body["mask"].startswith("data:image/png;base64,")
    [routed] = outputs.of("gate_route2")
    assert_is_the_picture(read_rgb(routed))
    assert outputs.of("gate_route1") == [], "route 1 was not chosen and must write nothing"
    [mask] = outputs.of("gate_mask")
    assert_mask_is_strokes(read_gray(mask), [kept], brush)


def test_a_reloaded_page_and_a_second_tab_show_the_waiting_gate(server, context, page_errors):
    page = open_example(context, server, page_errors)
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)

    page.reload()
    wait_ready(page)
    wait_paused(page, entry["token"])
    # A second tab of the same browser opens the same workflow and shows the same pause.
    second = open_comfy(context, server, page_errors)
    wait_paused(second, entry["token"])

    requests = ChooseRequests(page)
    panel(page).locator("button[data-route='1']").click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    wait_idle(page)
    wait_idle(second)  # the choice made in one tab clears the other
    assert "mask" not in requests.bodies[0], "nothing was painted, so no mask is sent"

    [routed] = outputs.of("gate_route1")
    assert_is_the_picture(read_rgb(routed))
    assert outputs.of("gate_route2") == []
    [mask] = outputs.of("gate_mask")
    assert (read_gray(mask) == 0).all(), "with no mask painted the mask output is black"


def test_a_tab_that_missed_the_resolution_clears_its_stale_pause_on_the_servers_answer(
        server, context, page_errors):
    page = open_example(context, server, page_errors)
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    # A second tab whose websocket loses every resolved event, as over a flaky connection.
    stale = open_comfy(context, server, page_errors,
                       before_load=lambda tab: drop_websocket_events(tab, "datasete_gate.resolved"))
    wait_paused(stale, entry["token"])

    panel(page).locator("button[data-route='1']").click()
    assert server.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
    wait_idle(page)
    assert panel(stale).get_attribute("data-state") == "waiting", "the stale tab was meant to miss the event"

    panel(stale).locator("button[data-route='2']").click()  # the server answers 409: already decided
    wait_idle(stale)
    assert "already answered" in panel(stale).locator(".dsg-hint").inner_text()
    assert len(outputs.of("gate_route1")) == 1 and outputs.of("gate_route2") == []


def test_keys_choose_and_cancel_while_the_node_is_selected(server, context, page_errors):
    page = open_example(context, server, page_errors)
    requests = ChooseRequests(page)
    outputs = NewOutputs(server.output_dir)

    entry = queue_and_wait(page, server)
    gate = panel(page)
    paint_stroke(page, GATE_NODE_ID, (0.3, 0.3), (0.6, 0.6))
    gate.locator("button.dsg-clear").click()  # Clear leaves nothing to send
    click_empty_canvas(page)
    page.keyboard.press("1")  # the gate is not selected now: the key must not choose
    page.wait_for_timeout(300)
    assert requests.bodies == [] and server.pending(), "a key chose for a gate that was not selected"

    # Selected, but the person is in a form field of the node: keys belong to the field.
    click_node_title(page)
    gate.locator("select.dsg-slot-pick").focus()
    assert page.evaluate("() => document.activeElement.matches('select.dsg-slot-pick')")
    assert page.evaluate("id => !!window.app.canvas.selected_nodes[id]", GATE_NODE_ID)
    page.keyboard.press("1")
    page.wait_for_timeout(300)
    assert requests.bodies == [] and server.pending(), "a key typed into a field chose a route"

    click_node_title(page)
    page.keyboard.press("1")
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "success", status_messages(history)
    wait_idle(page)
    assert requests.bodies == [{"token": entry["token"], "route": 1}]
    [routed] = outputs.of("gate_route1")
    assert_is_the_picture(read_rgb(routed))
    assert outputs.of("gate_route2") == []

    # Esc cancels: the prompt ends as interrupted and nothing behind the gate runs.
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    click_node_title(page)
    page.keyboard.press("Escape")
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    wait_idle(page)
    assert outputs.all() == []


def test_after_a_server_restart_the_page_reconnects_drops_the_lost_pause_and_gates_again(
        fresh_comfy, context, page_errors):
    server = fresh_comfy.start()
    prepare_frontend(server)
    page = open_example(context, server, page_errors)
    first = queue_and_wait(page, server)

    server.stop()  # the waiting prompt dies with the server
    server.start()
    wait_idle(page, timeout_ms=120_000)  # on "reconnected" the page asks /pending, which is empty now

    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    assert entry["token"] != first["token"]
    panel(page).locator("button[data-route='2']").click()
    assert server.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
    [routed] = outputs.of("gate_route2")
    assert_is_the_picture(read_rgb(routed))


def test_a_batch_shows_every_frame_and_cancel_stops_the_run(server, context, page_errors):
    page = open_example(context, server, page_errors, batch_size=3)
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    gate = panel(page)

    assert entry["frames"] == 3
    frames = gate.locator("button.dsg-frame")
    assert frames.count() == 3
    shown = gate.locator("img.dsg-img")
    assert shown.get_attribute("src").endswith(view_query(entry["images"][0]))
    frames.nth(2).click()
    assert shown.get_attribute("src").endswith(view_query(entry["images"][2]))
    assert frames.nth(2).get_attribute("aria-selected") == "true"

    gate.locator("button.dsg-cancel").click()
    history = server.wait_done(entry["prompt_id"])
    assert history["status"]["status_str"] == "error"
    assert "execution_interrupted" in status_messages(history)
    wait_idle(page)
    assert outputs.all() == []


def view_query(image: dict) -> str:
    return "/view?" + urlencode({"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]})


def has_option(page, slot: str) -> None:
    page.wait_for_function(
        "slot => [...document.querySelectorAll('select.dsg-slot-pick option')].some(o => o.value === slot)",
        arg=slot, timeout=15_000)


def test_the_get_id_picker_lists_a_slot_published_while_the_page_is_open(server, frontend, context, page_errors):
    if not frontend.nodes_show_dom_widgets:
        pytest.skip("this frontend's Nodes 2.0 draws no DOM widget in a node, so the idle node has no slot "
                    "picker (get_id is typed; a waiting gate is answered in the dock)")
    slot = f"cp_{uuid.uuid4().hex[:8]}"
    page = open_example(context, server, page_errors)
    picker = panel(page).locator("select.dsg-slot-pick")
    assert slot not in picker.locator("option").all_inner_texts()

    # Another client publishes a slot through the HTTP API: a gate with send_id, answered by POST.
    # (Its node ids differ from the page's gate, whose panel must not show this pause.)
    prompt = {
        "90": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x40C040}},
        "91": {"class_type": "DataseteImageGate", "inputs": {"routes": 1, "image": ["90", 0], "send_id": slot,
                                                             "get_id": ""}},
        "92": {"class_type": "SaveImage", "inputs": {"images": ["91", 1], "filename_prefix": "gate_published"}},
    }
    prompt_id = server.queue(prompt)
    [pending] = server.wait_pending(1, prompt_id=prompt_id)
    assert panel(page).get_attribute("data-state") == "idle"
    status, answer = server.post_json(ROUTE_CHOOSE, {"token": pending["token"], "route": 1})
    assert status == 200, answer
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"

    # The resolved event names the published slot: the open page lists it without a reload.
    has_option(page, slot)

    # Opening the picker refreshes it too: a slot written behind the server's back shows up.
    other = f"cq_{uuid.uuid4().hex[:8]}"
    (server.bus_dir / other).mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(server.bus_dir / other / "image.png")
    picker.dispatch_event("pointerdown")
    has_option(page, other)

    # Picking sets get_id; with the image unwired the gate then plays the slot, and says so.
    load_workflow(page, without_gate_image(example_workflow()))
    picker = panel(page).locator("select.dsg-slot-pick")
    has_option(page, slot)
    picker.select_option(slot)
    assert page.evaluate(
        "id => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'get_id').value", GATE_NODE_ID) == slot
    outputs = NewOutputs(server.output_dir)
    entry = queue_and_wait(page, server)
    assert entry["source"] == "bus" and entry["slot"] == slot
    assert panel(page).locator(".dsg-source").inner_text() == f"from slot {slot}"
    panel(page).locator("button[data-route='1']").click()
    assert server.wait_done(entry["prompt_id"])["status"]["status_str"] == "success"
    [routed] = outputs.of("gate_route1")
    pixels = read_rgb(routed)
    assert pixels.shape == (48, 64, 3) and (pixels == (0x40, 0xC0, 0x40)).all()
