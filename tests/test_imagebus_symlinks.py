"""Links: a slot, or a file in it, that is a symbolic link is refused; the gate_bus folder itself may be one."""

from __future__ import annotations

import os

import pytest
from bus_testkit import snapshot, solid_frames, solid_mask

from gates import bus, imagebus, slots

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


@pytest.fixture
def outside(tmp_path):
    """A real slot outside the bus, which a link inside the bus points at."""
    folder = tmp_path / "outside_store"
    slots.bus_save(folder, "victim", solid_frames([200]), solid_mask(100))
    return folder / "victim"


@pytest.fixture
def base(tmp_path):
    base = tmp_path / "gate_bus"
    slots.bus_save(base, "real", solid_frames([1]), solid_mask(2))
    return base


def test_a_linked_slot_is_refused_for_read_write_and_delete(tmp_path, base, outside):
    (base / "evil").symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path)
    for call in (lambda: slots.bus_load(base, "evil"),
                 lambda: slots.resolve_source(base, None, "evil"),
                 lambda: slots.bus_save(base, "evil", solid_frames([9]), solid_mask(9)),
                 lambda: imagebus.delete_id(base, "evil")):
        with pytest.raises(imagebus.SlotIdError, match="'evil' is a symbolic link"):
            call()
    assert snapshot(tmp_path) == before
    assert imagebus.list_ids(base) == ["real"]


def test_a_linked_slot_is_refused_by_the_cli(tmp_path, base, outside, capsys):
    (base / "evil").symlink_to(outside, target_is_directory=True)
    before = snapshot(tmp_path)
    for command in (["show", "evil"], ["rm", "evil"], ["export", "evil", str(tmp_path / "out")]):
        assert bus.main(["--input-dir", str(tmp_path), *command]) == bus.EXIT_BAD_ID
        assert "'evil' is a symbolic link" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_a_link_to_a_file_outside_is_never_read(tmp_path, base, outside):
    secret = outside / "image.png"
    for name in ("image.png", "mask.png", "slot.json", "frame_0001.png"):
        slots.bus_save(base, "trap", solid_frames([1, 2]), solid_mask(3))
        os.remove(base / "trap" / name)
        os.symlink(secret, base / "trap" / name)
        with pytest.raises(imagebus.SlotError, match=f"'trap': {name} is a symbolic link"):
            slots.bus_load(base, "trap")
        with pytest.raises(imagebus.SlotError, match="'trap'"):
            slots.resolve_source(base, None, "trap")


def test_a_slot_with_a_linked_image_is_not_listed(base, outside):
    (base / "trap").mkdir()
    os.symlink(outside / "image.png", base / "trap" / "image.png")
    assert imagebus.list_ids(base) == ["real"]


def test_publishing_over_a_slot_with_links_replaces_them_without_touching_their_targets(tmp_path, base, outside):
    (base / "trap").mkdir()
    os.symlink(outside / "image.png", base / "trap" / "image.png")
    os.symlink(outside, base / "trap" / "sub")
    outside_before = snapshot(outside)
    slots.bus_save(base, "trap", solid_frames([42]), solid_mask(43))
    assert snapshot(outside) == outside_before
    image, mask = slots.bus_load(base, "trap")
    assert round(float(image.max()) * 255) == 42 and round(float(mask.max()) * 255) == 43
    assert not any(p.is_symlink() for p in (base / "trap").iterdir())


def test_deleting_a_slot_with_links_removes_the_links_not_their_targets(base, outside):
    (base / "trap").mkdir()
    os.symlink(outside, base / "trap" / "sub")
    outside_before = snapshot(outside)
    assert imagebus.delete_id(base, "trap") is True
    assert snapshot(outside) == outside_before
    assert not (base / "trap").exists()


def test_a_linked_gate_bus_folder_is_allowed(tmp_path):
    """An input folder on another disk, linked in, is a normal setup: the bus follows that one link."""
    real = tmp_path / "big_disk" / "gate_bus"
    real.mkdir(parents=True)
    linked = tmp_path / "input" / "gate_bus"
    linked.parent.mkdir()
    linked.symlink_to(real, target_is_directory=True)
    slots.bus_save(linked, "cp1", solid_frames([60, 61]), solid_mask(62))
    assert (real / "cp1" / "image.png").is_file()
    assert imagebus.list_ids(linked) == ["cp1"]
    image, mask = slots.bus_load(linked, "cp1")
    assert image.shape[0] == 2 and round(float(mask.max()) * 255) == 62
    assert imagebus.delete_id(linked, "cp1") is True
    assert linked.is_symlink() and list(real.iterdir()) == []


def test_a_linked_slot_swapped_in_after_the_check_is_not_followed_by_the_reader(tmp_path, base, outside):
    """The reader opens the slot folder with O_NOFOLLOW, so a link planted between check and open fails."""
    if not imagebus._DIR_FD_READS:
        pytest.skip("folder handles are not used on this system")
    checked = imagebus.bus_dir(base, "late")
    checked.symlink_to(outside, target_is_directory=True)
    with pytest.raises(imagebus.SlotIdError, match="'late' is a symbolic link"):
        imagebus._read_pinned(checked, "late", lambda reader: reader.names())


def test_a_file_where_a_slot_should_be_is_an_unreadable_slot(base):
    (base / "plain").write_bytes(b"not a folder")
    assert imagebus.list_ids(base) == ["real"]
    with pytest.raises(imagebus.SlotError, match="'plain' is not a folder"):
        slots.bus_load(base, "plain")
