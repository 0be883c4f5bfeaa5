# tests/test_imagebus.py
from bus_testkit import slot_folder

from gates import imagebus as ib


def test_a_slot_is_a_folder_named_by_its_id(tmp_path):
    assert ib.bus_dir(str(tmp_path), "cp1") == tmp_path.resolve() / "cp1"


def test_list_ids_only_populated(tmp_path):
    base = str(tmp_path)
    slot_folder(base, "empty")  # dir but no image.png
    (slot_folder(base, "cp1") / "image.png").write_bytes(b"x")
    (slot_folder(base, "cp2") / "image.png").write_bytes(b"y")
    assert ib.list_ids(base) == ["cp1", "cp2"]


def test_delete(tmp_path):
    base = str(tmp_path)
    (slot_folder(base, "cp1") / "image.png").write_bytes(b"x")
    assert ib.delete_id(base, "cp1") is True
    assert not ib.bus_dir(base, "cp1").exists()
    assert ib.delete_id(base, "cp1") is False
