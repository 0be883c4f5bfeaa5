"""The review page (GET /datasete_gate/review) on a phone and on a second screen, in chromium.

Prompts are queued over HTTP, as another tab or a script would; the page was opened on its own, with
no ComfyUI canvas. A gate must show up on it live, be answered with a finger (touch strokes on the
mask, taps on routes, tiles and buttons), and leave it when it is answered anywhere else.

The page does not use ComfyUI's frontend, so these tests run once, on the session's server, not once
per frontend combination. Set DATASETE_UPDATE_SCREENSHOT=1 to refresh docs/review_phone.png and
docs/review_desktop.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid

import numpy as np
import pytest
from comfy_server import REPO_ROOT, status_messages
from PIL import Image

from gates.constants import ROUTE_REVIEW

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True, "device_scale_factor": 3}
DESKTOP = {"viewport": {"width": 1400, "height": 900}}
DOCS = REPO_ROOT / "docs"
GATE = "10"
WAIT_MS = 30_000
SETTLE = 60.0


def screenshot(page, folder, name: str) -> None:
    """A screenshot of the page; docs/<name> is refreshed from it only when asked to (a test run leaves the
    checkout as it was)."""
    shot = folder / name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    if os.environ.get("DATASETE_UPDATE_SCREENSHOT") == "1" or not (DOCS / name).exists():
        shutil.copyfile(shot, DOCS / name)


@pytest.fixture
def server(comfy):
    yield comfy
    comfy.settle(SETTLE)


@pytest.fixture
def phone(chromium):
    context = chromium.new_context(**PHONE)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def desktop(chromium):
    context = chromium.new_context(**DESKTOP)
    try:
        yield context
    finally:
        context.close()


# --- prompts -----------------------------------------------------------------------------------------

def new_tag() -> str:
    return "review" + uuid.uuid4().hex[:8]


def demo_picture(server, tag: str, width: int = 320, height: int = 240) -> str:
    """A small landscape (sky, sun, hills) in the input folder, so the screenshots show a picture."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([90 + 80 * y / height, 140 + 60 * y / height, 230 - 40 * y / height], axis=-1)
    pixels = sky
    sun = (x - width * 0.72) ** 2 + (y - height * 0.3) ** 2 < (height * 0.12) ** 2
    pixels[sun] = (255, 214, 110)
    hill = y > height * (0.62 + 0.08 * np.sin(x / width * 6.0))
    pixels[hill] = np.stack([60 + 0 * x, 140 + 40 * (y / height), 70 + 0 * x], axis=-1)[hill]
    name = f"{tag}.png"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(server.input_dir / name)
    return name


def image_gate_prompt(tag: str, picture: str) -> dict:
    """Picture -> Image Gate (3 routes, titled) -> a SaveImage per route, and the mask saved as an image."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": picture}},
        GATE: {"class_type": "DataseteImageGate", "inputs": {"routes": 3, "image": ["1", 0]},
               "_meta": {"title": "Check the sky"}},
        "30": {"class_type": "MaskToImage", "inputs": {"mask": [GATE, 0]}},
        "31": {"class_type": "SaveImage", "inputs": {"images": ["30", 0], "filename_prefix": f"{tag}_mask"}},
    }
    for route, title in ((1, "Keep"), (2, "Needs inpaint"), (3, "Reject")):
        prompt[str(20 + route)] = {"class_type": "SaveImage", "_meta": {"title": title},
                                   "inputs": {"images": [GATE, route], "filename_prefix": f"{tag}_route{route}"}}
    return prompt


COLOURS = (0xD04040, 0x40A040, 0x4040D0, 0xC0C040, 0x40C0C0, 0xC040C0)


def rgb(colour: int) -> tuple[int, int, int]:
    return (colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF


def grid_prompt(tag: str, page_size: int = 4) -> dict:
    """Six flat frames batched into a Grid Pool Gate (pages of `page_size`); what is kept is saved."""
    prompt: dict = {}
    source = None
    for index, colour in enumerate(COLOURS):
        key = str(1 + index)
        prompt[key] = {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1,
                                                              "color": colour}}
        if source is None:
            source = [key, 0]
        else:
            prompt[str(50 + index)] = {"class_type": "ImageBatch", "inputs": {"image1": source, "image2": [key, 0]}}
            source = [str(50 + index), 0]
    prompt[GATE] = {"class_type": "DataseteGridPoolGate", "_meta": {"title": "Pick the best"},
                    "inputs": {"pool": "", "page_size": page_size, "images": source}}
    prompt["11"] = {"class_type": "SaveImage", "inputs": {"images": [GATE, 0], "filename_prefix": f"{tag}_kept"}}
    return prompt


def text_prompt(caption_path: str, text: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 96, "batch_size": 1, "color": 0x806040}},
        GATE: {"class_type": "DataseteTextGate", "_meta": {"title": "Caption"},
               "inputs": {"text": text, "image": ["1", 0], "caption_path": caption_path, "trigger": ""}},
        "11": {"class_type": "PreviewAny", "inputs": {"source": [GATE, 0]}},
    }


def next_pause(server, prompt_id: str, previous: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in server.pending():
            if entry["prompt_id"] == prompt_id and entry["token"] != previous:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no next pause of {prompt_id} within {timeout}s")


def saved(server, tag: str, what: str) -> list:
    return sorted(server.output_dir.glob(f"{tag}_{what}_*.png"))


# --- the page ------------------------------------------------------------------------------------------

def open_review(context, server, errors: list, query: str = "", prefix: str = ""):
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack}"))
    page.goto(server.url + prefix + ROUTE_REVIEW + query)
    page.wait_for_selector(".dsr-connection[data-online=true]", timeout=WAIT_MS)
    return page


def card(page, token: str):
    return page.locator(f'.dsr-card[data-token="{token}"]')


def wait_card(page, token: str):
    page.wait_for_selector(f'.dsr-card[data-token="{token}"] .dsg-gate[data-state="waiting"]', timeout=WAIT_MS)
    return card(page, token)


def wait_gone(page, token: str):
    page.wait_for_selector(f'.dsr-card[data-token="{token}"]', state="detached", timeout=WAIT_MS)


def assert_fits(page, width: int):
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"


def touch_stroke(page, cdp, start: tuple[float, float], end: tuple[float, float], steps: int = 16):
    """A finger drawn from `start` to `end` (page CSS pixels): real touch input, as a phone sends it."""
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]})
    for step in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * step / steps
        y = start[1] + (end[1] - start[1]) * step / steps
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def canvas_box(page, token: str) -> dict:
    box = card(page, token).locator("canvas.dsg-mask").bounding_box()
    assert box and box["width"] > 100 and box["height"] > 60, box
    return box


def mask_pixels(server, history: dict) -> np.ndarray:
    entry = history["outputs"]["31"]["images"][0]
    with Image.open(server.output_dir / entry["subfolder"] / entry["filename"]) as png:
        return np.array(png.convert("L"))


# --- the tests -------------------------------------------------------------------------------------------

def test_a_phone_sees_the_gate_arrive_paints_a_mask_with_a_finger_and_picks_a_route(server, phone, page_errors,
                                                                                    tmp_path):
    tag = new_tag()
    page = open_review(phone, server, page_errors)
    assert page.locator(".dsr-empty").is_visible(), "an empty page says nothing waits"

    prompt_id = server.queue(image_gate_prompt(tag, demo_picture(server, tag)))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    gate = wait_card(page, entry["token"])  # live, over the websocket: the page was not reloaded
    assert page.locator(".dsr-empty").is_hidden()
    # The node's title and the route targets come from the queued prompt.
    page.wait_for_function("() => document.querySelector('.dsr-title')?.textContent === 'Check the sky'",
                           timeout=WAIT_MS)
    labels = gate.locator(".dsg-route-label").all_text_contents()
    assert labels == ["Keep", "Needs inpaint", "Reject"]
    for button in gate.locator("button:visible").all():
        assert button.bounding_box()["height"] >= 44, "a tap target is smaller than a finger"
    assert_fits(page, 390)

    # Painting: pointer events of a finger, and the page does not scroll under it.
    page.evaluate("""() => {
        window.__pointerTypes = new Set();
        const canvas = document.querySelector('canvas.dsg-mask');
        canvas.addEventListener('pointermove', e => window.__pointerTypes.add(e.pointerType));
    }""")
    page.evaluate("window.scrollTo(0, 60)")
    scrolled = page.evaluate("window.scrollY")
    box = canvas_box(page, entry["token"])
    cdp = phone.new_cdp_session(page)
    middle = box["y"] + box["height"] * 0.5
    touch_stroke(page, cdp, (box["x"] + box["width"] * 0.2, middle), (box["x"] + box["width"] * 0.8, middle))
    assert page.evaluate("[...window.__pointerTypes]") == ["touch"]
    assert page.evaluate("window.scrollY") == scrolled, "the page scrolled while painting"
    assert page.evaluate("window.scrollX") == 0

    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, tmp_path, "review_phone.png")

    # A second finger stroke with the eraser takes a bit back out: the tools work by touch too.
    gate.locator("button", has_text="Eraser").tap()
    box = canvas_box(page, entry["token"])
    x = box["x"] + box["width"] * 0.7
    touch_stroke(page, cdp, (x, box["y"] + box["height"] * 0.3), (x, box["y"] + box["height"] * 0.7), steps=8)
    # A finger takes a moment to get from the picture to a button; Chromium makes no click of a tap that
    # lands within a few milliseconds of a stroke's end (it may still be the stroke's gesture).
    page.wait_for_timeout(800)
    gate.locator('button.dsg-route[data-route="2"]').tap()
    wait_gone(page, entry["token"])

    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", status_messages(history)
    assert saved(server, tag, "route2") and not saved(server, tag, "route1") and not saved(server, tag, "route3")
    mask = mask_pixels(server, history)
    height, width = mask.shape
    row = mask[height // 2]
    assert row[int(width * 0.5)] > 200, "the stroke is not in the mask"
    assert row[int(width * 0.05)] < 20 and row[int(width * 0.95)] < 20, "the mask spreads past the stroke"
    assert mask[int(height * 0.08)].max() < 20, "the top of the image is masked though nothing was painted there"
    assert row[int(width * 0.7)] < 20, "the eraser stroke did not erase"
    page.wait_for_function("() => document.querySelector('.dsr-log')?.textContent.includes('route 2')", timeout=WAIT_MS)
    assert page.locator(".dsr-empty").is_visible()


def test_a_grid_is_toggled_by_taps_paged_through_and_sent(server, phone, page_errors):
    tag = new_tag()
    page = open_review(phone, server, page_errors)
    prompt_id = server.queue(grid_prompt(tag))
    [first] = server.wait_pending(1, prompt_id=prompt_id)
    grid = wait_card(page, first["token"])
    assert grid.locator(".dsg-grid-tile").count() == 4
    assert_fits(page, 390)
    for tile in grid.locator(".dsg-grid-tile").all():
        box = tile.bounding_box()
        assert box["width"] >= 80 and box["height"] >= 80, "a tile is too small for a finger"
    # (Two taps in a row on one tile are a double tap: the full-size view, as a double click in the node.)
    for index in (0, 3, 2, 3):  # tile 3 on, and back off
        grid.locator(f'.dsg-grid-tile[data-index="{index}"]').tap()
    assert grid.locator('.dsg-grid-tile[aria-pressed="true"]').count() == 2
    grid.locator(".dsg-grid-send").tap()
    wait_gone(page, first["token"])

    # The next page of the same run shows up by itself.
    second = next_pause(server, prompt_id, first["token"])
    grid = wait_card(page, second["token"])
    assert grid.locator(".dsg-grid-tile").count() == 2
    grid.locator('.dsg-grid-tile[data-index="1"]').tap()
    grid.locator(".dsg-grid-send").tap()
    wait_gone(page, second["token"])

    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", status_messages(history)
    kept = []
    for entry in history["outputs"]["11"]["images"]:
        with Image.open(server.output_dir / entry["subfolder"] / entry["filename"]) as png:
            kept.append(tuple(int(v) for v in np.array(png.convert("RGB"))[10, 10]))
    assert kept == [rgb(COLOURS[0]), rgb(COLOURS[2]), rgb(COLOURS[5])]


def test_a_caption_is_edited_on_the_phone_and_approved_into_its_file(server, phone, page_errors):
    tag = new_tag()
    folder = server.input_dir / tag
    folder.mkdir()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(folder / "cat.png")
    page = open_review(phone, server, page_errors, query="?lang=zh")
    prompt_id = server.queue(text_prompt(f"{tag}/cat.png", "a cat"))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    gate = wait_card(page, entry["token"])
    # ?lang=zh: the page's own strings and the panel's are Chinese.
    assert page.locator(".dsr-top h1").text_content() == "等待中的闸门"
    assert gate.locator(".dsg-text-approve").text_content() == "通过"
    box = gate.locator("textarea")
    assert box.input_value() == "a cat"
    box.fill("a ginger cat asleep on a red sofa")
    assert_fits(page, 390)
    gate.locator(".dsg-text-approve").tap()
    wait_gone(page, entry["token"])
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", status_messages(history)
    assert (folder / "cat.txt").read_text(encoding="utf-8") == "a ginger cat asleep on a red sofa"


def test_cancel_on_the_page_ends_the_run_and_a_gate_waiting_before_the_page_opened_is_shown(server, phone,
                                                                                             page_errors):
    tag = new_tag()
    prompt_id = server.queue(image_gate_prompt(tag, demo_picture(server, tag)))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    # Under /api/ too; /pending brings in what already waits.
    page = open_review(phone, server, page_errors, prefix="/api")
    gate = wait_card(page, entry["token"])
    gate.locator(".dsg-cancel").tap()
    wait_gone(page, entry["token"])
    history = server.wait_done(prompt_id)
    assert "execution_interrupted" in status_messages(history)
    assert not any(saved(server, tag, f"route{route}") for route in (1, 2, 3))


def test_a_gate_answered_elsewhere_leaves_every_review_page(server, phone, desktop, page_errors):
    tag = new_tag()
    picture = demo_picture(server, tag)
    first_page = open_review(phone, server, page_errors)
    second_page = open_review(desktop, server, page_errors)

    # Answered on another review page.
    prompt_id = server.queue(image_gate_prompt(tag, picture))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    wait_card(first_page, entry["token"])
    wait_card(second_page, entry["token"]).locator('button.dsg-route[data-route="1"]').click()
    wait_gone(first_page, entry["token"])
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"
    first_page.wait_for_function("() => document.querySelector('.dsr-log')?.textContent.includes('route 1')",
                                 timeout=WAIT_MS)

    # Answered where the node is (its own POST, as the node's panel sends it).
    prompt_id = server.queue(image_gate_prompt(tag, picture))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    wait_card(first_page, entry["token"])
    wait_card(second_page, entry["token"])
    status, _ = server.post_json("/datasete_gate/choose", {"token": entry["token"], "route": 3})
    assert status == 200
    wait_gone(first_page, entry["token"])
    wait_gone(second_page, entry["token"])
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"
    assert saved(server, tag, "route3")


def test_after_the_connection_drops_the_page_reconnects_and_shows_what_started_waiting_meanwhile(
        server, phone, page_errors):
    """A phone that slept: its socket missed the gate's event; the reconnect fetches /pending."""
    tag = new_tag()
    state = {"asleep": False, "sockets": []}

    def relay(socket):
        server_side = socket.connect_to_server()
        server_side.on_message(lambda message: None if state["asleep"] else socket.send(message))
        socket.on_message(lambda message: server_side.send(message))
        state["sockets"].append(socket)

    page = phone.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.route_web_socket(re.compile(r"/ws(\?|$)"), relay)
    page.goto(server.url + ROUTE_REVIEW)
    page.wait_for_selector(".dsr-connection[data-online=true]", timeout=WAIT_MS)

    state["asleep"] = True
    prompt_id = server.queue(image_gate_prompt(tag, demo_picture(server, tag)))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    page.wait_for_timeout(500)
    assert card(page, entry["token"]).count() == 0, "the event should have been lost with the connection"

    state["asleep"] = False
    state["sockets"][-1].close()
    page.wait_for_selector(".dsr-connection[data-online=false]", timeout=WAIT_MS)
    wait_card(page, entry["token"])
    assert page.locator(".dsr-connection").get_attribute("data-online") == "true"
    assert len(state["sockets"]) == 2
    server.post_json("/datasete_gate/cancel", {"token": entry["token"]})
    wait_gone(page, entry["token"])  # and the new connection carries the events again


def test_a_countdown_shows_when_the_gate_has_a_deadline_and_a_touch_restarts_it(server, phone, page_errors):
    """The server's timeouts may not be there: its /pending and /touch answers are stood in for here."""
    tag = new_tag()
    prompt_id = server.queue(image_gate_prompt(tag, demo_picture(server, tag)))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    touched: list[dict] = []
    page = phone.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    def pending(route):
        answer = json.loads(route.fetch().text())
        for item in answer["pending"]:
            item.update(deadline=time.time() + 90, timeout=90, on_timeout="route_1")
        route.fulfill(json=answer)

    def touch(route):
        touched.append(route.request.post_data_json)
        route.fulfill(json={"ok": True, "deadline": time.time() + 600})

    page.route("**/datasete_gate/pending", pending)
    page.route("**/datasete_gate/touch", touch)
    page.goto(server.url + ROUTE_REVIEW)
    gate = wait_card(page, entry["token"])
    countdown = gate.locator(".dsg-countdown")
    countdown.wait_for(state="visible", timeout=WAIT_MS)
    assert re.fullmatch(r"answers itself in 1:[0-3]\d: route_1", countdown.text_content())
    box = canvas_box(page, entry["token"])
    page.touchscreen.tap(box["x"] + 20, box["y"] + 20)
    page.wait_for_function(
        "() => /in (9|10):\\d\\d: route_1/.test(document.querySelector('.dsg-countdown').textContent)", timeout=WAIT_MS)
    assert touched == [{"token": entry["token"]}]
    # Interactions right after are not each sent: one touch per few seconds.
    page.touchscreen.tap(box["x"] + 30, box["y"] + 30)
    page.wait_for_timeout(300)
    assert len(touched) == 1
    gate.locator('button.dsg-route[data-route="1"]').tap()
    assert server.wait_done(prompt_id)["status"]["status_str"] == "success"


def test_a_desktop_second_screen_answers_with_the_mouse_and_keys(server, desktop, page_errors, tmp_path):
    tag = new_tag()
    page = open_review(desktop, server, page_errors)
    prompt_id = server.queue(image_gate_prompt(tag, demo_picture(server, tag)))
    [entry] = server.wait_pending(1, prompt_id=prompt_id)
    gate = wait_card(page, entry["token"])
    page.wait_for_function("() => document.querySelector('.dsg-route-label')?.textContent === 'Keep'", timeout=WAIT_MS)
    box = canvas_box(page, entry["token"])
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.75)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(box["x"] + box["width"] * (0.3 + 0.4 * step / 12), box["y"] + box["height"] * 0.75)
    page.mouse.up()
    page.mouse.move(10, 10)
    assert_fits(page, 1400)
    screenshot(page, tmp_path, "review_desktop.png")
    gate.locator(".dsr-title").click()  # the card takes the keys
    page.keyboard.press("2")
    wait_gone(page, entry["token"])
    history = server.wait_done(prompt_id)
    assert history["status"]["status_str"] == "success", status_messages(history)
    assert saved(server, tag, "route2")
    mask = mask_pixels(server, history)
    height, width = mask.shape
    assert mask[int(height * 0.75), int(width * 0.5)] > 200
    assert mask[int(height * 0.25), int(width * 0.5)] < 20
