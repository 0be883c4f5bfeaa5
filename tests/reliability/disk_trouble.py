"""Part 7: the input folder read-only, then full: the choice still routed and a clear note naming the slot,
the old slot intact, the server alive and publishing again once the disk has room.

Tests run as root, where chmod stops nothing, so the trouble is real: the input folder is a small tmpfs the
test mounts, remounts read-only, and fills. Where mounting is not permitted the part is skipped with the
reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gates import imagebus, slots
from gates.constants import GATE_STATUS_UI_KEY, SLOT_STAGING_PREFIX

from .harness import (
    MountError,
    PartResult,
    can_mount,
    fill_disk,
    gated_prompt,
    history_error,
    history_status,
    mount_tmpfs,
    remount,
    timed,
    uniform_mask_base64,
    unmount,
    wait_finished,
)

KEEP = "keep"      # the slot whose old contents must survive every failed publish
NOISY = "noisy"    # a slot of noise: loading it gives a publish whose PNGs do not compress to nothing
MOUNT_SIZE = "8m"


def slot_fingerprint(bus_dir: Path, bus_id: str) -> str:
    """A digest of every file of the slot; equal fingerprints mean an untouched slot."""
    folder = bus_dir / bus_id
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def staging_left(bus_dir: Path) -> list[str]:
    try:
        return [name for name in os.listdir(bus_dir) if name.startswith(SLOT_STAGING_PREFIX)]
    except OSError:
        return []


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class Checks:
    def __init__(self, result: PartResult):
        self.result = result
        self.tried = 0
        self.unclear = 0
        self.damaged = 0
        self.leftovers = 0
        self.dead = 0

    def failed_publish(self, label: str, error: str, bus_dir: Path, before: str, reason_words: tuple[str, ...],
                       server=None) -> None:
        self.tried += 1
        clear = repr(KEEP) in error and any(word in error for word in reason_words)
        if not clear:
            self.unclear += 1
            self.result.note(f"{label}: the error does not name the slot and the cause: {error[:300]!r}")
        else:
            self.result.note(f"{label}: {error.strip().splitlines()[0][:200]}")
        if slot_fingerprint(bus_dir, KEEP) != before or slots.bus_read(str(bus_dir), KEEP).frames.shape[0] != 1:
            self.damaged += 1
            self.result.note(f"{label}: the old slot changed")
        left = staging_left(bus_dir)
        if left:
            self.leftovers += 1
            self.result.note(f"{label}: left {left}")
        if server is not None and not server_alive(server):
            self.dead += 1
            self.result.note(f"{label}: the server did not run a plain gated prompt afterwards")

    def figures(self) -> None:
        self.result.stated("failed publishes provoked", self.tried)
        self.result.at_most("errors that do not name the slot and the cause", self.unclear, 0)
        self.result.at_most("old slots changed by a failed publish", self.damaged, 0)
        self.result.at_most("staging leftovers after a failed publish", self.leftovers, 0)
        self.result.at_most("times the server was not alive afterwards", self.dead, 0)


# --- without ComfyUI: the pack's publish on a read-only and a full tmpfs ----------------------------------------


def run_unit() -> PartResult:
    result = PartResult("7", "Disk trouble (pack functions)")
    reason = can_mount()
    if reason:
        result.skipped = reason
        return result
    work = Path(tempfile.mkdtemp(prefix="datasete-disk-"))
    mount = work / "input"
    checks = Checks(result)
    with timed(result):
        try:
            mount_tmpfs(mount, MOUNT_SIZE)
            bus = mount / "gate_bus"
            slots.bus_write(str(bus), KEEP, np.full((1, 16, 16, 3), 40, np.uint8), np.full((1, 16, 16), 9, np.uint8))
            before = slot_fingerprint(bus, KEEP)
            frames = np.random.default_rng(1).integers(0, 256, (3, 512, 512, 3), dtype=np.uint8)
            remount(mount, "ro")
            checks.failed_publish("read-only", _publish_error(bus, frames), bus, before, ("Read-only",))
            remount(mount, "rw")
            filler = fill_disk(mount)
            checks.failed_publish("disk full", _publish_error(bus, frames), bus, before, ("No space",))
            os.truncate(filler, max(0, os.path.getsize(filler) - 256 * 1024))
            checks.failed_publish("disk nearly full", _publish_error(bus, frames), bus, before, ("No space",))
            os.remove(filler)
            slots.bus_write(str(bus), KEEP, frames, None)
            result.equal("publish once the disk has room again", slots.bus_read(str(bus), KEEP).frames.shape[0], 3)
        finally:
            unmount(mount)
            shutil.rmtree(work, ignore_errors=True)
    checks.figures()
    return result


def _publish_error(bus: Path, frames: np.ndarray) -> str:
    try:
        slots.bus_write(str(bus), KEEP, frames, None)
    except imagebus.SlotError as exc:
        return str(exc)
    return "the publish succeeded"


# --- a real ComfyUI whose input folder is the troubled mount ----------------------------------------------------


def server_alive(server) -> bool:
    """The server answers and runs a plain gated prompt to success."""
    try:
        prompt_id = server.queue(gated_prompt())
        entry = server.wait_pending(prompt_id=prompt_id, timeout=30)[0]
        server.post_json("/datasete_gate/choose", {"token": entry["token"], "route": 1})
        return history_status(wait_finished(server, prompt_id, 30)) == "success"
    except (AssertionError, OSError):
        return False


def gate_publish(server, *, send_id: str, get_id: str = "", color: int = 0x204060, size: int = 64,
                 mask_level: int = 77) -> tuple[str, str]:
    """A gate publishing to `send_id` (from a wired image, or loaded from `get_id`): (status, error)."""
    prompt = (gated_prompt(get_id=get_id, send_id=send_id, wire_image=False) if get_id else
              gated_prompt(width=size, height=size, color=color, send_id=send_id))
    prompt_id = server.queue(prompt)
    entry = server.wait_pending(prompt_id=prompt_id, timeout=60)[0]
    server.post_json("/datasete_gate/choose", {
        "token": entry["token"], "route": 1,
        "mask": uniform_mask_base64(entry["width"], entry["height"], mask_level)})
    history = wait_finished(server, prompt_id, 60)
    status = history_status(history)
    if status == "success":
        # A failed publish does not fail the run (the person's choice stands): the gate says why.
        notes = history.get("outputs", {}).get("2", {}).get(GATE_STATUS_UI_KEY, [])
        return status, " ".join(note["text"] for note in notes if note.get("reason") == "publish_failed")
    return status, history_error(history)


def outcome(status: str, error: str) -> str:
    """What a failed publish said: the gate's note when the run succeeded (the choice stood), else how it ended."""
    return error if status == "success" else f"prompt {status}: {error}"


def run_comfy(server_factory) -> PartResult:
    """`server_factory(input_directory)` makes a ComfyServer whose input folder is the given mount."""
    result = PartResult("7", "Disk trouble")
    reason = can_mount()
    if reason:
        result.skipped = reason
        return result
    work = Path(tempfile.mkdtemp(prefix="datasete-disk-"))
    mount = work / "input"
    checks = Checks(result)
    server = None
    with timed(result):
        try:
            mount_tmpfs(mount, MOUNT_SIZE)
            bus = mount / "gate_bus"
            noise = np.random.default_rng(2).integers(0, 256, (1, 640, 640, 3), dtype=np.uint8)
            slots.bus_write(str(bus), NOISY, noise, None)
            server = server_factory(mount).start()
            status, error = gate_publish(server, send_id=KEEP)
            if status != "success":
                raise AssertionError(f"the first publish failed: {error}")
            before = slot_fingerprint(bus, KEEP)

            remount(mount, "ro")
            status, error = gate_publish(server, send_id=KEEP, color=0x00FF00)
            checks.failed_publish("read-only input folder", outcome(status, error),
                                  bus, before, ("Read-only",), server)
            loaded, _ = _get_from(server, KEEP)
            result.equal("a gate loading a slot from the read-only folder", loaded, "success")
            remount(mount, "rw")

            filler = fill_disk(mount)
            result.stated("free bytes on the full disk", free_bytes(mount))
            status, error = gate_publish(server, send_id=KEEP, get_id=NOISY)
            checks.failed_publish("full disk", outcome(status, error), bus, before,
                                  ("No space",), server)
            os.truncate(filler, max(0, os.path.getsize(filler) - 256 * 1024))
            result.stated("free bytes on the nearly full disk", free_bytes(mount))
            status, error = gate_publish(server, send_id=KEEP, get_id=NOISY)
            checks.failed_publish("nearly full disk (the publish fails part-way)",
                                  outcome(status, error), bus, before, ("No space",),
                                  server)
            os.remove(filler)
            status, error = gate_publish(server, send_id=KEEP, get_id=NOISY)
            recovered = status == "success" and slots.bus_read(str(bus), KEEP).frames.shape[1:3] == (640, 640)
            result.equal("publish once the disk has room again", "success" if recovered else f"{status} {error}",
                         "success")
        except MountError as exc:
            result.skipped = f"disk trouble skipped: {exc}"
        finally:
            if server is not None:
                server.stop()
            unmount(mount)
            shutil.rmtree(work, ignore_errors=True)
    checks.figures()
    return result


def _get_from(server, slot: str) -> tuple[str, str]:
    prompt_id = server.queue(gated_prompt(get_id=slot, wire_image=False))
    entry = server.wait_pending(prompt_id=prompt_id, timeout=60)[0]
    server.post_json("/datasete_gate/choose", {"token": entry["token"], "route": 1})
    history = wait_finished(server, prompt_id, 60)
    return history_status(history), history_error(history)
