# tests/test_imagebus.py
from gates import imagebus as ib


def test_paths(tmp_path):
    base = str(tmp_path)
    assert ib.image_path(base, "cp1").name == "image.png"
    assert ib.mask_path(base, "cp1").name == "mask.png"
    assert ib.bus_dir(base, "cp1").name == "cp1"


def test_has_and_ensure(tmp_path):
    base = str(tmp_path)
    assert ib.has(base, "cp1") is False
    ib.ensure_dir(base, "cp1")
    ib.image_path(base, "cp1").write_bytes(b"x")
    assert ib.has(base, "cp1") is True


def test_list_ids_only_populated(tmp_path):
    base = str(tmp_path)
    ib.ensure_dir(base, "empty")  # dir but no image.png
    ib.ensure_dir(base, "cp1"); ib.image_path(base, "cp1").write_bytes(b"x")  # noqa: E702
    ib.ensure_dir(base, "cp2"); ib.image_path(base, "cp2").write_bytes(b"y")  # noqa: E702
    assert ib.list_ids(base) == ["cp1", "cp2"]


def test_delete(tmp_path):
    base = str(tmp_path)
    ib.ensure_dir(base, "cp1"); ib.image_path(base, "cp1").write_bytes(b"x")  # noqa: E702
    ib.delete_id(base, "cp1")
    assert not ib.bus_dir(base, "cp1").exists()
