"""Slots on an object store (docs/object_storage.md): what a publish killed before its commit leaves,
what the sweep removes, how a commit that loses a race ends. Against moto's server on 127.0.0.1."""

from __future__ import annotations

import numpy as np

from gates import imagebus, slots
from gates.constants import BUS_DIR_NAME
from gates.storage import objects, s3slots


def keys(store, prefix) -> list[str]:
    return [entry["key"] for entry in store.list(prefix)[0]]


# --- slots: crashes and sweeps -------------------------------------------------------------------------

def test_a_publish_that_died_before_its_commit_is_invisible_and_swept(s3_store, monkeypatch):
    base = s3_store.child(BUS_DIR_NAME)
    store = objects.store_for(base)
    slots.bus_write(base, "cp", np.full((1, 4, 4, 3), 7, np.uint8), None)
    # A publisher killed after uploading its files, before its pointer: the files are unreachable.
    dead = s3slots.new_version()
    store.put(s3slots.version_prefix(base, "cp", dead) + "image.png", b"half")
    store.put(s3slots.version_prefix(base, "fresh", dead) + "image.png", b"half")
    assert int(slots.bus_read(base, "cp").frames[0, 0, 0, 0]) == 7
    assert imagebus.list_ids(base) == ["cp"]
    assert s3slots.sweep(base) == 0  # young: may be another server's publish in flight
    monkeypatch.setattr(s3slots, "STALE_VERSION_SECONDS", 0)
    assert s3slots.sweep(base) == 2
    left = keys(store, s3slots.version_prefix(base, "cp"))
    assert len(left) == 2 and all(dead not in key for key in left)  # the committed version stays
    assert int(slots.bus_read(base, "cp").frames[0, 0, 0, 0]) == 7


def test_a_superseded_version_is_deleted_by_the_publish_that_replaced_it(s3_store):
    base = s3_store.child(BUS_DIR_NAME)
    store = objects.store_for(base)
    for value in (1, 2, 3):
        slots.bus_write(base, "cp", np.full((1, 4, 4, 3), value, np.uint8), np.zeros((1, 4, 4), np.uint8))
    versions = {key.split("/")[-2] for key in keys(store, s3slots.version_prefix(base, "cp"))}
    assert len(versions) == 1


def test_a_commit_that_loses_the_race_commits_on_top(s3_store, monkeypatch):
    """Another server's pointer goes in between our read and our conditional write: ours retries."""
    base = s3_store.child(BUS_DIR_NAME)
    slots.bus_write(base, "cp", np.full((1, 4, 4, 3), 1, np.uint8), None)
    real = s3slots._read_pointer
    calls = []

    def racing(store, base_, bus_id, lenient=False):
        pointer, etag = real(store, base_, bus_id, lenient)
        if lenient and not calls:  # the commit's read: the other server publishes right after it
            calls.append(1)
            monkeypatch.setattr(s3slots, "_read_pointer", real)
            slots.bus_write(base, "cp", np.full((1, 4, 4, 3), 2, np.uint8), None)  # the other server
        return pointer, etag

    monkeypatch.setattr(s3slots, "_read_pointer", racing)
    slots.bus_write(base, "cp", np.full((1, 4, 4, 3), 3, np.uint8), None)
    assert calls and int(slots.bus_read(base, "cp").frames[0, 0, 0, 0]) == 3
    store = objects.store_for(base)
    assert len({key.split("/")[-2] for key in keys(store, s3slots.version_prefix(base, "cp"))}) == 1


def test_a_bad_pointer_fails_a_read_by_name_and_is_replaced_by_the_next_publish(s3_store):
    """A pointer written by hand or by something else (not JSON, or JSON that is no slot pointer): a read
    names the slot and the pointer; a publish or a delete replaces it, never trips over it."""
    base = s3_store.child(BUS_DIR_NAME)
    store = objects.store_for(base)
    for bad in (b"\xff not json", b"[1, 2]", b'{"files": {"image.png": 4}}', b'{"format": 1, "files": {}}'):
        store.put(s3slots.head_key(base, "cp"), bad)
        try:
            slots.bus_read(base, "cp")
        except imagebus.SlotError as exc:
            assert "'cp'" in str(exc) and s3slots.head_key(base, "cp") in str(exc)
        else:
            raise AssertionError(f"a read of the bad pointer {bad!r} did not fail")
        slots.bus_write(base, "cp", np.full((1, 4, 4, 3), 5, np.uint8), None)
        assert int(slots.bus_read(base, "cp").frames[0, 0, 0, 0]) == 5
    store.put(s3slots.head_key(base, "cp"), b'{"files": {"image.png": 4}}')
    assert s3slots.delete_id(base, "cp") is True
    assert imagebus.list_ids(base) == []
