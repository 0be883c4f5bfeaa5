"""The swap without an atomic exchange (Windows, network and FUSE file systems), forced on Linux: readers and
listings never see the gap between its two renames, its lock survives crashes, and on Windows every rename
and removal on a slot path retries a folder in use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from test_imagebus_atomic import SWAP_MODES, check_pair, dead_pid, force_swap_mode, publish_pair

from gates import imagebus, slots

FALLBACKS = [mode for mode, (exchange, _) in SWAP_MODES.items() if not exchange]


@pytest.fixture(params=FALLBACKS)
def fallback(request, monkeypatch):
    force_swap_mode(monkeypatch, request.param)
    return request.param


def plant_lock(base, bus_id: str, pid: int, tag: str = "00000000") -> str:
    marker = base / (imagebus._LOCK_PREFIX + bus_id)
    marker.mkdir()
    (marker / f"{pid}-{tag}-abcd").write_bytes(b"")
    return marker.name


def test_a_reader_that_finds_the_slot_missing_mid_swap_waits_for_the_new_one(tmp_path, monkeypatch, fallback):
    """The publish is held between its two renames until the reader and the listing have looked."""
    publish_pair(tmp_path, "hot", 0)
    assert imagebus.list_ids(tmp_path) == ["hot"]
    in_gap, looked = threading.Event(), threading.Event()
    real_rename = os.rename

    def rename_pausing_in_the_gap(src, dst):
        real_rename(src, dst)
        if os.path.basename(str(dst)).startswith(".staging-old-"):  # the old slot is aside now
            in_gap.set()
            looked.wait(10)

    monkeypatch.setattr(imagebus.os, "rename", rename_pausing_in_the_gap)
    writer = threading.Thread(target=publish_pair, args=(tmp_path, "hot", 2))
    writer.start()
    seen = {}
    reader = threading.Thread(target=lambda: seen.update(pair=check_pair(*slots.bus_load(tmp_path, "hot"))))
    lister = threading.Thread(target=lambda: seen.update(ids=imagebus.list_ids(tmp_path)))
    try:
        assert in_gap.wait(10)
        assert not (tmp_path / "hot").exists()
        reader.start()
        lister.start()
        time.sleep(0.3)
        assert reader.is_alive() and lister.is_alive()  # waiting for the swap, not answering "no slot"
    finally:
        looked.set()
        writer.join(10)
    reader.join(10)
    lister.join(10)
    assert seen == {"pair": 2, "ids": ["hot"]}
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def test_a_dead_publishers_lock_is_broken_at_once_and_a_reader_does_not_wait_on_it(tmp_path, fallback):
    plant_lock(tmp_path, "hot", dead_pid())
    started = time.monotonic()
    with pytest.raises(imagebus.SlotNotFound):
        slots.bus_load(tmp_path, "hot")
    assert imagebus.list_ids(tmp_path) == []
    publish_pair(tmp_path, "hot", 1)
    publish_pair(tmp_path, "hot", 3)
    assert time.monotonic() - started < 2
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 3
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def test_a_lock_held_too_long_fails_the_publish_naming_the_slot_and_keeps_the_old_one(tmp_path, monkeypatch,
                                                                                      fallback):
    publish_pair(tmp_path, "hot", 1)
    monkeypatch.setattr(imagebus, "LOCK_WAIT_SECONDS", 0.3)
    marker = plant_lock(tmp_path, "hot", os.getppid())  # a live process that never lets go
    with pytest.raises(imagebus.SlotError, match=f"slot 'hot': another publish has held its lock \\({marker}\\)"):
        publish_pair(tmp_path, "hot", 2)
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(["hot", marker])
    monkeypatch.setattr(imagebus, "LOCK_STALE_SECONDS", 0.0)  # the same lock, now judged stuck
    publish_pair(tmp_path, "hot", 2)
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 2
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def test_delete_waits_for_a_swap_and_a_reader_then_sees_the_slot_gone(tmp_path, fallback):
    publish_pair(tmp_path, "hot", 0)
    errors = []

    def churn():
        try:
            for k in range(30):
                publish_pair(tmp_path, "hot", k)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    writer = threading.Thread(target=churn)
    writer.start()
    deleted = imagebus.delete_id(tmp_path, "hot")
    writer.join()
    assert errors == [] and deleted is True
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging-")]


def test_the_sweep_spares_a_live_lock_and_removes_a_dead_one(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = plant_lock(tmp_path, "live", sleeper.pid)
        plant_lock(tmp_path, "dead", dead_pid())
        assert imagebus.sweep_staging(tmp_path) == 1
        assert os.listdir(tmp_path) == [live]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert imagebus.sweep_staging(tmp_path) == 1
    assert os.listdir(tmp_path) == []


def test_a_publisher_that_missed_the_lock_wins_the_gap_and_nothing_is_lost(tmp_path, monkeypatch):
    """A process that has not yet found that its file system has no exchange creates the slot without the
    lock, in the gap of another's swap: that other publish is then overtaken, not failed, and leaves nothing."""
    monkeypatch.setattr(imagebus, "_exchange_fn", None)
    publish_pair(tmp_path, "hot", 0)
    real_rename = os.rename

    def rename_with_an_intruder(src, dst):
        real_rename(src, dst)
        if os.path.basename(str(dst)).startswith(".staging-old-"):
            intruder = tmp_path / ".intruder"
            slots.bus_save(tmp_path / "scratch", "x", *_pair(4))
            real_rename(tmp_path / "scratch" / "x", intruder)
            real_rename(intruder, tmp_path / "hot")

    monkeypatch.setattr(imagebus.os, "rename", rename_with_an_intruder)
    publish_pair(tmp_path, "hot", 2)
    monkeypatch.undo()
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 4
    shutil.rmtree(tmp_path / "scratch")
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def _pair(k):
    from bus_testkit import solid_frames, solid_mask
    from test_imagebus_atomic import FRAMES, SIZE, VALUES

    return (solid_frames([VALUES[k]] * FRAMES[k], SIZE, SIZE, 4), solid_mask(VALUES[k], SIZE, SIZE, FRAMES[k]))


# --- Windows: a folder in use -------------------------------------------------------------------------

def flaky(real, failures: int, calls: list):
    """`real`, failing its first `failures` calls with the PermissionError Windows gives for a folder in use."""

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) <= failures:
            raise PermissionError(13, "The process cannot access the file because it is being used by another "
                                      "process", str(args[0]))
        return real(*args, **kwargs)

    return call


@pytest.fixture
def windows_retries(monkeypatch):
    monkeypatch.setattr(imagebus, "_RETRY_SHARING", True)
    monkeypatch.setattr(imagebus, "SHARING_RETRY_SECONDS", 0.5)


def test_a_rename_refused_a_few_times_is_retried_with_growing_pauses(tmp_path, monkeypatch, windows_retries):
    (tmp_path / "a").mkdir()
    calls, pauses = [], []
    monkeypatch.setattr(imagebus.os, "rename", flaky(os.rename, 3, calls))
    real_sleep = time.sleep
    monkeypatch.setattr(imagebus.time, "sleep", lambda seconds: (pauses.append(seconds), real_sleep(seconds)))
    imagebus._rename_retrying(tmp_path / "a", tmp_path / "b")
    assert len(calls) == 4 and (tmp_path / "b").is_dir()
    assert pauses == sorted(pauses) and len(pauses) == 3


def test_a_rename_refused_for_good_fails_after_the_bound(tmp_path, monkeypatch, windows_retries):
    (tmp_path / "a").mkdir()
    calls = []
    monkeypatch.setattr(imagebus.os, "rename", flaky(os.rename, 10**9, calls))
    started = time.monotonic()
    with pytest.raises(PermissionError):
        imagebus._rename_retrying(tmp_path / "a", tmp_path / "b")
    assert 0.5 <= time.monotonic() - started < 2 and len(calls) > 3


def test_elsewhere_a_permission_error_is_final(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(imagebus.os, "rename", flaky(os.rename, 1, calls))
    with pytest.raises(PermissionError):
        imagebus._rename_retrying(tmp_path / "a", tmp_path / "b")
    assert len(calls) == 1


@pytest.mark.parametrize("mode", FALLBACKS)
def test_publish_and_delete_ride_out_a_folder_in_use_at_every_rename_and_removal(tmp_path, monkeypatch,
                                                                                  windows_retries, mode):
    """Every rename and every removal fails twice first, as when a reader or a scanner has a file open."""
    force_swap_mode(monkeypatch, mode)
    publish_pair(tmp_path, "hot", 1)
    counts = {"rename": 0, "rmtree": 0}
    real_rename, real_rmtree = os.rename, shutil.rmtree
    state: dict = {}

    def rename(src, dst):
        counts["rename"] += 1
        key = ("rename", str(src), str(dst))
        state[key] = state.get(key, 0) + 1
        if state[key] <= 2:
            raise PermissionError(13, "in use", str(src))
        return real_rename(src, dst)

    def rmtree(path, *args, **kwargs):
        counts["rmtree"] += 1
        key = ("rmtree", str(path))
        state[key] = state.get(key, 0) + 1
        if state[key] <= 2 and not kwargs.get("ignore_errors"):
            raise PermissionError(13, "in use", str(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(imagebus.os, "rename", rename)
    monkeypatch.setattr(imagebus.shutil, "rmtree", rmtree)
    publish_pair(tmp_path, "hot", 2)
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 2
    assert sorted(os.listdir(tmp_path)) == ["hot"]  # the old version and the lock removed despite the refusals
    assert imagebus.delete_id(tmp_path, "hot") is True
    assert os.listdir(tmp_path) == []
    assert counts["rename"] >= 3 * 4 and counts["rmtree"] >= 3 * 2
