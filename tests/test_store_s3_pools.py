"""Pools on an object store (docs/object_storage.md): an add or a move killed half-way, two servers
deciding one item, the sweeps, and what a page of a big pool costs in requests. Against moto's server
on 127.0.0.1."""

from __future__ import annotations

import json
import time

import numpy as np

from gates import pools
from gates.constants import POOL_DIR_NAME
from gates.storage import objects, s3pools


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def keys(store, prefix) -> list[str]:
    return [entry["key"] for entry in store.list(prefix)[0]]


# --- pools: crashes, sweeps, costs ------------------------------------------------------------------

def test_an_add_that_died_before_its_marker_is_invisible_and_swept(s3_store, monkeypatch):
    base = s3_store.child(POOL_DIR_NAME)
    store = objects.store_for(base)
    pools.add_frames(base, "p", [frame(1)])
    # Killed after its objects and claim, before the marker: reserved 000002, uploaded, never committed.
    first = s3pools.reserve_numbers(base, "p", 1)
    store.put(s3pools._key(base, "p", "items", f"{pools.item_name(first)}.png"), b"x")
    store.put(s3pools._key(base, "p", "pixels", pools.pixel_hash(frame(2))), pools.item_name(first).encode())
    page = pools.pending_page(base, "p", 10)
    assert [item.name for item in page.items] == ["000001"] and page.counts["pending"] == 1
    assert s3pools.sweep(base, "p") == 0
    monkeypatch.setattr(s3pools, "STALE_SECONDS", -1)
    assert s3pools.sweep(base, "p") == 2
    # Its pixels were never in the pool: they may be added, under a fresh name.
    assert pools.add_frames(base, "p", [frame(2)]).added == ["000003"]


def test_a_move_that_died_half_way_is_seen_done_then_finished(s3_store, monkeypatch):
    base = s3_store.child(POOL_DIR_NAME)
    store = objects.store_for(base)
    pools.add_frames(base, "p", [frame(1), frame(2)])
    old = s3pools.marker_key(base, "p", "pending", "000001", False)
    record = s3pools._key(base, "p", "moves", f"{time.time_ns():020d}-dead")
    store.put(record, json.dumps({"moves": [["000001", old, "kept", False]]}).encode())
    store.put(s3pools.marker_key(base, "p", "kept", "000001", False), b"")
    # The writer died here: its item is in two folders, the record says where it was going.
    page = pools.pending_page(base, "p", 10)
    assert [item.name for item in page.items] == ["000002"]
    assert pools.read_items(base, "p", ["000001"])[0][0].state == "kept"
    monkeypatch.setattr(s3pools, "ROLL_FORWARD_SECONDS", -1)
    assert pools.pool_counts(base, "p") == {"pending": 1, "kept": 1, "rejected": 0}
    assert keys(store, s3pools._key(base, "p", "moves/")) == []
    assert store.head(old) is None


def test_two_servers_deciding_one_item_leave_it_in_one_state(s3_store, monkeypatch):
    base = s3_store.child(POOL_DIR_NAME)
    pools.add_frames(base, "p", [frame(1)])
    real = s3pools._locate
    # Both servers located the item in pending before either moved it.
    located = real(objects.store_for(base), base, "p", ["000001"])
    monkeypatch.setattr(s3pools, "_locate", lambda *a: dict(located))
    pools.decide(base, "p", ["000001"], [])
    pools.decide(base, "p", [], ["000001"])
    monkeypatch.setattr(s3pools, "_locate", real)
    monkeypatch.setattr(s3pools, "ROLL_FORWARD_SECONDS", -1)
    assert pools.pool_counts(base, "p") == {"pending": 0, "kept": 1, "rejected": 0}
    assert len(keys(objects.store_for(base), s3pools._key(base, "p", "state/"))) == 1


def test_a_page_of_a_big_pool_lists_only_what_it_shows(s3_store):
    """1,100 other markers: a page of 8 costs two listing requests, not a listing of the whole pool."""
    base = s3_store.child(POOL_DIR_NAME)
    store = objects.store_for(base)
    pools.add_frames(base, "p", [frame(k) for k in range(8)])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as workers:
        list(workers.map(lambda n: store.put(s3pools.marker_key(base, "p", "kept", pools.item_name(n), False), b""),
                         range(100, 1200)))
    pools.pool_counts(base, "p")  # the count listing, cached for a while
    before = objects.request_counts()
    page = pools.pending_page(base, "p", 8)
    used = objects.request_counts() - before
    assert len(page.items) == 8 and page.counts["kept"] == 1100
    assert used["LIST"] == 2, used  # moves/ and the page's pending markers
    assert used["GET"] == 8, used   # the PNGs (no captions)


def test_a_grid_decision_finds_its_items_with_one_listing(s3_store):
    base = s3_store.child(POOL_DIR_NAME)
    pools.add_frames(base, "p", [frame(k) for k in range(20)])
    page = pools.pending_page(base, "p", 16)
    before = objects.request_counts()
    moved = pools.decide(base, "p", [i.name for i in page.items[:8]], [i.name for i in page.items[8:]])
    used = objects.request_counts() - before
    assert moved.counts == {"pending": 4, "kept": 8, "rejected": 8} and not moved.missing
    assert used["LIST"] == 2, used  # moves/ and one run of pending markers, not one listing per item
    assert used["PUT"] == 17 and used["DELETE"] == 2, used
