import torch

from gates import slots
from gates.nodes import image_gate


def _img(r=1.0):
    t = torch.zeros((1, 6, 4, 3), dtype=torch.float32)
    t[0, 0, 0, 0] = r
    return t


def test_bus_save_load_roundtrip(tmp_path):
    base = str(tmp_path)
    slots.bus_save(base, "cp1", _img(1.0), torch.ones((1, 6, 4)))
    img, mask = slots.bus_load(base, "cp1")
    assert img.shape == (1, 6, 4, 3) and float(img[0, 0, 0, 0]) > 0.99
    assert mask.shape == (1, 6, 4) and float(mask.min()) > 0.99


def test_resolve_source_image_wins(tmp_path):
    img = _img()
    out_img, out_mask = slots.resolve_source(str(tmp_path), img, "cp1")
    assert out_img is img and out_mask is None  # given image ignores the bus


def test_resolve_source_loads_from_get(tmp_path):
    base = str(tmp_path)
    slots.bus_save(base, "cp1", _img(1.0), torch.zeros((1, 6, 4)))
    out_img, out_mask = slots.resolve_source(base, None, "cp1")
    assert out_img.shape == (1, 6, 4, 3) and out_mask.shape == (1, 6, 4)


def test_resolve_source_nothing(tmp_path):
    assert slots.resolve_source(str(tmp_path), None, "") == (None, None)
    assert slots.resolve_source(str(tmp_path), None, "missing") == (None, None)


def test_image_gate_optional_inputs():
    it = image_gate.ImageGate.INPUT_TYPES()
    assert "image" in it["optional"]
    assert "send_id" in it["optional"] and "get_id" in it["optional"]
    assert "routes" in it["required"]
