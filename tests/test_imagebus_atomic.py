"""Atomic publish: readers see the old pair or the new one, never a mix; crashes leave the old slot whole."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from bus_testkit import solid_frames, solid_mask

from gates import imagebus, slots

REPO_ROOT = Path(__file__).resolve().parents[1]

# Pair k: every pixel of every frame is VALUES[k], the mask is VALUES[k] too, and there are FRAMES[k]
# frames; a reader that got a mixed or torn slot sees two values, or a count that does not fit the value.
VALUES = [10, 60, 110, 160, 210]
FRAMES = [1, 2, 3, 1, 2]
SIZE = 32


# How a slot is swapped and read: the atomic exchange with pinned folder handles (Linux, macOS); no
# exchange (network and FUSE file systems); neither (Windows). Forced here on Linux.
SWAP_MODES = {"exchange": (True, True), "no exchange": (False, True), "windows-like": (False, False)}


def force_swap_mode(monkeypatch, mode: str) -> None:
    exchange, dir_fds = SWAP_MODES[mode]
    if exchange and imagebus._exchange_fn is None:
        pytest.skip("no atomic exchange on this system")
    if not exchange:
        monkeypatch.setattr(imagebus, "_exchange_fn", None)
    if not dir_fds:
        monkeypatch.setattr(imagebus, "_DIR_FD_READS", False)


@pytest.fixture(params=list(SWAP_MODES))
def swap_mode(request, monkeypatch):
    force_swap_mode(monkeypatch, request.param)
    return request.param


def publish_pair(base, bus_id: str, k: int) -> None:
    value, frames = VALUES[k % len(VALUES)], FRAMES[k % len(FRAMES)]
    slots.bus_save(base, bus_id, solid_frames([value] * frames, SIZE, SIZE, 4),
                  solid_mask(value, SIZE, SIZE, frames))


def check_pair(image: torch.Tensor, mask: torch.Tensor) -> int:
    """The pair number of a consistent slot; AssertionError for a torn or mixed one."""
    colour = {round(v * 255) for v in image[..., :3].unique().tolist()}
    alpha = {round(v * 255) for v in image[..., 3].unique().tolist()}
    masked = {round(v * 255) for v in mask.unique().tolist()}
    assert len(colour) == 1 and colour == masked, f"image {colour} with mask {masked}"
    value = colour.pop()
    assert alpha == {255 - value}, f"alpha {alpha} with colour {value}"
    k = VALUES.index(value)
    assert image.shape[0] == FRAMES[k] == mask.shape[0], f"pair {k} with {image.shape[0]} frames"
    return k


def hammer(base, bus_id: str, writer_done: threading.Event | None, process=None) -> dict:
    """Read (and list) the slot over and over until the writer is done; returns what was seen."""
    seen = {"reads": 0, "pairs": set(), "missing": 0, "unlisted": 0}
    while not (writer_done.is_set() if writer_done else process.poll() is not None):
        try:
            image, mask = slots.bus_load(base, bus_id)
        except imagebus.SlotNotFound:
            seen["missing"] += 1
            continue
        seen["pairs"].add(check_pair(image, mask))
        seen["reads"] += 1
        if bus_id not in imagebus.list_ids(base):
            seen["unlisted"] += 1
    return seen


def test_the_checker_catches_a_torn_slot(tmp_path):
    """Guard for the tests below: a slot with pair 0's image and pair 1's mask fails check_pair."""
    publish_pair(tmp_path, "hot", 0)
    publish_pair(tmp_path, "other", 1)
    os.replace(tmp_path / "other" / "mask.png", tmp_path / "hot" / "mask.png")
    with pytest.raises(AssertionError):
        check_pair(*slots.bus_load(tmp_path, "hot"))


def _writer_thread(base, bus_id, publishes, done, errors):
    try:
        for k in range(1, publishes + 1):
            publish_pair(base, bus_id, k)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
    finally:
        done.set()


def test_reader_threads_never_see_a_mixed_pair_nor_a_missing_slot(tmp_path, swap_mode):
    publish_pair(tmp_path, "hot", 0)
    done, errors, results = threading.Event(), [], []

    def reader():
        try:
            results.append(hammer(tmp_path, "hot", done))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            done.set()

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    _writer_thread(tmp_path, "hot", 60, done, errors)
    for thread in readers:
        thread.join()
    assert errors == []
    assert [(result["missing"], result["unlisted"]) for result in results] == [(0, 0), (0, 0)]
    assert sum(result["reads"] for result in results) > 0
    check_pair(*slots.bus_load(tmp_path, "hot"))
    assert sorted(os.listdir(tmp_path)) == ["hot"]  # no staging folder left behind


@pytest.mark.parametrize("publishes", [80, pytest.param(1500, marks=pytest.mark.heavy)])
def test_a_reader_in_another_process_never_sees_a_mixed_pair(tmp_path, publishes, swap_mode):
    """The writer is a separate process, as when the command line publishes while ComfyUI reads."""
    publish_pair(tmp_path, "hot", 0)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r}); sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
        from gates import imagebus
        from test_imagebus_atomic import publish_pair
        if {not SWAP_MODES[swap_mode][0]!r}:
            imagebus._exchange_fn = None
        for k in range(1, int(sys.argv[2]) + 1):
            publish_pair(sys.argv[1], "hot", k)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(publishes)], stderr=subprocess.PIPE)
    try:
        seen = hammer(tmp_path, "hot", None, process=writer)
    finally:
        _, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err.decode()
    assert (seen["missing"], seen["unlisted"]) == (0, 0)
    check_pair(*slots.bus_load(tmp_path, "hot"))
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def test_a_version_half_deleted_under_the_reader_is_never_returned(tmp_path, monkeypatch):
    """The exact race the hammering found: a publish swaps the slot while a reader holds the old
    version, and deletes that version file by file. If the reader lists the folder after slot.json
    and mask.png are gone, what is left looks like a valid one-frame slot without a mask; the
    reader must notice the slot moved on and read the new version instead."""
    if not imagebus._DIR_FD_READS:
        pytest.skip("folder handles are not used on this system")
    publish_pair(tmp_path, "hot", 0)
    real_names, real_remove = imagebus.SlotReader.names, imagebus._remove
    state = {"raced": False}

    def delete_some(path):  # the old version, caught halfway through its deletion
        for name in ("slot.json", "mask.png", "frame_0001.png", "frame_0002.png"):
            if (path / name).exists():
                (path / name).unlink()
        state["half_deleted"] = path

    def names_with_a_publish_in_between(reader):
        if not state["raced"]:
            state["raced"] = True
            monkeypatch.setattr(imagebus, "_remove", delete_some)
            publish_pair(tmp_path, "hot", 2)  # 3 frames, value 110
            monkeypatch.setattr(imagebus, "_remove", real_remove)
        return real_names(reader)

    monkeypatch.setattr(imagebus.SlotReader, "names", names_with_a_publish_in_between)
    assert check_pair(*slots.bus_load(tmp_path, "hot")) == 2
    assert state["raced"]
    real_remove(state["half_deleted"])


def test_racing_publishers_leave_one_whole_pair(tmp_path, swap_mode):
    errors = []

    def writer(offset):
        try:
            for k in range(offset, offset + 40, 2):
                publish_pair(tmp_path, "hot", k)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check_pair(*slots.bus_load(tmp_path, "hot"))
    assert sorted(os.listdir(tmp_path)) == ["hot"]


def test_delete_while_reading_gives_the_whole_slot_or_none(tmp_path, swap_mode):
    done, errors = threading.Event(), []

    def churn():
        try:
            for k in range(60):
                publish_pair(tmp_path, "hot", k)
                imagebus.delete_id(tmp_path, "hot")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=churn)
    thread.start()
    while not done.is_set():
        try:
            check_pair(*slots.bus_load(tmp_path, "hot"))
        except imagebus.SlotNotFound:
            pass
    thread.join()
    assert errors == []
    assert os.listdir(tmp_path) == []


# --- crashes ---------------------------------------------------------------------------

def test_a_failing_write_leaves_the_old_slot_and_no_leftovers(tmp_path):
    publish_pair(tmp_path, "cp1", 2)
    old = {p.name: p.read_bytes() for p in (tmp_path / "cp1").iterdir()}

    def half_then_fail(folder):
        (folder / "image.png").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    for failure in (half_then_fail, lambda folder: (_ for _ in ()).throw(KeyboardInterrupt())):
        with pytest.raises((OSError, KeyboardInterrupt)):
            imagebus.publish(tmp_path, "cp1", failure)
        assert {p.name: p.read_bytes() for p in (tmp_path / "cp1").iterdir()} == old
        assert sorted(os.listdir(tmp_path)) == ["cp1"]
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 2


def test_a_failing_png_write_in_bus_save_is_a_slot_error_and_keeps_the_old_slot(tmp_path, monkeypatch):
    publish_pair(tmp_path, "cp1", 1)

    def disk_full(path, pixels, *args):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(slots.imaging, "write_png", disk_full)
    with pytest.raises(imagebus.SlotError, match="'cp1': could not publish.*No space left"):
        publish_pair(tmp_path, "cp1", 3)
    monkeypatch.undo()
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 1
    assert sorted(os.listdir(tmp_path)) == ["cp1"]


def _crash_child(base: Path, setup: str) -> subprocess.CompletedProcess:
    """Publish pair 4 over the slot in a child process that dies (os._exit) at the point `setup` picks."""
    script = textwrap.dedent(f"""
        import os, shutil, sys
        sys.path.insert(0, {str(REPO_ROOT)!r}); sys.path.insert(0, {str(REPO_ROOT / 'tests')!r})
        from gates import imagebus, imaging
        from test_imagebus_atomic import publish_pair
    """) + textwrap.dedent(setup) + "\npublish_pair(sys.argv[1], 'cp1', 4)\nprint('survived')\n"
    return subprocess.run([sys.executable, "-c", script, str(base)], capture_output=True, timeout=120)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leftovers(base: Path) -> list[str]:
    return [name for name in os.listdir(base) if name.startswith(".staging-")]


def test_killed_while_writing_files_leaves_the_old_slot_and_the_sweep_cleans_up(tmp_path):
    publish_pair(tmp_path, "cp1", 1)
    done = _crash_child(tmp_path, """
        real = imaging.write_png
        def write_then_die(path, pixels, *args):
            real(path, pixels, *args)
            if os.path.basename(path) == "frame_0001.png":
                os._exit(9)
        imaging.write_png = write_then_die
    """)
    assert done.returncode == 9, done.stderr.decode()
    assert len(_leftovers(tmp_path)) == 1
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 1
    assert imagebus.list_ids(tmp_path) == ["cp1"]
    assert imagebus.sweep_staging(tmp_path) == 1
    assert os.listdir(tmp_path) == ["cp1"]
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 1


def test_killed_after_the_swap_leaves_the_new_slot_and_the_sweep_removes_the_old_one(tmp_path):
    if imagebus._exchange_fn is None:
        pytest.skip("no atomic exchange on this system")
    publish_pair(tmp_path, "cp1", 1)
    done = _crash_child(tmp_path, """
        def die(path):
            os._exit(9)
        imagebus._remove = die
    """)
    assert done.returncode == 9, done.stderr.decode()
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 4
    assert len(_leftovers(tmp_path)) == 1
    assert imagebus.sweep_staging(tmp_path) == 1
    assert os.listdir(tmp_path) == ["cp1"]


def test_killed_between_the_two_renames_of_the_fallback_the_sweep_puts_the_old_slot_back(tmp_path):
    publish_pair(tmp_path, "cp1", 1)
    done = _crash_child(tmp_path, """
        imagebus._exchange_fn = None
        real_rename = os.rename
        def rename_then_die(src, dst):
            if os.path.basename(src).startswith(".staging-new-"):  # the new slot moving in: the old is aside
                os._exit(9)
            real_rename(src, dst)
        imagebus.os.rename = rename_then_die
    """)
    assert done.returncode == 9, done.stderr.decode()
    assert not (tmp_path / "cp1").exists()  # the old slot is aside, the new one not in yet
    assert len(_leftovers(tmp_path)) == 3  # the new one, the old one, and the dead publisher's lock
    started = time.monotonic()
    with pytest.raises(imagebus.SlotNotFound):  # the lock's owner is dead: no swap to wait for
        slots.bus_load(tmp_path, "cp1")
    assert time.monotonic() - started < 1
    assert imagebus.list_ids(tmp_path) == []
    assert imagebus.sweep_staging(tmp_path) == 3
    assert os.listdir(tmp_path) == ["cp1"]
    assert check_pair(*slots.bus_load(tmp_path, "cp1")) == 1


def test_the_sweep_spares_publishes_in_flight(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = tmp_path / f".staging-new-{sleeper.pid}-abcd1234-0123456789ab-cp1"
        mine = tmp_path / imagebus._staging_name("cp2", "new")
        same_pid_earlier_run = tmp_path / f".staging-new-{os.getpid()}-00000000-0123456789ab-cp3"
        hours_old = tmp_path / f".staging-new-{sleeper.pid}-abcd1234-ba9876543210-cp4"
        junk = tmp_path / ".staging-garbage"
        for folder in (live, mine, same_pid_earlier_run, hours_old, junk):
            folder.mkdir()
            (folder / "image.png").write_bytes(b"x")
        old = time.time() - imagebus.STALE_STAGING_SECONDS - 60
        os.utime(hours_old, (old, old))
        (tmp_path / ".staging-link").symlink_to(tmp_path / "cp9", target_is_directory=True)
        assert imagebus.sweep_staging(tmp_path) == 4
        assert sorted(os.listdir(tmp_path)) == sorted([live.name, mine.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert imagebus.sweep_staging(tmp_path) == 1  # the sleeper's is stale now
    assert os.listdir(tmp_path) == [mine.name]


def test_the_sweep_never_follows_a_leftover_link(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep")
    base = tmp_path / "gate_bus"
    base.mkdir()
    (base / f".staging-new-{dead_pid()}-00000000-0123456789ab-cp1").symlink_to(victim, target_is_directory=True)
    assert imagebus.sweep_staging(base) == 1
    assert os.listdir(base) == [] and (victim / "precious.txt").read_text() == "keep"


def test_sweep_once_sweeps_a_base_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(imagebus, "_swept", set())
    leftover = tmp_path / f".staging-new-{dead_pid()}-00000000-0123456789ab-cp1"
    leftover.mkdir()
    assert imagebus.sweep_once(tmp_path) == 1
    leftover.mkdir()
    assert imagebus.sweep_once(tmp_path) == 0
    assert leftover.exists()


def test_publishing_into_a_missing_bus_folder_creates_it(tmp_path):
    base = tmp_path / "input" / "gate_bus"
    publish_pair(base, "cp1", 0)
    assert os.listdir(base) == ["cp1"]
