"""Shared pieces of the reliability suite: figures, prompts, disk snapshots, canary watches, mounts.

Each part of the suite is a plain function returning a PartResult, so pytest (light and --heavy sizes)
and the report command (report sizes) run the very same code; only the sizes differ.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import errno
import hashlib
import io
import os
import select
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from gates.constants import NODE_ID, PREVIEW_PREFIX

# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured number with the bound it must meet; `bound` None means "stated, no bound"."""

    name: str
    value: object
    bound: str | None = None
    passed: bool = True

    def row(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"| {self.name} | {self.value} | {self.bound or 'stated'} | {verdict} |"


@dataclass
class PartResult:
    part: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    def at_most(self, name: str, value, limit) -> Figure:
        figure = Figure(name, value, f"<= {limit}", value <= limit)
        self.figures.append(figure)
        return figure

    def at_least(self, name: str, value, minimum) -> Figure:
        figure = Figure(name, value, f">= {minimum}", value >= minimum)
        self.figures.append(figure)
        return figure

    def equal(self, name: str, value, expected) -> Figure:
        figure = Figure(name, value, f"= {expected}", value == expected)
        self.figures.append(figure)
        return figure

    def stated(self, name: str, value) -> Figure:
        figure = Figure(name, value)
        self.figures.append(figure)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return self.skipped is None and all(f.passed for f in self.figures)

    def failures(self) -> list[str]:
        return [f"{f.name} = {f.value} (bound {f.bound})" for f in self.figures if not f.passed]

    def assert_passed(self) -> None:
        """For pytest: fail with every figure that missed its bound, and the notes that explain them."""
        if self.skipped:
            import pytest

            pytest.skip(self.skipped)
        failed = self.failures()
        assert not failed, f"{self.title}: " + "; ".join(failed) + "\n" + "\n".join(self.notes[-20:])


@contextmanager
def timed(result: PartResult) -> Iterator[PartResult]:
    start = time.monotonic()
    try:
        yield result
    finally:
        result.seconds = round(time.monotonic() - start, 1)


# --- images and prompts -----------------------------------------------------------------------


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def uniform_mask_base64(width: int, height: int, value: int) -> str:
    """A one-channel mask PNG of one grey level, as the choose route takes it."""
    return png_base64(np.full((height, width), value, dtype=np.uint8))


def write_slot_files(folder: Path, rgb: tuple[int, int, int], size: int = 8) -> None:
    """A valid-looking slot (image, mask, manifest) in `folder`: used as canaries outside gate_bus."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8)).save(folder / "image.png")
    Image.fromarray(np.full((size, size), 255, dtype=np.uint8)).save(folder / "mask.png")
    (folder / "slot.json").write_text(f'{{"frames": 1, "width": {size}, "height": {size}, "channels": 3, '
                                      '"mask": true}')


def gated_prompt(*, width: int = 32, height: int = 32, color: int = 0x336699, routes: int = 2,
                 send_id: str = "", get_id: str = "", wire_image: bool = True, batch: int = 1,
                 second_color: int | None = None, output_route: int = 1) -> dict:
    """EmptyImage -> Image Gate -> PreviewImage on one route (ComfyUI needs an output node).

    `second_color` appends a second frame of another colour (ImageBatch), so a batch's frames differ.
    A PreviewImage on a route that is not chosen is blocked and writes nothing.
    """
    prompt: dict = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}},
        "2": {"class_type": NODE_ID,
              "inputs": {"routes": routes, "send_id": send_id, "get_id": get_id}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", output_route]}},
    }
    if wire_image:
        prompt["2"]["inputs"]["image"] = ["1", 0]
        if second_color is not None:
            prompt["4"] = {"class_type": "EmptyImage",
                           "inputs": {"width": width, "height": height, "batch_size": 1, "color": second_color}}
            prompt["5"] = {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["4", 0]}}
            prompt["2"]["inputs"]["image"] = ["5", 0]
    else:
        del prompt["1"]
    return prompt


def history_error(entry: dict | None) -> str:
    """The exception message of a failed prompt's execution_error, or ""."""
    if not entry:
        return ""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return str(data.get("exception_message", ""))
    return ""


def history_status(entry: dict | None) -> str:
    """"success", "interrupted", "error" or "" (not finished)."""
    if not entry or entry.get("status", {}).get("completed") is None:
        return ""
    status = entry["status"]
    events = [m[0] for m in status.get("messages", [])]
    if "execution_interrupted" in events:
        return "interrupted"
    return status.get("status_str") or ""


def wait_pause_or_done(server, prompt_id: str, timeout: float = 60.0) -> tuple[dict | None, dict | None]:
    """Poll until the prompt's gate pauses (entry, None) or the prompt finishes (None, history)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in server.pending():
            if entry["prompt_id"] == prompt_id:
                return entry, None
        history = server.history(prompt_id)
        if history_status(history):
            return None, history
        time.sleep(0.02)
    raise TimeoutError(f"prompt {prompt_id} neither paused nor finished within {timeout}s")


def wait_finished(server, prompt_id: str, timeout: float = 60.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = server.history(prompt_id)
        if history_status(history):
            return history
        time.sleep(0.02)
    return None


def proc_status(pid: int) -> dict[str, int]:
    """Threads and resident memory (KiB) of a process, from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("Threads", "VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def preview_files(temp_dir: Path) -> list[str]:
    try:
        return sorted(name for name in os.listdir(temp_dir) if name.startswith(PREVIEW_PREFIX))
    except FileNotFoundError:
        return []


# --- disk snapshots -----------------------------------------------------------------------------


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path under `root` (no symlink followed) -> (kind, size, mtime_ns, inode, content digest).

    Paths whose relative form starts with one of `skip` are left out (ComfyUI's own log and database).
    """
    found: dict[str, tuple] = {}
    root = Path(root)
    if not root.exists():
        return found
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel.startswith(skip):
                continue
            info = os.lstat(path)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("dir",)
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                found[rel] = ("file", info.st_size, info.st_mtime_ns, info.st_ino, digest)
    return found


def snapshot_diff(before: dict, after: dict) -> list[str]:
    changes = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            changes.append(f"removed {key}")
        elif key not in before:
            changes.append(f"created {key}")
        elif before[key] != after[key]:
            changes.append(f"changed {key}")
    return changes


# --- inotify: who touched the canaries ------------------------------------------------------------

IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE = 0x20, 0x40, 0x80, 0x100
IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_ISDIR = 0x200, 0x400, 0x800, 0x40000000
_WATCH_MASK = (IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_FROM | IN_MOVED_TO
               | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)
_EVENT_NAMES = {IN_ACCESS: "read", IN_MODIFY: "write", IN_ATTRIB: "attrib", IN_CLOSE_WRITE: "close-write",
                IN_OPEN: "open", IN_MOVED_FROM: "moved-from", IN_MOVED_TO: "moved-to", IN_CREATE: "create",
                IN_DELETE: "delete", IN_DELETE_SELF: "delete-self", IN_MOVE_SELF: "move-self"}


class CanaryWatch:
    """Records every open, read or write of watched folders' entries, by any process (Linux inotify).

    Reads leave no trace on disk, so this is how the suite proves a canary outside gate_bus was never
    even opened. `only_names` limits a watch to some entries of a folder (the canary files planted in a
    folder that ComfyUI itself lists, such as input/).
    """

    def __init__(self):
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._watches: dict[int, tuple[str, frozenset | None]] = {}
        self.events: list[str] = []

    def watch(self, folder: Path, only_names: set[str] | None = None) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _WATCH_MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")
        self._watches[wd] = (str(folder), frozenset(only_names) if only_names else None)

    def drain(self) -> list[str]:
        while True:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if not ready:
                break
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16: offset + 16 + length].split(b"\0", 1)[0].decode(errors="replace")
                offset += 16 + length
                folder, only = self._watches.get(wd, ("?", None))
                if only is not None and name not in only:
                    continue
                kinds = [label for bit, label in _EVENT_NAMES.items() if mask & bit]
                if kinds:
                    self.events.append(f"{'+'.join(kinds)} {os.path.join(folder, name)}")
        return self.events

    def close(self) -> None:
        self.drain()
        os.close(self._fd)


# --- mounts for disk trouble ---------------------------------------------------------------------


class MountError(RuntimeError):
    pass


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise MountError(f"mount -t tmpfs {folder}: {done.stderr.strip() or done.returncode}")


def remount(folder: Path, mode: str) -> None:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        raise MountError(f"remount,{mode} {folder}: {done.stderr.strip() or done.returncode}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def can_mount() -> str | None:
    """None if this process may mount a tmpfs; else the reason a disk-trouble test must skip."""
    if not os.path.exists("/proc/mounts"):
        return "disk trouble needs Linux mounts (/proc/mounts is missing)"
    probe = Path(tempfile.mkdtemp(prefix="datasete-mount-probe-"))
    try:
        mount_tmpfs(probe, "64k")
    except (MountError, FileNotFoundError) as exc:
        probe.rmdir()
        return ("disk trouble skipped: making a read-only or full disk needs permission to mount a tmpfs "
                f"(root or CAP_SYS_ADMIN): {exc}")
    unmount(probe)
    probe.rmdir()
    return None


def fill_disk(folder: Path) -> Path:
    """Write a filler file in `folder` until the file system is full; returns its path."""
    filler = folder / "filler.bin"
    chunk = b"\xa5" * 65536
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    # Finish with smaller writes so not even a page is left.
    with open(filler, "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\xa5" * 512)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
