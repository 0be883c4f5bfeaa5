"""Part 4: publishers and readers on one slot from threads and processes; no read may mix two publishes."""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time

import pytest

from gates import slots

from . import concurrency


def test_the_check_sees_a_slot_replaced_file_by_file(tmp_path):
    """A publisher that copies files into the slot one by one (no atomic swap) must be caught."""
    base = str(tmp_path / "gate_bus")
    scratch = str(tmp_path / "scratch")
    pixels, masks = concurrency.make_publish(1, 1)
    slots.bus_write(base, concurrency.SLOT, pixels, masks)
    stop = time.monotonic() + 3

    def naive_publisher():
        seq = 1
        while time.monotonic() < stop:
            seq += 1
            slots.bus_write(scratch, "next", *concurrency.make_publish(2, seq))
            for name in sorted(os.listdir(os.path.join(scratch, "next"))):
                shutil.copyfile(os.path.join(scratch, "next", name), os.path.join(base, concurrency.SLOT, name))

    results = queue.Queue()
    writer = threading.Thread(target=naive_publisher)
    writer.start()
    concurrency.worker("reader", 0, base, 3, results)
    writer.join()
    tally = results.get()
    assert tally["reads"] > 0
    assert tally["inconsistent"] + tally["failed"] > 0, tally


# The atomic exchange; no exchange (network and FUSE file systems); neither exchange nor folder handles (Windows).
MODES = {"exchange": (True, True), "no exchange": (False, True), "windows-like": (False, False)}


@pytest.mark.parametrize("mode", MODES)
def test_publishers_and_readers_light(mode):
    exchange, dir_fds = MODES[mode]
    concurrency.run(seconds=3, threads=2, processes=1, exchange=exchange, dir_fds=dir_fds).assert_passed()


@pytest.mark.heavy
@pytest.mark.parametrize("mode", MODES)
def test_publishers_and_readers_for_a_minute(mode):
    exchange, dir_fds = MODES[mode]
    concurrency.run(seconds=60, threads=2, processes=2, exchange=exchange, dir_fds=dir_fds).assert_passed()
