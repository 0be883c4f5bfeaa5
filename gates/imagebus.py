"""Disk-backed image bus: named slots under ComfyUI's input/gate_bus/<id>/. Stdlib only.

A slot is a folder holding image.png (frame 0), frame_0001.png ... for the rest
of a batch, mask.png and slot.json. A publish writes a complete new folder
beside the slot and swaps it in with one rename, so a reader sees the old slot
or the new one, never a mix; a crash mid-publish leaves the old slot whole and
a staging folder that the next sweep removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from .constants import (
    SLOT_ID_PATTERN,
    SLOT_IMAGE,
    SLOT_MASK,
    SLOT_STAGING_PREFIX,
)

# Windows maps these names to devices in any folder, with or without an extension.
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{n}" for stem in ("COM", "LPT") for n in list("123456789") + ["¹", "²", "³"]
}

READ_RETRIES = 8


class SlotIdError(ValueError):
    """A slot id that could name a path outside gate_bus, or that is not portable."""


class SlotError(OSError):
    """A slot that cannot be read or written; the message names the slot."""


def validate_id(bus_id) -> str:
    """Return `bus_id` if it is a safe slot id, else raise SlotIdError naming it."""
    if not isinstance(bus_id, str):
        raise SlotIdError(f"slot id must be a string, got {type(bus_id).__name__} {bus_id!r}")
    if not SLOT_ID_PATTERN.fullmatch(bus_id):
        raise SlotIdError(
            f"invalid slot id {bus_id!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -, "
            "not starting with . or -")
    if bus_id.endswith("."):
        raise SlotIdError(f"invalid slot id {bus_id!r}: it may not end with a dot")
    if bus_id.split(".", 1)[0].upper() in _RESERVED_NAMES:
        raise SlotIdError(f"invalid slot id {bus_id!r}: {bus_id.split('.', 1)[0]} is a reserved device name")
    if unicodedata.normalize("NFKC", bus_id) != bus_id:  # pragma: no cover - the pattern is ASCII only
        raise SlotIdError(f"invalid slot id {bus_id!r}")
    return bus_id


def bus_dir(base, bus_id) -> Path:
    """The slot folder for a valid id; refuses an id or a symlink that would leave `base`."""
    validate_id(bus_id)
    root = Path(os.path.realpath(base))
    slot = root / bus_id
    if slot.is_symlink():
        raise SlotIdError(f"slot {bus_id!r} is a symbolic link; slots must be real folders inside {root}")
    if os.path.dirname(os.path.realpath(slot)) != str(root):
        raise SlotIdError(f"slot {bus_id!r} resolves outside {root}")
    return slot


def image_path(base, bus_id) -> Path:
    return bus_dir(base, bus_id) / SLOT_IMAGE


def mask_path(base, bus_id) -> Path:
    return bus_dir(base, bus_id) / SLOT_MASK


def has(base, bus_id) -> bool:
    return image_path(base, bus_id).is_file()


def ensure_dir(base, bus_id) -> Path:
    slot = bus_dir(base, bus_id)
    slot.mkdir(parents=True, exist_ok=True)
    return slot


def list_ids(base) -> list[str]:
    """Sorted ids of the slots that hold an image; empty and half-written folders are left out."""
    try:
        entries = os.scandir(base)
    except (FileNotFoundError, NotADirectoryError):
        return []
    ids = []
    with entries:
        for entry in entries:
            name = entry.name
            if name[0] == "." or not SLOT_ID_PATTERN.fullmatch(name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, SLOT_IMAGE)):
                    ids.append(name)
            except OSError:
                continue
    ids.sort()
    return ids


def delete_id(base, bus_id) -> bool:
    """Remove a slot at once (readers see it whole or gone); True if it existed."""
    slot = bus_dir(base, bus_id)
    if not slot.exists():
        return False
    doomed = Path(os.path.realpath(base)) / _staging_name(bus_id, "rm")
    try:
        os.rename(slot, doomed)
    except FileNotFoundError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def _staging_name(bus_id: str, kind: str) -> str:
    return f"{SLOT_STAGING_PREFIX}{kind}-{os.getpid()}-{secrets.token_hex(6)}-{bus_id}"


def publish(base, bus_id, write_files: Callable[[Path], None]) -> Path:
    """Atomically replace slot `bus_id` with the files `write_files(folder)` writes.

    The files are written and flushed to a staging folder beside the slot, then
    exchanged with the slot in one step. If `write_files` raises, the old slot is
    untouched and the staging folder removed.
    """
    slot = bus_dir(base, bus_id)
    root = slot.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = root / _staging_name(bus_id, "new")
    staging.mkdir()
    try:
        write_files(staging)
        _fsync_tree(staging)
        _swap_in(staging, slot)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)  # now holds the previous slot, if there was one
    _fsync_dir(root)
    return slot


def _fsync_tree(folder: Path) -> None:
    for entry in os.scandir(folder):
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2():
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), str(b))
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, slot: Path) -> None:
    """Put `staging` in place of `slot`; afterwards `staging` holds the old slot (or nothing)."""
    for _ in range(READ_RETRIES):
        if not os.path.lexists(slot):
            try:
                os.rename(staging, slot)
                staging.mkdir()  # keep the caller's contract: staging exists and is removable
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                continue  # another publisher created the slot first: exchange with it
        try:
            if _exchange(staging, slot):
                return
        except FileNotFoundError:
            continue  # the slot was deleted meanwhile: rename into place
        # No atomic exchange here: move the old slot aside, then the new one in.
        aside = slot.parent / _staging_name(slot.name, "old")
        try:
            os.rename(slot, aside)
        except FileNotFoundError:
            continue
        os.rename(staging, slot)
        os.rename(aside, staging)
        return
    raise SlotError(f"slot {slot.name!r}: could not swap in the new files (too much contention)")


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        yield fd
    finally:
        os.close(fd)


class SlotReader:
    """Reads files of one version of a slot, pinned by an open folder handle."""

    def __init__(self, dir_fd: int, bus_id: str):
        self._fd = dir_fd
        self.bus_id = bus_id

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._fd, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=self._fd)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


class _SlotVanished(Exception):
    pass


def read_slot(base, bus_id, read: Callable[[SlotReader], object]):
    """Run `read(reader)` on one consistent version of slot `bus_id`.

    A publish that swaps the slot mid-read makes the old version vanish; the
    read is then retried on the new one, so the result never mixes versions.
    Raises FileNotFoundError when the slot has no image.
    """
    slot = bus_dir(base, bus_id)
    for _ in range(READ_RETRIES):
        try:
            with _open_dir(slot) as fd:
                reader = SlotReader(fd, bus_id)
                if not reader.exists(SLOT_IMAGE):
                    raise FileNotFoundError(errno.ENOENT, f"slot {bus_id!r} has no {SLOT_IMAGE}", str(slot))
                try:
                    return read(reader)
                except FileNotFoundError as exc:
                    raise _SlotVanished() from exc
        except _SlotVanished:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SlotIdError(f"slot {bus_id!r} is a symbolic link") from exc
            if exc.errno == errno.ENOENT and not isinstance(exc, FileNotFoundError):
                raise FileNotFoundError(exc.errno, f"slot {bus_id!r} does not exist", str(slot)) from exc
            raise
    raise SlotError(f"slot {bus_id!r}: kept changing while being read")


def sweep_staging(base) -> int:
    """Remove staging folders left by publishes whose process is gone; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(SLOT_STAGING_PREFIX):
            continue
        parts = entry.name[len(SLOT_STAGING_PREFIX):].split("-", 3)
        pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _process_alive(pid):
            continue
        if pid == os.getpid():
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
