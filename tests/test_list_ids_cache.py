"""imagebus.list_ids under its cache: what it must see at once, and the bounded rest."""

from __future__ import annotations

import os

import pytest
from spying import record_calls

from gates import imagebus


@pytest.fixture
def bus(tmp_path, monkeypatch):
    """A gate_bus whose folder names the cache trusts at once, and whose full re-check is far away."""
    monkeypatch.setattr(imagebus, "_LISTING_SETTLE_FINE_NS", -10**12)
    monkeypatch.setattr(imagebus, "_LISTING_SETTLE_COARSE_NS", -10**12)
    monkeypatch.setattr(imagebus, "_LISTING_RECHECK_NS", 10**15)
    imagebus._listing_cache.clear()
    base = tmp_path / "gate_bus"
    base.mkdir()
    for name in ("a", "b", "c"):
        (base / name).mkdir()
    (base / "a" / "image.png").write_bytes(b"x")
    (base / ".staging-new-1-abc-a").mkdir()
    (base / ".staging-new-1-abc-a" / "image.png").write_bytes(b"x")
    yield base
    imagebus._listing_cache.clear()


def probes(monkeypatch):
    """Count the folders list_ids checks for an image."""
    return record_calls(monkeypatch, imagebus, "_holding_an_image", lambda base, candidates: list(candidates))


def test_a_call_while_nothing_changed_checks_no_folder(bus, monkeypatch):
    assert imagebus.list_ids(bus) == ["a"]
    seen = probes(monkeypatch)
    assert imagebus.list_ids(bus) == ["a"]
    assert seen == []


def test_a_slot_made_by_hand_is_listed_as_soon_as_its_image_exists(bus):
    assert imagebus.list_ids(bus) == ["a"]
    (bus / "d").mkdir()  # the plan's way: mkdir, list in between, then write image.png
    assert imagebus.list_ids(bus) == ["a"]
    (bus / "d" / "image.png").write_bytes(b"x")
    assert imagebus.list_ids(bus) == ["a", "d"]


def test_new_removed_renamed_and_linked_folders_show_at_once(bus):
    assert imagebus.list_ids(bus) == ["a"]
    (bus / "d").mkdir()
    (bus / "d" / "image.png").write_bytes(b"x")
    assert imagebus.list_ids(bus) == ["a", "d"]
    os.rename(bus / "a", bus / ".staging-rm-1-abc-a")  # what delete_id does
    assert imagebus.list_ids(bus) == ["d"]
    os.rename(bus / ".staging-rm-1-abc-a", bus / "e")
    assert imagebus.list_ids(bus) == ["d", "e"]
    os.symlink(bus / "d", bus / "f")  # a linked folder is never a slot
    assert imagebus.list_ids(bus) == ["d", "e"]


def test_an_image_added_to_or_removed_from_an_old_folder_shows_at_the_next_recheck(bus, monkeypatch):
    assert imagebus.list_ids(bus) == ["a"]
    (bus / "b" / "image.png").write_bytes(b"x")
    (bus / "a" / "image.png").unlink()
    monkeypatch.setattr(imagebus, "_LISTING_RECHECK_NS", 0)
    assert imagebus.list_ids(bus) == ["b"]


def test_a_full_recheck_still_refuses_linked_images_and_folders_named_image_png(bus, monkeypatch):
    monkeypatch.setattr(imagebus, "_LISTING_RECHECK_NS", 0)
    (bus / "b" / "image.png").symlink_to(bus / "a" / "image.png")
    (bus / "c" / "image.png").mkdir()
    assert imagebus.list_ids(bus) == ["a"]


def test_names_are_not_trusted_while_the_folder_changed_within_the_timestamp_step(tmp_path, monkeypatch):
    imagebus._listing_cache.clear()
    base = tmp_path / "gate_bus"
    base.mkdir()
    (base / "a").mkdir()
    (base / "a" / "image.png").write_bytes(b"x")
    assert imagebus.list_ids(base) == ["a"]
    assert imagebus._listing_cache[str(base)].stamp is None  # an equal mtime could hide a change
    (base / "b").mkdir()
    (base / "b" / "image.png").write_bytes(b"x")
    assert imagebus.list_ids(base) == ["a", "b"]
    assert imagebus.list_ids(tmp_path / "missing") == []
    (tmp_path / "file").write_bytes(b"")
    assert imagebus.list_ids(tmp_path / "file") == []
    imagebus._listing_cache.clear()
