"""Slot ids: hostile ones are refused everywhere an id enters, and nothing is read or written."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from bus_testkit import HOSTILE_IDS, hostile_ids, save_image, snapshot, solid_frames, solid_mask

from gates import bus, imagebus, server, slots
from gates.nodes import image_gate

VALID_IDS = ["cp1", "a", "_", "0", "restart_point", "A.b-c_d", "x" * 64, "v1.2", "a..b", "_hidden", "CONSOLE",
             "COM10", "con_1", "nul_", "9lives"]


@pytest.fixture
def area(tmp_path):
    """A bus base inside an input folder, with a slot already there and an `outside` folder beside it."""
    base = tmp_path / "input" / "gate_bus"
    slots.bus_save(base, "existing", solid_frames([10]), solid_mask(20))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("untouched")
    return base


@pytest.mark.parametrize("bus_id", VALID_IDS)
def test_valid_ids_are_accepted_and_round_trip(tmp_path, bus_id):
    assert imagebus.validate_id(bus_id) == bus_id
    slots.bus_save(tmp_path, bus_id, solid_frames([77]), solid_mask(99))
    image, mask = slots.bus_load(tmp_path, bus_id)
    assert round(float(image[0, 0, 0, 0]) * 255) == 77 and round(float(mask[0, 0, 0]) * 255) == 99
    assert bus_id in imagebus.list_ids(tmp_path)


@pytest.mark.parametrize("bus_id", HOSTILE_IDS + [""])
def test_validate_id_refuses_and_names_the_id(tmp_path, bus_id):
    bus_id = bus_id.replace("{outside}", str(tmp_path / "outside"))
    with pytest.raises(imagebus.SlotIdError) as caught:
        imagebus.validate_id(bus_id)
    assert repr(bus_id) in str(caught.value)
    assert imagebus.is_valid_id(bus_id) is False


@pytest.mark.parametrize("bad", [None, 5, b"cp1", ["cp1"], 1.5])
def test_validate_id_refuses_non_strings(bad):
    with pytest.raises(imagebus.SlotIdError, match="string"):
        imagebus.validate_id(bad)


def test_every_entry_point_refuses_every_hostile_id_and_touches_nothing(tmp_path, area):
    before = snapshot(tmp_path)
    image, mask = solid_frames([1]), solid_mask(2)
    calls = {
        "bus_dir": lambda i: imagebus.bus_dir(area, i),
        "delete_id": lambda i: imagebus.delete_id(area, i),
        "publish": lambda i: imagebus.publish(area, i, lambda folder: (folder / "image.png").write_bytes(b"x")),
        "read_slot": lambda i: imagebus.read_slot(area, i, lambda reader: reader.names()),
        "bus_save": lambda i: slots.bus_save(area, i, image, mask),
        "bus_write": lambda i: slots.bus_write(area, i, slots.imaging.image_to_uint8(image), None),
        "bus_load": lambda i: slots.bus_load(area, i),
        "bus_read": lambda i: slots.bus_read(area, i),
        "resolve_source": lambda i: slots.resolve_source(area, None, i),
        "validate_slot_ids send": lambda i: image_gate.validate_slot_ids(i, ""),
        "validate_slot_ids get": lambda i: image_gate.validate_slot_ids("", i),
    }
    for bus_id in hostile_ids(tmp_path):
        for name, call in calls.items():
            with pytest.raises(imagebus.SlotIdError) as caught:
                call(bus_id)
            assert repr(bus_id) in str(caught.value), (name, bus_id)
    assert snapshot(tmp_path) == before


def test_validate_slot_ids_says_which_input_and_skips_unused():
    image_gate.validate_slot_ids("", "")
    image_gate.validate_slot_ids(None, None)
    image_gate.validate_slot_ids("cp1", "cp2")
    with pytest.raises(imagebus.SlotIdError, match=r"send_id: invalid slot id '\.\.'"):
        image_gate.validate_slot_ids("..", "cp1")
    with pytest.raises(imagebus.SlotIdError, match=r"get_id: invalid slot id 'a/b'"):
        image_gate.validate_slot_ids("cp1", "a/b")


def test_validate_inputs_refuses_at_queue_time_naming_the_id():
    assert image_gate.ImageGate.VALIDATE_INPUTS(send_id="cp1", get_id="") is True
    assert image_gate.ImageGate.VALIDATE_INPUTS(send_id=None, get_id=None) is True  # linked: checked in run()
    answer = image_gate.ImageGate.VALIDATE_INPUTS(send_id="", get_id="../etc")
    assert isinstance(answer, str) and "get_id" in answer and "'../etc'" in answer


@pytest.mark.parametrize("field", ["send_id", "get_id"])
def test_run_refuses_before_finding_the_bus(tmp_path, monkeypatch, field):
    """The gate validates before it asks ComfyUI anything, so no folder is looked at or made."""
    from gates import gates_compat

    asked = []
    monkeypatch.setattr(gates_compat, "gate_bus_base", lambda: asked.append("base") or str(tmp_path))
    monkeypatch.setattr(gates_compat, "execution_blocker", lambda: asked.append("blocker") or object())
    before = snapshot(tmp_path)
    for bus_id in hostile_ids(tmp_path):
        with pytest.raises(imagebus.SlotIdError) as caught:
            image_gate.ImageGate().run(routes=2, unique_id="7", image=None, **{field: bus_id})
        assert field in str(caught.value) and repr(bus_id) in str(caught.value)
    assert asked == []
    assert snapshot(tmp_path) == before


def test_list_ignores_folders_whose_names_are_not_valid_ids(tmp_path):
    slots.bus_save(tmp_path, "good", solid_frames([1]), None)
    for name in ["CON", "a b", "café", "-dash", "trailing.", "x" * 65]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "image.png").write_bytes((tmp_path / "good" / "image.png").read_bytes())
    assert imagebus.list_ids(tmp_path) == ["good"]


def test_list_route_lists_only_valid_slots(tmp_path):
    slots.bus_save(tmp_path, "good", solid_frames([1]), None)
    (tmp_path / "bad name").mkdir()
    (tmp_path / "bad name" / "image.png").write_bytes(b"x")
    handler = server.make_handlers(bus_base=lambda: str(tmp_path))[("GET", "/datasete_gate/bus/list")]
    response = asyncio.run(handler(None))
    assert response.status == 200
    assert json.loads(response.body) == {"ids": ["good"]}


@pytest.mark.parametrize("command", [["show"], ["rm"], ["export", "{out}"], ["put", "{image}"]])
def test_cli_refuses_every_hostile_id_with_exit_3(tmp_path, area, capsys, command):
    image_file = tmp_path / "outside" / "in.png"
    save_image(image_file, solid_frames([5]))
    before = snapshot(tmp_path)
    for bus_id in hostile_ids(tmp_path):
        args = [part.replace("{out}", str(tmp_path / "export")).replace("{image}", str(image_file))
                for part in command[1:]]
        code = bus.main(["--input-dir", str(area.parent), command[0], "--", bus_id, *args])
        err = capsys.readouterr().err
        assert code == bus.EXIT_BAD_ID, (bus_id, err)
        assert repr(bus_id) in err
    assert snapshot(tmp_path) == before


def test_cli_refuses_a_bad_id_even_without_an_input_folder(tmp_path, capsys):
    """The id is checked first, so a bad id is reported as such wherever the command runs."""
    code = bus.main(["--input-dir", str(tmp_path / "missing"), "show", "--", "../x"])
    assert code == bus.EXIT_BAD_ID and "'../x'" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_cli_hostile_ids_reach_nothing_through_put_either(tmp_path, area, capsys):
    """put with an absolute path as id must not write the image next to that path."""
    image_file = tmp_path / "outside" / "in.png"
    save_image(image_file, solid_frames([5]))
    target = tmp_path / "outside" / "planted"
    assert bus.main(["--input-dir", str(area.parent), "put", "--", str(target), str(image_file)]) == bus.EXIT_BAD_ID
    assert not target.exists()
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["in.png", "keep.txt"]


def test_bus_load_of_a_valid_but_absent_id_is_not_found_and_writes_nothing(tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(imagebus.SlotNotFound, match="'nothing_here'"):
        slots.bus_load(tmp_path / "gate_bus", "nothing_here")
    assert slots.resolve_source(tmp_path / "gate_bus", None, "nothing_here") == (None, None)
    assert snapshot(tmp_path) == before


def test_a_mask_of_the_wrong_size_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(imagebus.SlotError, match="'cp1'.*mask is 4x4, image is 5x6"):
        slots.bus_save(tmp_path, "cp1", solid_frames([1]), torch.zeros((1, 4, 4)))
    assert list(tmp_path.iterdir()) == []
