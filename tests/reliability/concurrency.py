"""Part 4: publishers and readers on one slot, from threads and from separate processes at once.

Every publish is self-describing: writer number and sequence number in every pixel of every frame, the
frame's index in its alpha, a frame count, size and mask layout that follow from the sequence number, and
mask grey levels derived from both. A reader that sees anything else saw a mix of two publishes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gates import imagebus, slots

from .harness import PartResult, timed

SLOT = "busy_slot"


def layout(seq: int) -> tuple[int, int, bool]:
    """(frames, size, one mask per frame) of publish `seq`."""
    return 1 + seq % 3, (24 if seq % 2 else 40), seq % 4 == 0


def make_publish(writer: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    frames, size, per_frame = layout(seq)
    pixels = np.empty((frames, size, size, 4), dtype=np.uint8)
    for index in range(frames):
        pixels[index] = (writer, seq & 0xFF, (seq >> 8) & 0xFF, 100 + 10 * index)
    level = (writer * 7 + seq) % 200
    if per_frame:
        masks = np.stack([np.full((size, size), level + index, dtype=np.uint8) for index in range(frames)])
    else:
        masks = np.full((1, size, size), level, dtype=np.uint8)
    return pixels, masks


def check_read(contents) -> str:
    """"" if `contents` is exactly one publish, else what is wrong with it."""
    frames, masks = contents.frames, contents.masks
    if frames.ndim != 4 or frames.shape[-1] != 4:
        return f"frames of shape {frames.shape}"
    first = frames[0, 0, 0]
    writer, seq = int(first[0]), int(first[1]) | (int(first[2]) << 8)
    count, size, per_frame = layout(seq)
    if frames.shape != (count, size, size, 4):
        return f"publish {writer}/{seq} should be {count}x{size}x{size}, read {frames.shape}"
    expected, expected_masks = make_publish(writer, seq)
    if not np.array_equal(frames, expected):
        return f"frames of publish {writer}/{seq} mixed with another"
    if masks is None or masks.shape != expected_masks.shape or not np.array_equal(masks, expected_masks):
        return f"masks do not belong to publish {writer}/{seq}"
    return ""


def force_fallback(exchange: bool, dir_fds: bool) -> None:
    """In this process: swap without the atomic exchange, and read without folder handles (as on Windows)."""
    if not exchange:
        imagebus._exchange_fn = None
    if not dir_fds:
        imagebus._DIR_FD_READS = False


def worker(role: str, writer: int, base: str, seconds: float, results, exchange: bool = True,
           dir_fds: bool = True) -> None:
    """One publisher or reader, in a thread or a process; puts its tally on `results`."""
    force_fallback(exchange, dir_fds)
    tally = {"role": role, "publishes": 0, "reads": 0, "inconsistent": 0, "failed": 0, "list_misses": 0,
             "notes": []}
    deadline = time.monotonic() + seconds
    seq = writer * 7
    while time.monotonic() < deadline:
        try:
            if role == "publisher":
                seq = (seq + 1) % 65536
                pixels, masks = make_publish(writer, seq)
                slots.bus_write(base, SLOT, pixels, masks)
                tally["publishes"] += 1
            else:
                contents = slots.bus_read(base, SLOT)
                tally["reads"] += 1
                problem = check_read(contents)
                if problem:
                    tally["inconsistent"] += 1
                    tally["notes"].append(problem)
                if SLOT not in imagebus.list_ids(base):
                    tally["list_misses"] += 1
                    tally["notes"].append("the list left out the slot while it was being replaced")
        except (imagebus.SlotError, OSError) as exc:
            tally["failed"] += 1
            tally["notes"].append(f"{role}: {type(exc).__name__}: {exc}")
    tally["notes"] = tally["notes"][:5]
    results.put(tally)


def run(*, seconds: float, threads: int = 2, processes: int = 2, exchange: bool = True,
        dir_fds: bool = True) -> PartResult:
    """`threads` publishers and `threads` readers in this process, `processes` of each as processes.

    exchange=False forces the swap without an atomic exchange, dir_fds=False reads without folder handles
    (both False: what Windows does), in every worker.
    """
    mode = "" if exchange and dir_fds else (" (no atomic exchange" + ("" if dir_fds else ", no folder handles") + ")")
    result = PartResult("4", "Concurrency on one slot" + mode)
    work = Path(tempfile.mkdtemp(prefix="datasete-concurrency-"))
    base = str(work / "gate_bus")
    saved = (imagebus._exchange_fn, imagebus._DIR_FD_READS)
    with timed(result):
        try:
            force_fallback(exchange, dir_fds)  # the threads run in this process
            pixels, masks = make_publish(250, 1)
            slots.bus_write(base, SLOT, pixels, masks)
            context = multiprocessing.get_context("spawn")
            process_results = context.Queue()
            thread_results = _ThreadQueue()
            children = [context.Process(target=worker, args=(role, 100 + n, base, seconds, process_results,
                                                             exchange, dir_fds))
                        for n in range(processes) for role in ("publisher", "reader")]
            for child in children:
                child.start()
            time.sleep(2.0)  # let the processes import torch and numpy before the threads start the clock
            workers = [threading.Thread(target=worker, args=(role, n, base, seconds, thread_results))
                       for n in range(threads) for role in ("publisher", "reader")]
            for thread in workers:
                thread.start()
            tallies = [process_results.get(timeout=seconds + 120) for _ in children]
            for child in children:
                child.join(30)
            for thread in workers:
                thread.join(seconds + 60)
            tallies += thread_results.items
            leftovers = [name for name in os.listdir(base) if name != SLOT]
        finally:
            imagebus._exchange_fn, imagebus._DIR_FD_READS = saved
            shutil.rmtree(work, ignore_errors=True)
    total = {key: sum(t[key] for t in tallies) for key in ("publishes", "reads", "inconsistent", "failed",
                                                             "list_misses")}
    for tally in tallies:
        for note in tally["notes"]:
            result.note(note)
    result.stated("workers", f"{threads} publisher + {threads} reader threads, {processes} publisher + "
                             f"{processes} reader processes, {seconds:g} s")
    result.stated("publishes", total["publishes"])
    result.stated("reads (each also lists the slots)", total["reads"])
    result.at_least("workers that reported", len(tallies), 2 * (threads + processes))
    result.at_least("publishes by processes and by threads", min(
        sum(t["publishes"] for t in tallies[:processes * 2]), sum(t["publishes"] for t in tallies[processes * 2:])), 1)
    result.at_most("inconsistent reads", total["inconsistent"], 0)
    result.at_most("failed reads or publishes", total["failed"], 0)
    result.at_most("lists that left out the slot", total["list_misses"], 0)
    result.at_most("staging leftovers after all workers stopped", len(leftovers), 0)
    return result


class _ThreadQueue:
    def __init__(self):
        self.items: list[dict] = []
        self._lock = threading.Lock()

    def put(self, item: dict) -> None:
        with self._lock:
            self.items.append(item)
