"""5. imagebus.list_ids with 10,000 slots and 100,000 empty or half-written folders mixed in,
at several sizes to show it is linear.
- cold: the first call (every folder listed and checked for an image);
- re-check: the call that re-checks every folder, at most once per imagebus._LISTING_RECHECK_NS;
- relist: the first call after a folder was added or removed (a publish, a delete): the names
  are listed again, and only new folders checked;
- warm: any other call while gate_bus is unchanged (what the picker sees almost always)."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from bench.common import timed


def _populate(base: str, start: int, stop: int, staging: bool = False) -> None:
    """Entry i: every 10th a slot (image.png), else an empty folder or a half-written one (mask.png only)
    -- or, with staging, a publish's leftover staging folder."""
    for index in range(start, stop):
        if index % 10 == 0:
            folder = os.path.join(base, f"slot{index:07d}")
            os.mkdir(folder)
            open(os.path.join(folder, "image.png"), "wb").close()
        elif staging:
            folder = os.path.join(base, f".staging-new-1-{index:012x}-slot{index:07d}")
            os.mkdir(folder)
            open(os.path.join(folder, "image.png"), "wb").close()
        else:
            folder = os.path.join(base, f"slot{index:07d}")
            os.mkdir(folder)
            if index % 2:
                open(os.path.join(folder, "mask.png"), "wb").close()


def _settle(base: str) -> None:
    """Let the folder's mtime age past the cache's safety window, as it does between real publishes."""
    from gates import imagebus

    while time.time_ns() - os.stat(base).st_mtime_ns <= imagebus._LISTING_SETTLE_FINE_NS * 1.5:
        time.sleep(0.05)


def _measure(base: str, expected: int, repeats: int) -> dict:
    from gates import imagebus

    _settle(base)
    cold, recheck = [], []
    for _ in range(repeats):
        imagebus._listing_cache.clear()
        cold.append(timed(lambda: imagebus.list_ids(base)))
    for _ in range(repeats):
        imagebus._listing_cache[base].checked_at = 0  # due now
        recheck.append(timed(lambda: imagebus.list_ids(base)))
    warm = [timed(lambda: imagebus.list_ids(base)) for _ in range(repeats)]
    relist = []
    for _ in range(repeats):
        os.rmdir(os.path.join(base, "made_by_hand")) if os.path.isdir(os.path.join(base, "made_by_hand")) \
            else os.mkdir(os.path.join(base, "made_by_hand"))  # a folder added or removed, as by a publish
        _settle(base)
        relist.append(timed(lambda: imagebus.list_ids(base)))
    if os.path.isdir(os.path.join(base, "made_by_hand")):
        os.rmdir(os.path.join(base, "made_by_hand"))
    found = imagebus.list_ids(base)
    if len(found) != expected:
        raise AssertionError(f"list_ids found {len(found)} slots, expected {expected}")
    return {"cold_s": statistics.median(cold), "recheck_s": statistics.median(recheck),
            "warm_s": statistics.median(warm), "relist_s": statistics.median(relist)}


def _hand_written_slot_is_listed(base: str) -> bool:
    """Correctness under the cache: a slot made by hand (mkdir, a listing, then image.png) shows at once."""
    from gates import imagebus

    _settle(base)
    imagebus.list_ids(base)
    folder = os.path.join(base, "made_by_hand")
    os.mkdir(folder)
    before = "made_by_hand" in imagebus.list_ids(base)
    open(os.path.join(folder, "image.png"), "wb").close()
    listed = "made_by_hand" in imagebus.list_ids(base)
    shutil.rmtree(folder)
    return listed and not before and "made_by_hand" not in imagebus.list_ids(base)


def run(quick: bool, root: str | None = None) -> dict:
    sizes = (110, 1_100) if quick else (1_100, 11_000, 110_000)
    repeats = 3
    work = tempfile.mkdtemp(prefix="bench-list-", dir=root)
    rows = []
    try:
        base = os.path.join(work, "gate_bus")
        os.mkdir(base)
        built = 0
        for total in sizes:
            _populate(base, built, total)
            built = total
            stats = _measure(base, (total + 9) // 10, repeats)
            rows.append({"entries": total, "slots": (total + 9) // 10, "kind": "empty or half-written", **stats})
        correct = _hand_written_slot_is_listed(base)
        if quick:  # the bus's own leftovers are skipped by name: shown on the small size only
            staging_base = os.path.join(work, "gate_bus_staging")
            os.mkdir(staging_base)
            _populate(staging_base, 0, sizes[-1], staging=True)
            stats = _measure(staging_base, (sizes[-1] + 9) // 10, repeats)
            rows.append({"entries": sizes[-1], "slots": (sizes[-1] + 9) // 10, "kind": "staging leftovers",
                         **stats})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    measured = rows[:len(sizes)]
    return {"rows": rows, "hand_written_slot_listed": correct,
            "cold_us_per_entry": [row["cold_s"] / row["entries"] * 1e6 for row in measured],
            "recheck_us_per_entry": [row["recheck_s"] / row["entries"] * 1e6 for row in measured]}
