"""One contract for both stores: slots and pools behave the same on the input folder and on S3.

The s3 cases run against moto's standalone server on 127.0.0.1 (tests/s3_testkit.py), through
DATASETE_GATES_STORE as a user sets it. Only the public functions are used, so what is checked here
is what nodes, routes and command lines see.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gates import gates_compat, imagebus, pools, slots
from gates.constants import BUS_DIR_NAME, POOL_DIR_NAME


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path, monkeypatch):
    """(bus base, pool base) as the nodes get them from gates_compat."""
    import sys
    import types

    if request.param == "local":
        monkeypatch.delenv("DATASETE_GATES_STORE", raising=False)
    else:
        request.getfixturevalue("s3_store")
    fake = types.SimpleNamespace(get_input_directory=lambda: str(tmp_path))
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    return gates_compat.gate_bus_base(), gates_compat.gate_pool_base()


def frames_of(value: int, batch: int = 2, height: int = 5, width: int = 7) -> np.ndarray:
    rng = np.random.default_rng(value)
    out = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    out[:, 0, 0, 0] = value  # the version, readable back from every frame
    return out


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)


# --- where things live ------------------------------------------------------------------------------

def test_the_setting_picks_the_store(where, tmp_path):
    bus_base, pool_base = where
    if isinstance(bus_base, str):
        assert bus_base == str(tmp_path / BUS_DIR_NAME) and pool_base == str(tmp_path / POOL_DIR_NAME)
    else:
        assert str(bus_base).endswith(f"/studio/gates/{BUS_DIR_NAME}/")
        assert str(pool_base).endswith(f"/studio/gates/{POOL_DIR_NAME}/")


# --- slots ------------------------------------------------------------------------------------------

def test_a_published_slot_reads_back_whole_and_is_listed(where):
    base, _ = where
    frames = frames_of(1, batch=3)
    masks = np.random.default_rng(2).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    manifest = slots.bus_write(base, "cp1", frames, masks)
    contents = slots.bus_read(base, "cp1")
    np.testing.assert_array_equal(contents.frames, frames)
    np.testing.assert_array_equal(contents.masks, masks)
    assert contents.manifest["frames"] == 3 == manifest["frames"]
    assert sorted(contents.files) == ["frame_0001.png", "frame_0002.png", "image.png", "mask.png",
                                      "mask_0001.png", "mask_0002.png", "slot.json"]
    assert imagebus.list_ids(base) == ["cp1"]


def test_a_publish_replaces_the_whole_slot(where):
    base, _ = where
    slots.bus_write(base, "cp1", frames_of(1, batch=3), np.full((1, 5, 7), 9, np.uint8))
    slots.bus_write(base, "cp1", frames_of(2, batch=1), None)
    contents = slots.bus_read(base, "cp1")
    assert contents.frames.shape[0] == 1 and contents.masks is None
    assert sorted(contents.files) == ["image.png", "slot.json"]


def test_missing_deleted_and_bad_ids(where):
    base, _ = where
    with pytest.raises(imagebus.SlotNotFound):
        slots.bus_read(base, "nothing")
    with pytest.raises(imagebus.SlotIdError):
        slots.bus_write(base, "../x", frames_of(1), None)
    slots.bus_write(base, "gone", frames_of(1), None)
    assert imagebus.delete_id(base, "gone") is True
    assert imagebus.delete_id(base, "gone") is False
    with pytest.raises(imagebus.SlotNotFound):
        slots.bus_read(base, "gone")
    assert imagebus.list_ids(base) == []


def test_two_publishers_and_readers_never_see_a_torn_slot(where):
    """Each version's frames and mask carry its number: a reader must always get one number."""
    base, _ = where
    slots.bus_write(base, "race", frames_of(1), np.full((1, 5, 7), 1, np.uint8))
    stop = threading.Event()
    errors: list[str] = []
    seen: set[int] = set()

    def publisher(start):
        for value in range(start, start + 12, 2):
            slots.bus_write(base, "race", frames_of(value), np.full((1, 5, 7), value, np.uint8))

    def reader():
        while not stop.is_set():
            contents = slots.bus_read(base, "race")
            versions = {int(v) for v in contents.frames[:, 0, 0, 0]} | {int(v) for v in contents.masks.ravel()}
            if len(versions) != 1:
                errors.append(f"torn read: {versions}")
            seen.update(versions)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=publisher, args=(start,)) for start in (2, 3)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    stop.set()
    for thread in readers:
        thread.join(120)
    assert not errors
    final = slots.bus_read(base, "race")
    value = int(final.frames[0, 0, 0, 0])
    np.testing.assert_array_equal(final.frames, frames_of(value))
    assert set(final.masks.ravel()) == {value}
    assert len(seen) > 1


# --- pools ------------------------------------------------------------------------------------------

def test_adds_name_items_in_order_with_captions_and_counts(where):
    _, base = where
    result = pools.add_frames(base, "p", [frame(1), frame(2), frame(3)], ["a cat", None, "ünïcödé ✓"])
    assert result.added == ["000001", "000002", "000003"]
    assert result.counts == {"pending": 3, "kept": 0, "rejected": 0}
    page = pools.pending_page(base, "p", 2)
    assert [item.name for item in page.items] == ["000001", "000002"]
    assert [item.caption for item in page.items] == ["a cat", None]
    np.testing.assert_array_equal(page.items[0].pixels, frame(1))
    assert page.pending == 3
    assert pools.list_pools(base) == [{"id": "p", "pending": 3, "kept": 0, "rejected": 0}]
    assert pools.exists(base, "p") and not pools.exists(base, "q")


def test_duplicates_are_skipped_across_adds_and_within_one(where):
    _, base = where
    pools.add_frames(base, "p", [frame(1)])
    result = pools.add_frames(base, "p", [frame(1), frame(2), frame(2)])
    assert result.added == ["000002"] and result.duplicates == [0, 2]
    again = pools.add_frames(base, "p", [frame(1)], skip_duplicates=False)
    assert again.added == ["000003"]


def test_a_decision_moves_items_and_the_next_page_has_the_rest(where):
    _, base = where
    pools.add_frames(base, "p", [frame(i) for i in range(5)], [f"c{i}" for i in range(5)])
    page = pools.pending_page(base, "p", 3)
    moved = pools.decide(base, "p", [page.items[0].name, page.items[2].name], [page.items[1].name])
    assert moved.counts == {"pending": 2, "kept": 2, "rejected": 1}
    assert moved.missing == []
    nxt = pools.pending_page(base, "p", 3)
    assert [item.name for item in nxt.items] == ["000004", "000005"]
    assert nxt.counts == {"pending": 2, "kept": 2, "rejected": 1}
    (item, pixels, caption), = pools.read_items(base, "p", ["000001"])
    assert item.state == "kept" and caption == "c0"
    np.testing.assert_array_equal(pixels, frame(0))
    back = pools.move(base, "p", {"000001": "pending"})
    assert back.counts["pending"] == 3
    assert [item.name for item in pools.pending_page(base, "p", 1).items] == ["000001"]
    assert pools.move(base, "p", {"999999": "kept"}).missing == ["999999"]


def test_removals_and_missing_pools(where):
    _, base = where
    with pytest.raises(pools.PoolNotFound):
        pools.pending_page(base, "none", 4)
    pools.add_frames(base, "p", [frame(1), frame(2)])
    removed = pools.remove_items(base, "p", ["000001", "000009"])
    assert removed.moved == {"000001": "pending"} and removed.missing == ["000009"]
    assert removed.counts["pending"] == 1
    # The removed item's pixels may come back as a new item.
    assert pools.add_frames(base, "p", [frame(1)]).added == ["000003"]
    assert pools.pool_counts(base, "p") == {"pending": 2, "kept": 0, "rejected": 0}
    assert pools.remove_pool(base, "p") is True
    assert pools.remove_pool(base, "p") is False
    assert pools.list_pools(base) == []
    with pytest.raises(pools.PoolIdError):
        pools.add_frames(base, "../p", [frame(1)])


def test_concurrent_adders_never_lose_double_or_share_a_name(where):
    _, base = where
    errors = []

    def adder(worker):
        try:
            for batch in range(3):
                pools.add_frames(base, "p", [frame(1000 * worker + 10 * batch + k) for k in range(3)],
                                 [f"w{worker}b{batch}k{k}" for k in range(3)])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=adder, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors
    page = pools.pending_page(base, "p", 100)
    names = [item.name for item in page.items]
    captions = sorted(item.caption for item in page.items)
    assert len(names) == len(set(names)) == 36
    assert captions == sorted(f"w{w}b{b}k{k}" for w in range(4) for b in range(3) for k in range(3))
    for item in page.items:  # each caption still belongs to its own pixels
        w, b, k = (int(part) for part in item.caption[1:].replace("b", " ").replace("k", " ").split())
        np.testing.assert_array_equal(item.pixels, frame(1000 * w + 10 * b + k))
    assert pools.pool_counts(base, "p")["pending"] == 36
