"""Part 4 on the object store: the same self-describing publishers and readers (concurrency.worker), in
threads and in separate processes, on one slot on S3 (moto's server on 127.0.0.1). No read may mix two
publishes, none may fail, the listing never leaves the slot out, and afterwards exactly one version of
the slot is left on the store (every superseded one deleted by the publish that replaced it)."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from gates import slots
from gates.constants import BUS_DIR_NAME
from gates.storage import objects, s3slots

from . import concurrency


def run_on_store(base, seconds: float, threads: int, processes: int) -> list[dict]:
    slots.bus_write(base, concurrency.SLOT, *concurrency.make_publish(250, 1))
    context = multiprocessing.get_context("spawn")  # the children inherit the store's environment
    process_results = context.Queue()
    thread_results = concurrency._ThreadQueue()
    children = [context.Process(target=concurrency.worker, args=(role, 100 + n, base, seconds, process_results))
                for n in range(processes) for role in ("publisher", "reader")]
    for child in children:
        child.start()
    workers = [threading.Thread(target=concurrency.worker, args=(role, n, base, seconds, thread_results))
               for n in range(threads) for role in ("publisher", "reader")]
    for thread in workers:
        thread.start()
    tallies = [process_results.get(timeout=seconds + 180) for _ in children]
    for child in children:
        child.join(30)
    for thread in workers:
        thread.join(seconds + 120)
    return tallies + thread_results.items


@pytest.mark.parametrize("seconds, threads, processes", [
    pytest.param(4, 2, 1, id="light"),
    pytest.param(60, 2, 2, id="heavy", marks=pytest.mark.heavy),
])
def test_publishers_and_readers_on_the_store(s3_store, seconds, threads, processes):
    base = s3_store.child(BUS_DIR_NAME)
    tallies = run_on_store(base, seconds, threads, processes)
    total = {key: sum(t[key] for t in tallies) for key in ("publishes", "reads", "inconsistent", "failed",
                                                             "list_misses")}
    notes = [note for t in tallies for note in t["notes"]]
    assert len(tallies) == 2 * (threads + processes)
    assert total["publishes"] > 0 and total["reads"] > 0, total
    assert total["inconsistent"] == 0 and total["failed"] == 0 and total["list_misses"] == 0, (total, notes[:5])
    store = objects.store_for(base)
    keys = [entry["key"] for entry in store.list(s3slots.version_prefix(base, concurrency.SLOT))[0]]
    assert len({key.split("/")[-2] for key in keys}) == 1, "superseded versions left on the store"
