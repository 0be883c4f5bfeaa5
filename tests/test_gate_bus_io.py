"""Slot contents: batches, alpha and masks round-trip; a slot that cannot be read fails naming it."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import torch
from bus_testkit import distinct_frames, save_image, save_mask, slot_folder, snapshot, solid_frames, solid_mask
from PIL import Image

from gates import gates_compat, imagebus, imaging, pause, slots
from gates.constants import EVENT_PREVIEW, EVENT_RESOLVED, MAX_ROUTES, NODE_ID
from gates.nodes import image_gate


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return imaging.image_to_uint8(tensor) if tensor.ndim == 4 else imaging.mask_to_uint8(tensor)


def assert_same_pixels(a: torch.Tensor, b: torch.Tensor):
    """Equal as 8-bit pixels, the precision a slot stores."""
    assert a.shape == b.shape
    assert np.array_equal(to_uint8(a), to_uint8(b))


# --- round trips ----------------------------------------------------------------------

def test_a_batch_of_three_distinct_frames_round_trips_in_order(tmp_path):
    frames = distinct_frames(3)
    slots.bus_save(tmp_path, "batch", frames, solid_mask(128, frames=1))
    image, mask = slots.bus_load(tmp_path, "batch")
    assert_same_pixels(image, frames)
    assert mask.shape == (3, 6, 5) and torch.all(mask == 128 / 255)
    names = sorted(p.name for p in (tmp_path / "batch").iterdir())
    assert names == ["frame_0001.png", "frame_0002.png", "image.png", "mask.png", "slot.json"]


def test_image_png_is_frame_zero_as_an_ordinary_png(tmp_path):
    frames = distinct_frames(3)
    slots.bus_save(tmp_path, "batch", frames, None)
    with Image.open(tmp_path / "batch" / "image.png") as png:
        assert png.format == "PNG" and png.size == (5, 6)
        assert np.array_equal(np.array(png.convert("RGB")), imaging.image_to_uint8(frames)[0])
    with Image.open(tmp_path / "batch" / "frame_0002.png") as png:
        assert np.array_equal(np.array(png.convert("RGB")), imaging.image_to_uint8(frames)[2])


def test_alpha_round_trips(tmp_path):
    frames = distinct_frames(2, channels=4)
    frames[0, 0, 0, 3] = 0.0  # one fully transparent pixel
    slots.bus_save(tmp_path, "alpha", frames, None)
    image, mask = slots.bus_load(tmp_path, "alpha")
    assert image.shape == (2, 6, 5, 4)
    assert_same_pixels(image, frames)
    assert float(image[0, 0, 0, 3]) == 0.0
    assert torch.all(mask == 0)
    with Image.open(tmp_path / "alpha" / "image.png") as png:
        assert png.mode == "RGBA"


def test_an_opaque_alpha_channel_stays_four_channels(tmp_path):
    frames = solid_frames([30], channels=4)
    frames[..., 3] = 1.0
    slots.bus_save(tmp_path, "opaque", frames, None)
    assert slots.bus_load(tmp_path, "opaque")[0].shape[-1] == 4


def test_a_one_channel_image_round_trips(tmp_path):
    frames = distinct_frames(2, channels=1)
    slots.bus_save(tmp_path, "gray", frames, None)
    image, _ = slots.bus_load(tmp_path, "gray")
    assert image.shape == (2, 6, 5, 1)
    assert_same_pixels(image, frames)


def test_masks_of_their_own_per_frame_round_trip(tmp_path):
    frames = distinct_frames(3)
    masks = torch.stack([torch.full((6, 5), v / 255) for v in (0, 100, 255)])
    slots.bus_save(tmp_path, "masks", frames, masks)
    _, mask = slots.bus_load(tmp_path, "masks")
    assert_same_pixels(mask, masks)
    assert json.loads((tmp_path / "masks" / "slot.json").read_text())["mask_frames"] == 3
    assert (tmp_path / "masks" / "mask_0002.png").is_file()


def test_one_mask_repeated_over_the_batch_is_stored_once(tmp_path):
    slots.bus_save(tmp_path, "same", distinct_frames(3), solid_mask(77, frames=3))
    assert not (tmp_path / "same" / "mask_0001.png").exists()
    _, mask = slots.bus_load(tmp_path, "same")
    assert mask.shape == (3, 6, 5) and torch.all(mask == 77 / 255)


def test_a_two_dimensional_mask_is_accepted(tmp_path):
    slots.bus_save(tmp_path, "flat", distinct_frames(2), torch.full((6, 5), 1.0))
    assert torch.all(slots.bus_load(tmp_path, "flat")[1] == 1.0)


def test_no_mask_loads_as_zeros_and_the_manifest_says_so(tmp_path):
    slots.bus_save(tmp_path, "nomask", distinct_frames(2), None)
    manifest = json.loads((tmp_path / "nomask" / "slot.json").read_text())
    assert manifest["mask"] is False and manifest["mask_frames"] == 0
    assert not (tmp_path / "nomask" / "mask.png").exists()
    _, mask = slots.bus_load(tmp_path, "nomask")
    assert mask.shape == (2, 6, 5) and torch.all(mask == 0)


def test_the_manifest_describes_the_slot(tmp_path):
    slots.bus_save(tmp_path, "m", distinct_frames(3, height=7, width=9, channels=4), solid_mask(1, 7, 9))
    manifest = json.loads((tmp_path / "m" / "slot.json").read_text())
    assert {k: manifest[k] for k in ("format", "version", "frames", "width", "height", "channels", "mask",
                                     "mask_frames")} == {
        "format": "datasete-gate-slot", "version": 1, "frames": 3, "width": 9, "height": 7, "channels": 4,
        "mask": True, "mask_frames": 1}


def test_a_republish_with_fewer_frames_leaves_no_old_frames(tmp_path):
    slots.bus_save(tmp_path, "shrink", distinct_frames(3), None)
    slots.bus_save(tmp_path, "shrink", distinct_frames(1), solid_mask(5))
    assert sorted(p.name for p in (tmp_path / "shrink").iterdir()) == ["image.png", "mask.png", "slot.json"]
    assert slots.bus_load(tmp_path, "shrink")[0].shape[0] == 1


def test_a_slot_in_the_plans_layout_still_loads(tmp_path):
    """image.png + mask.png and no slot.json, as the original plan wrote them: one frame."""
    slot = slot_folder(tmp_path, "old")
    save_image(slot / "image.png", solid_frames([90]))
    save_mask(slot / "mask.png", solid_mask(255))
    image, mask = slots.bus_load(tmp_path, "old")
    assert image.shape == (1, 6, 5, 3) and torch.all(mask == 1.0)
    (slot / "mask.png").unlink()
    assert torch.all(slots.bus_load(tmp_path, "old")[1] == 0)


def test_bus_write_refuses_bad_arrays_naming_the_slot(tmp_path):
    good = np.zeros((1, 4, 4, 3), np.uint8)
    for frames, masks in [(good.astype(np.float32), None), (np.zeros((1, 4, 4, 2), np.uint8), None),
                          (np.zeros((0, 4, 4, 3), np.uint8), None), (good, np.zeros((2, 4, 4), np.uint8)),
                          (good, np.zeros((1, 4, 5), np.uint8)), (good, np.zeros((1, 4, 4), np.float32))]:
        with pytest.raises(imagebus.SlotError, match="'cp1'"):
            slots.bus_write(tmp_path, "cp1", frames, masks)
    assert list(tmp_path.iterdir()) == []


def test_a_mask_batch_that_fits_neither_one_nor_every_frame_is_refused(tmp_path):
    with pytest.raises(imagebus.SlotError, match="'cp1'"):
        slots.bus_save(tmp_path, "cp1", distinct_frames(3), solid_mask(1, frames=2))
    assert list(tmp_path.iterdir()) == []


# --- slots that cannot be read ----------------------------------------------------------

@pytest.fixture
def slot(tmp_path):
    slots.bus_save(tmp_path, "broken", distinct_frames(3), solid_mask(200))
    return tmp_path / "broken"


def _manifest(slot, **changes):
    manifest = json.loads((slot / "slot.json").read_text())
    manifest.update(changes)
    (slot / "slot.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    "truncated image.png": (lambda s: (s / "image.png").write_bytes((s / "image.png").read_bytes()[:40]),
                            "image.png is not a readable image"),
    "truncated frame": (lambda s: (s / "frame_0002.png").write_bytes((s / "frame_0002.png").read_bytes()[:30]),
                        "frame_0002.png is not a readable image"),
    "garbage mask.png": (lambda s: (s / "mask.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage"),
                         "mask.png is not a readable image"),
    "empty mask.png": (lambda s: (s / "mask.png").write_bytes(b""), "mask.png is not a readable image"),
    "mask of another size": (lambda s: save_mask(s / "mask.png", torch.ones((1, 3, 3))),
                             "mask.png is 3x3, image.png is 5x6"),
    "frame of another size": (lambda s: save_image(s / "frame_0001.png", torch.ones((1, 2, 2, 3))),
                              "frame_0001.png is 2x2"),
    "frame with other channels": (
        lambda s: save_image(s / "frame_0001.png", torch.ones((1, 6, 5, 4))), "frame_0001.png"),
    "frame missing": (lambda s: (s / "frame_0001.png").unlink(), "frame_0001.png is missing"),
    "mask missing": (lambda s: (s / "mask.png").unlink(), "mask.png is missing"),
    "image.png missing": (lambda s: (s / "image.png").unlink(), "image.png is missing"),
    "manifest not JSON": (lambda s: (s / "slot.json").write_text("{frames: 3"), "slot.json is bad: not JSON"),
    "manifest not UTF-8": (lambda s: (s / "slot.json").write_bytes(b"\xff\xfe"), "slot.json is bad"),
    "manifest a list": (lambda s: (s / "slot.json").write_text("[3]"), "expected an object"),
    "frames zero": (lambda s: _manifest(s, frames=0), "frames must be a whole number"),
    "frames text": (lambda s: _manifest(s, frames="3"), "frames must be a whole number"),
    "frames true": (lambda s: _manifest(s, frames=True), "frames must be a whole number"),
    "frames huge": (lambda s: _manifest(s, frames=10**9), "frames must be a whole number"),
    "frames missing": (lambda s: _manifest(s, frames=None), "frames must be a whole number"),
    "more frames than files": (lambda s: _manifest(s, frames=4), "frame_0003.png is missing"),
    "width wrong": (lambda s: _manifest(s, width=6), "slot.json says 6x6"),
    "channels wrong": (lambda s: _manifest(s, channels=4), "slot.json says 4 channels"),
    "channels two": (lambda s: _manifest(s, channels=2), "channels must be 1, 3 or 4"),
    "mask_frames two of three": (lambda s: _manifest(s, mask_frames=2), "mask_frames must be 0, 1 or 3"),
    "mask_frames three": (lambda s: _manifest(s, mask_frames=3), "mask_0001.png is missing"),
    "image.png a folder": (lambda s: ((s / "image.png").unlink(), (s / "image.png").mkdir()),
                           "image.png is not a regular file"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_an_unreadable_slot_fails_naming_the_slot(slot, corruption):
    damage, message = CORRUPTIONS[corruption]
    damage(slot)
    for call in (slots.bus_load, slots.bus_read, lambda base, i: slots.resolve_source(base, None, i)):
        with pytest.raises(imagebus.SlotError) as caught:
            call(slot.parent, "broken")
        assert not isinstance(caught.value, imagebus.SlotNotFound)
        assert "slot 'broken'" in str(caught.value) and message in str(caught.value)


def test_an_empty_or_absent_slot_is_not_found_and_resolves_to_nothing(tmp_path):
    slot_folder(tmp_path, "empty")
    for bus_id in ("empty", "absent"):
        with pytest.raises(imagebus.SlotNotFound, match=f"'{bus_id}'"):
            slots.bus_load(tmp_path, bus_id)
        assert slots.resolve_source(tmp_path, None, bus_id) == (None, None)
    assert slots.resolve_source(tmp_path / "no_bus_folder", None, "absent") == (None, None)


def test_list_ids_leaves_out_staging_empty_and_half_made_folders(tmp_path):
    slots.bus_save(tmp_path, "good", distinct_frames(1), None)
    slot_folder(tmp_path, "empty")
    (tmp_path / "only_mask").mkdir()
    save_mask(tmp_path / "only_mask" / "mask.png", solid_mask(1))
    (tmp_path / "dir_image" / "image.png").mkdir(parents=True)
    (tmp_path / "a_file").write_bytes(b"x")
    staging = tmp_path / imagebus._staging_name("good", "new")
    staging.mkdir()
    (staging / "image.png").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "image.png").write_bytes(b"x")
    assert imagebus.list_ids(tmp_path) == ["good"]
    assert imagebus.list_ids(tmp_path / "missing") == []
    assert imagebus.list_ids(tmp_path / "a_file") == []


def test_a_slot_can_be_read_while_a_file_of_it_is_open_for_reading(tmp_path):
    slots.bus_save(tmp_path, "open", distinct_frames(2), None)
    with open(tmp_path / "open" / "image.png", "rb"):
        slots.bus_save(tmp_path, "open", distinct_frames(3), None)
        assert slots.bus_load(tmp_path, "open")[0].shape[0] == 3


# --- the send + get race warning -------------------------------------------------------

def _gate(send="", get="", image_linked=False):
    inputs = {"routes": 2, "send_id": send, "get_id": get}
    if image_linked:
        inputs["image"] = ["1", 0]
    return {"class_type": "DataseteImageGate", "inputs": inputs}


def test_slots_sent_and_got_finds_the_race():
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {}}, "2": _gate(send="cp1", image_linked=True),
              "3": _gate(get="cp1"), "4": _gate(send="cp2"), "5": _gate(get="cp3"),
              "6": _gate(send="cp4", get="cp4"), "7": _gate(send="cp5", get="cp5"), "8": _gate(get="cp5")}
    assert image_gate.slots_sent_and_got(prompt) == {"cp1", "cp5"}
    assert image_gate.slots_sent_and_got(None) == set()
    assert image_gate.slots_sent_and_got({"x": "junk", "y": {"class_type": "DataseteImageGate"}}) == set()


def test_one_gate_that_gets_and_sends_the_same_id_is_no_race():
    """The "ignore on the normal path" gate: it loads before it pauses and publishes after the choice."""
    assert image_gate.slots_sent_and_got({"2": _gate(send="cp1", get="cp1")}) == set()


def test_a_getter_with_an_image_wired_is_no_race():
    prompt = {"2": _gate(send="cp1", image_linked=True), "3": _gate(get="cp1", image_linked=True)}
    assert image_gate.slots_sent_and_got(prompt) == set()


def test_linked_ids_are_not_counted():
    prompt = {"2": _gate(send=["9", 0]), "3": _gate(get=["9", 0])}
    assert image_gate.slots_sent_and_got(prompt) == set()


def test_the_race_warning_names_the_id_once_per_prompt(caplog):
    prompt = {"2": _gate(send="cp1", image_linked=True), "3": _gate(get="cp1")}
    with caplog.at_level(logging.WARNING, logger="datasete_gates"):
        assert image_gate.warn_sent_and_got(prompt, "prompt-a", "", "cp1") == ["cp1"]
        assert image_gate.warn_sent_and_got(prompt, "prompt-a", "cp1", "") == []
        assert image_gate.warn_sent_and_got(prompt, "prompt-b", "cp1", "") == ["cp1"]
        assert image_gate.warn_sent_and_got(prompt, "prompt-c", "cp9", "") == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("'cp1'" in w and "both sent" in w for w in warnings)


# --- the node, with ComfyUI faked ------------------------------------------------------

class Recorder:
    def __init__(self):
        self.events = []


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    """gates_compat pointed at tmp folders; a private GateBus for the node."""
    base = tmp_path / "input" / "gate_bus"
    temp = tmp_path / "temp"
    temp.mkdir()
    recorder = Recorder()
    blocker = object()
    monkeypatch.setattr(gates_compat, "gate_bus_base", lambda: str(base))
    monkeypatch.setattr(gates_compat, "temp_directory", lambda: str(temp))
    monkeypatch.setattr(gates_compat, "execution_blocker", lambda: blocker)
    monkeypatch.setattr(gates_compat, "current_prompt_id", lambda: "prompt-1")
    monkeypatch.setattr(gates_compat, "check_interrupt", lambda: None)
    monkeypatch.setattr(gates_compat, "broadcast", lambda event, data: recorder.events.append((event, data)))
    node = image_gate.ImageGate()
    node.bus = pause.GateBus()
    return {"base": base, "node": node, "blocker": blocker, "events": recorder.events, "root": tmp_path}


def _decide(bus: pause.GateBus, route: int, mask=None, seen: list | None = None):
    def decide():
        for _ in range(2000):
            entries = bus.pending()
            if entries:
                if seen is not None:
                    seen.extend(entries)
                bus.resolve(entries[0]["token"], route, mask)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=decide, daemon=True)
    thread.start()
    return thread


def test_no_image_and_an_unknown_or_empty_get_id_blocks_and_says_so(fake_comfy):
    before = snapshot(fake_comfy["root"])
    for get_id in ("", "unknown_slot"):
        out = fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id=get_id)
        result = out["result"]
        assert len(result) == 1 + MAX_ROUTES and all(o is fake_comfy["blocker"] for o in result)
        [status] = out["ui"]["datasete_gate_status"]
        assert "nothing to gate" in status["text"]
    assert [event for event, _data in fake_comfy["events"]] == ["datasete_gate.gate_status"] * 2
    assert snapshot(fake_comfy["root"]) == before


def test_a_corrupt_get_slot_fails_before_any_pause(fake_comfy):
    slots.bus_save(fake_comfy["base"], "bad", distinct_frames(2), None)
    (fake_comfy["base"] / "bad" / "frame_0001.png").unlink()
    with pytest.raises(imagebus.SlotError, match="slot 'bad'"):
        fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="bad")
    assert fake_comfy["events"] == [] and fake_comfy["node"].bus.pending() == []


def test_get_loads_the_slot_pauses_as_bus_and_routes_it(fake_comfy):
    frames = distinct_frames(3)
    slots.bus_save(fake_comfy["base"], "cp1", frames, solid_mask(90))
    seen = []
    thread = _decide(fake_comfy["node"].bus, 2, seen=seen)
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="cp1")
    thread.join()
    assert seen[0]["source"] == "bus" and seen[0]["slot"] == "cp1" and seen[0]["frames"] == 3
    assert out[1] is fake_comfy["blocker"]
    assert_same_pixels(out[2], frames)
    assert torch.all(out[0] == 90 / 255) and out[0].shape == (3, 6, 5)


def test_a_wired_image_wins_over_get_id(fake_comfy):
    slots.bus_save(fake_comfy["base"], "cp1", distinct_frames(3), solid_mask(90))
    wired = solid_frames([5])
    seen = []
    thread = _decide(fake_comfy["node"].bus, 1, seen=seen)
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=wired, get_id="cp1")
    thread.join()
    assert seen[0]["source"] == "input" and seen[0]["slot"] is None
    assert out[1] is wired and torch.all(out[0] == 0)


def test_a_painted_mask_overrides_the_loaded_one_and_is_what_gets_published(fake_comfy):
    slots.bus_save(fake_comfy["base"], "cp1", distinct_frames(2), solid_mask(90))
    painted = np.full((6, 5), 1.0, np.float32)
    painted[0, 0] = 0.0
    thread = _decide(fake_comfy["node"].bus, 1, mask=painted)
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="cp1", send_id="cp2")
    thread.join()
    assert out[0].shape == (2, 6, 5) and float(out[0][1, 0, 0]) == 0.0 and float(out[0][1, 1, 1]) == 1.0
    _, published_mask = slots.bus_load(fake_comfy["base"], "cp2")
    assert torch.equal(published_mask, out[0])
    resolved = [data for event, data in fake_comfy["events"] if event == EVENT_RESOLVED]
    assert resolved[-1]["published"] == "cp2"


def test_publish_on_pass_writes_every_frame_and_the_output_mask(fake_comfy):
    frames = distinct_frames(3, channels=4)
    thread = _decide(fake_comfy["node"].bus, 2)
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=frames, send_id="restart_point",
                                 send_on="any route")
    thread.join()
    image, mask = slots.bus_load(fake_comfy["base"], "restart_point")
    assert_same_pixels(image, frames)
    assert torch.equal(mask, out[0])
    events = [event for event, _ in fake_comfy["events"]]
    assert events == [EVENT_PREVIEW, EVENT_RESOLVED]
    assert fake_comfy["events"][-1][1]["published"] == "restart_point"


def test_nothing_is_published_on_cancel(fake_comfy):
    def cancel():
        for _ in range(2000):
            entries = fake_comfy["node"].bus.pending()
            if entries:
                fake_comfy["node"].bus.cancel(entries[0]["token"])
                return
            time.sleep(0.005)

    monkey_exc = RuntimeError("interrupted")
    gates_compat_interrupted = gates_compat.interrupted_exception
    gates_compat.interrupted_exception = lambda: monkey_exc
    try:
        thread = threading.Thread(target=cancel, daemon=True)
        thread.start()
        with pytest.raises(RuntimeError, match="interrupted"):
            fake_comfy["node"].run(routes=2, unique_id="4", image=solid_frames([1]), send_id="never")
        thread.join()
    finally:
        gates_compat.interrupted_exception = gates_compat_interrupted
    assert imagebus.list_ids(fake_comfy["base"]) == []
    assert fake_comfy["events"][-1][1]["published"] is None


def test_the_node_warns_when_its_prompt_sends_and_gets_the_same_id(fake_comfy, caplog):
    prompt = {"2": _gate(send="loop", image_linked=True), "3": _gate(get="loop")}
    with caplog.at_level(logging.WARNING, logger="datasete_gates"):
        fake_comfy["node"].run(routes=2, unique_id="3", image=None, get_id="loop", prompt=prompt)
    assert any("'loop'" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_the_node_sweeps_leftovers_at_its_first_bus_use(fake_comfy, monkeypatch):
    monkeypatch.setattr(imagebus, "_swept", set())
    base = fake_comfy["base"]
    base.mkdir(parents=True)
    leftover = base / ".staging-new-999999999-00000000-0123456789ab-cp1"
    leftover.mkdir()
    fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="")
    assert leftover.exists()  # a gate that does not use the bus does not touch it
    fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="unknown")
    assert not leftover.exists()


@pytest.mark.parametrize("send_on, route, publishes", [
    ("route_1", 1, True), ("route_1", 2, False), ("route_2", 2, True), ("route_2", 1, False),
    ("any route", 1, True), ("any route", 2, True)])
def test_only_the_send_on_route_publishes(fake_comfy, send_on, route, publishes):
    thread = _decide(fake_comfy["node"].bus, route)
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=solid_frames([7]), send_id="keep",
                                 send_on=send_on)
    thread.join()
    assert out[route] is not fake_comfy["blocker"], "the image still goes down the chosen route"
    assert imagebus.list_ids(fake_comfy["base"]) == (["keep"] if publishes else [])
    assert fake_comfy["events"][-1][1]["published"] == ("keep" if publishes else None)


def test_the_default_send_on_is_the_accept_route(fake_comfy):
    thread = _decide(fake_comfy["node"].bus, 2)
    fake_comfy["node"].run(routes=2, unique_id="4", image=solid_frames([7]), send_id="restart_point")
    thread.join()
    assert imagebus.list_ids(fake_comfy["base"]) == [], "a rejected image must not become the restart point"


def test_a_send_on_route_beyond_routes_fails_naming_it_before_any_pause(fake_comfy):
    with pytest.raises(ValueError, match="send_on: route_3 is beyond routes = 2"):
        fake_comfy["node"].run(routes=2, unique_id="4", image=solid_frames([7]), send_id="x", send_on="route_3")
    assert fake_comfy["events"] == [] and fake_comfy["node"].bus.pending() == []


def test_a_mask_loaded_from_a_slot_is_offered_to_the_painter_and_kept_when_untouched(fake_comfy):
    painted = np.zeros((6, 5), np.uint8)
    painted[2:4, 1:3] = 255
    slots.bus_write(fake_comfy["base"], "cp1", imaging.image_to_uint8(distinct_frames(2)), painted[None])
    bus, shown = fake_comfy["node"].bus, {}

    def look_then_choose():
        for _ in range(2000):
            for entry in bus.pending():
                shown["entry"] = entry
                shown["mask"] = imaging.read_mask_pixels(str(fake_comfy["root"] / "temp" / entry["mask"]["filename"]))
                bus.resolve(entry["token"], 1, None)  # untouched: no mask sent
                return
            time.sleep(0.005)

    thread = threading.Thread(target=look_then_choose, daemon=True)
    thread.start()
    out = fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="cp1")
    thread.join()
    assert shown["entry"]["mask_source"] == "slot cp1" and len(shown["entry"]["images"]) == 2
    assert (shown["mask"] == painted).all()
    assert torch.equal(out[0], torch.from_numpy(painted / 255.0).float().expand(2, 6, 5))
    assert not any((fake_comfy["root"] / "temp").iterdir()), "the mask preview is removed with the others"


def test_an_empty_loaded_mask_is_not_offered(fake_comfy):
    slots.bus_save(fake_comfy["base"], "cp1", distinct_frames(1), None)
    seen = []
    thread = _decide(fake_comfy["node"].bus, 1, seen=seen)
    fake_comfy["node"].run(routes=2, unique_id="4", image=None, get_id="cp1")
    thread.join()
    assert "mask" not in seen[0] and "mask_source" not in seen[0]


def test_empty_slot_ids_are_left_out_of_the_prompt_so_only_the_bad_one_is_blamed():
    prompt = {"prompt": {
        "4": {"class_type": NODE_ID, "inputs": {"routes": 2, "send_id": "", "get_id": "bad id!"}},
        "5": {"class_type": NODE_ID, "inputs": {"routes": 2, "send_id": "ok", "get_id": ["3", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"send_id": ""}},
    }}
    out = image_gate.drop_empty_slot_ids(prompt)
    assert out["prompt"]["4"]["inputs"] == {"routes": 2, "get_id": "bad id!"}
    assert out["prompt"]["5"]["inputs"] == {"routes": 2, "send_id": "ok", "get_id": ["3", 0]}
    assert out["prompt"]["6"]["inputs"] == {"send_id": ""}, "other nodes are not touched"
    for odd in ({}, {"prompt": None}, {"prompt": {"1": "x"}}, []):
        image_gate.drop_empty_slot_ids(odd)  # never raises
