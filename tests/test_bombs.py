"""Bounded decoding: no reader, on any backend, decodes more pixels than Pillow's decompression-bomb limit
allows. A small file that declares a huge canvas is refused from its header, before anything is inflated,
with an error that names the file (or slot) and the declared size."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from bus_testkit import distinct_frames, png_bomb
from PIL import Image
from test_imaging_backends import BACKENDS, force

from gates import imagebus, imaging, slots

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECLARED = "declares 15000x15000 = 225,000,000 pixels, over the limit of 178,956,970"
# What a refusal may allocate: the file itself and a few small objects, nowhere near the 675 MB it declares.
PEAK_LIMIT = 16 * 2**20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(15000, 15000, 3)


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    force(monkeypatch, request.param)
    return request.param


def refused(call, match: str) -> str:
    """Run `call`, which must raise ImageTooLarge (or a SlotError) matching `match` with a small peak allocation."""
    tracemalloc.start()
    try:
        with pytest.raises((imaging.ImageTooLarge, imagebus.SlotError), match=match) as caught:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"the refusal allocated {peak / 2**20:.0f} MiB"
    return str(caught.value)


def test_the_bomb_is_a_small_valid_png_that_declares_675_mb(bomb):
    assert len(bomb) < 700_000
    assert imaging.png_size(bomb) == (15000, 15000)
    small = png_bomb(300, 200, 3)
    assert np.array_equal(np.array(Image.open(io.BytesIO(small))), np.zeros((200, 300, 3), np.uint8))


READERS = {
    "image from bytes": lambda data, path: imaging.read_image_pixels(data),
    "image from a path": lambda data, path: imaging.read_image_pixels(path),
    "image from a file object": lambda data, path: imaging.read_image_pixels(io.BytesIO(data)),
    "mask from bytes": lambda data, path: imaging.read_mask_pixels(data),
    "mask from a path": lambda data, path: imaging.read_mask_pixels(str(path)),
    "header only": lambda data, path: imaging.declared_size(data),
}


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_on_every_backend_refuses_a_bomb_before_inflating(backend, reader, channels, tmp_path):
    data = png_bomb(15000, 15000, channels)
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    message = refused(lambda: READERS[reader](data, path), DECLARED)
    if "path" in reader:
        assert str(path) in message


def test_the_fast_reader_itself_refuses_before_allocating(monkeypatch, bomb):
    force(monkeypatch, "libdeflate")
    refused(lambda: imaging._fast_png_decode(bomb, "bomb.png"), "bomb.png " + DECLARED)


def test_pillow_refuses_other_formats_by_its_own_check(backend, tmp_path):
    """A BMP whose header declares 15000x15000: Pillow's open refuses it, and the error says so."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="BMP")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<ii", data, 18, 15000, 15000)
    for call in (lambda: imaging.read_image_pixels(bytes(data)), lambda: imaging.declared_size(bytes(data))):
        refused(call, "decompression-bomb limit")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, above 1x its limit
@pytest.mark.parametrize("maximum, side, allowed", [(100, (14, 14), True), (100, (15, 14), False),
                                                    (None, (300, 200), True)])
def test_the_limit_is_pillows_knob_on_every_backend(backend, monkeypatch, maximum, side, allowed):
    """Twice Image.MAX_IMAGE_PIXELS, read at each call: 196 pixels pass a limit of 200, 210 do not; None: no limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", maximum)
    width, height = side
    pixels = np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)
    data = imaging.encode_png(pixels)
    if allowed:
        assert np.array_equal(imaging.read_image_pixels(data), pixels)
        assert imaging.read_mask_pixels(data).shape == (height, width)
    else:
        refused(lambda: imaging.read_image_pixels(data), f"declares {width}x{height} = 210 pixels, over the "
                                                         "limit of 200")
        refused(lambda: imaging.read_mask_pixels(data), "over the limit of 200")


# --- the mask a person paints, over HTTP ---------------------------------------------------------

@pytest.mark.parametrize("size", [(64, 48), (15000, 15000)])
def test_a_mask_payload_bomb_is_refused_from_its_header(backend, bomb, size):
    payload = "data:image/png;base64," + base64.b64encode(bomb).decode()
    refused(lambda: imaging.decode_mask_payload(payload, *size), "mask " + DECLARED)


# --- slots ---------------------------------------------------------------------------------------

def _slot(tmp_path, bus_id="bombed", frames=3):
    slots.bus_save(tmp_path, bus_id, distinct_frames(frames), None)
    return tmp_path / bus_id


def _manifest(folder, **changes):
    manifest = json.loads((folder / "slot.json").read_text())
    manifest.update(changes)
    (folder / "slot.json").write_text(json.dumps(manifest))


def test_a_bomb_planted_as_a_slots_image_fails_naming_the_slot_and_the_size(backend, tmp_path, bomb):
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "image.png").write_bytes(bomb)  # the plan's layout: no slot.json, one frame
    for call in (slots.bus_read, slots.bus_load, lambda base, i: slots.resolve_source(base, None, i)):
        message = refused(lambda call=call: call(tmp_path, "planted"), "slot 'planted': image.png " + DECLARED)
        assert "is not a readable image" not in message


@pytest.mark.parametrize("name", ["image.png", "frame_0002.png"])
def test_a_bomb_among_a_slots_frames_is_refused_before_decoding(backend, tmp_path, bomb, name):
    folder = _slot(tmp_path)
    (folder / name).write_bytes(bomb)
    refused(lambda: slots.bus_read(tmp_path, "bombed"), f"slot 'bombed': {name} {DECLARED}")


def test_frames_under_the_limit_each_cannot_add_up_past_it(backend, tmp_path):
    """Each file alone may be decoded (13000x13000 < the limit), but every file must have the slot's size:
    one that does not is refused from its header, so a slot never decodes more than frames x its size."""
    big = png_bomb(13000, 13000, 3)
    folder = _slot(tmp_path, "one")
    (folder / "frame_0001.png").write_bytes(big)
    refused(lambda: slots.bus_read(tmp_path, "one"), "frame_0001.png is 13000x13000, image.png is 5x6")
    folder = _slot(tmp_path, "all")
    for name in ("image.png", "frame_0001.png", "frame_0002.png"):
        (folder / name).write_bytes(big)
    refused(lambda: slots.bus_read(tmp_path, "all"), "slot.json says 5x6, the frames are 13000x13000")
    folder = tmp_path / "plan"
    folder.mkdir()  # the plan's layout, no slot.json: image.png's own size is the slot's
    (folder / "image.png").write_bytes(big)
    (folder / "mask.png").write_bytes(png_bomb(50, 50, 1))
    refused(lambda: slots.bus_read(tmp_path, "plan"), "mask.png is 50x50, image.png is 13000x13000")


@pytest.mark.parametrize("changes, match", [
    ({"width": 15000, "height": 15000, "frames": 1}, "slot.json is bad: " + DECLARED),
    ({"width": 2000, "height": 2000, "frames": 100},
     "slot.json is bad: declares 2000x2000 x 100 frames = 400,000,000 pixels"),
])
def test_a_manifest_that_declares_too_many_pixels_is_refused_before_any_frame(tmp_path, changes, match):
    folder = _slot(tmp_path)
    _manifest(folder, **changes)
    refused(lambda: slots.bus_read(tmp_path, "bombed"), "slot 'bombed': " + match)


def test_a_batch_that_could_not_be_read_back_is_not_published(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 45)  # a limit of 90 pixels: three 5x6 frames pass, four do not
    slots.bus_save(tmp_path, "fits", distinct_frames(3), None)
    assert slots.bus_read(tmp_path, "fits").frames.shape == (3, 6, 5, 3)
    with pytest.raises(imagebus.SlotError, match=r"slot 'big': cannot publish: the batch declares 5x6 x 4 frames "
                                                 r"= 120 pixels, over the limit of 90"):
        slots.bus_save(tmp_path, "big", distinct_frames(4), None)
    assert sorted(os.listdir(tmp_path)) == ["fits"]


def test_the_command_line_refuses_a_bomb_and_a_batch_too_large_together(tmp_path, bomb):
    (tmp_path / "bomb.png").write_bytes(bomb)
    base = tmp_path / "input"
    base.mkdir()

    def put(*files):
        return subprocess.run([sys.executable, "-m", "gates.bus", "--input-dir", str(base), "put", "cp1", *files],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    done = put(str(tmp_path / "bomb.png"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "bomb.png" in done.stderr and "declares 15000x15000" in done.stderr
    big = png_bomb(10000, 10000, 1)
    for index in range(2):
        (tmp_path / f"big{index}.png").write_bytes(big)
    done = put(str(tmp_path / "big0.png"), str(tmp_path / "big1.png"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "the batch of 2 images would be 10000x10000 x 2 frames = 200,000,000 pixels" in done.stderr
    assert not (base / "gate_bus" / "cp1").exists()
