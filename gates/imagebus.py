"""Disk-backed image bus: named slots under ComfyUI's input/gate_bus/<id>/. Stdlib only.

A slot is a folder holding image.png (frame 0), frame_0001.png ... for the rest
of a batch, mask.png and slot.json (the file format lives in slots.py; this
module only knows folders and atomic swaps).

Safety rules, decided here once:
- A slot id is 1 to 64 characters of A-Z a-z 0-9 _ . - that does not start with
  "." or "-", does not end with ".", and is not a Windows device name (CON, NUL,
  COM1, ...). Such an id cannot name "..", an absolute path, a separator or a
  name that means something else on another system.
- The gate_bus folder itself may be a symbolic link (an input folder on another
  disk is a normal setup): it is resolved once. Inside it, a slot folder that is
  a symbolic link (or Windows junction) is refused for reading, writing and
  deleting, and so is any file inside a slot that is a link; a publish never
  writes through an existing file, it only creates files in a folder it has
  just made.
- A publish writes a complete new folder beside the slot and swaps it in with
  one atomic exchange (renameat2 on Linux, renamex_np on macOS), so a reader
  sees the old slot or the new one, never a mix. A crash mid-publish leaves the
  old slot whole and a hidden staging folder that `sweep_staging` removes.
- Where there is no atomic exchange (Windows, some network and FUSE file
  systems) a publish holds the slot's lock (a hidden folder beside it) while it
  moves the old slot aside and the new one in. A reader or a listing that finds
  the slot missing while that lock is held waits for the swap instead of
  answering "no slot".
- A read pins one version of the slot (an open folder handle where the system
  has them, else a before/after identity check) and retries on the new version
  if a publish swapped it meanwhile.
- Windows refuses to rename or delete a folder while any file in it is open (a
  reader, a virus scanner, the indexer): every rename and removal on a slot path
  retries that for a bounded time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .constants import (
    SLOT_ID_PATTERN,
    SLOT_IMAGE,
    SLOT_STAGING_PREFIX,
)
from .storage import is_remote

# Windows maps these names to devices in any folder, with or without an extension.
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{n}" for stem in ("COM", "LPT") for n in "123456789"
}

# A read that keeps losing the race against publishes gives up after this many versions.
READ_RETRIES = 64
# Staging leftovers of a live process are kept this long; no publish takes an hour.
STALE_STAGING_SECONDS = 3600
# Without an atomic exchange: a swap holds the slot's lock for two renames (plus Windows retries).
# A publisher waits this long for another's swap; a lock this old is taken to be stuck; a reader
# that finds the slot missing waits this long for the swap in flight to put the new version in.
LOCK_WAIT_SECONDS = 30.0
LOCK_STALE_SECONDS = 60.0
SWAP_WAIT_SECONDS = 5.0
# How long a rename or removal is retried while Windows reports the folder in use.
SHARING_RETRY_SECONDS = 2.0

# Staging folders carry the pid and a tag unique to this process, so a restart
# that happens to get the same pid (containers) still recognises old leftovers.
_PROCESS_TAG = secrets.token_hex(4)

_WINDOWS = os.name == "nt"
_FILE_ATTRIBUTE_REPARSE_POINT = 0x400
# Only Windows reports a folder in use as PermissionError; elsewhere that error is final.
_RETRY_SHARING = _WINDOWS
_LOCK_PREFIX = SLOT_STAGING_PREFIX + "lock-"


class SlotIdError(ValueError):
    """A slot id that could name a path outside gate_bus, or that is not portable."""


class SlotError(OSError):
    """A slot that cannot be read or written; the message names the slot."""


class SlotNotFound(SlotError):
    """The slot does not exist or is empty: nothing was ever published to it."""


# --- ids and paths --------------------------------------------------------------------

def validate_id(bus_id) -> str:
    """Return `bus_id` if it is a safe slot id, else raise SlotIdError naming it."""
    if not isinstance(bus_id, str):
        raise SlotIdError(f"slot id must be a string, got {type(bus_id).__name__} {bus_id!r}")
    if not SLOT_ID_PATTERN.fullmatch(bus_id):
        raise SlotIdError(
            f"invalid slot id {bus_id!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -, "
            "not starting with . or -")
    if bus_id.endswith("."):
        # Windows drops a trailing dot, so "a." and "a" would be the same folder there.
        raise SlotIdError(f"invalid slot id {bus_id!r}: it may not end with a dot")
    stem = bus_id.split(".", 1)[0]
    if stem.upper() in _RESERVED_NAMES:
        raise SlotIdError(f"invalid slot id {bus_id!r}: {stem} is a reserved device name on Windows")
    return bus_id


def is_valid_id(name) -> bool:
    try:
        validate_id(name)
    except SlotIdError:
        return False
    return True


def _is_link(st: os.stat_result) -> bool:
    """A symbolic link, or on Windows any reparse point (junctions are not symlinks to Python)."""
    return stat.S_ISLNK(st.st_mode) or bool(getattr(st, "st_file_attributes", 0) & _FILE_ATTRIBUTE_REPARSE_POINT)


def _lstat(path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def bus_root(base) -> Path:
    """The gate_bus folder with any symbolic link in its own path resolved."""
    return Path(os.path.realpath(base))


def bus_dir(base, bus_id) -> Path:
    """The slot folder for a valid id; refuses an id or a link that would leave `base`."""
    if is_remote(base):
        from .storage import s3slots

        return s3slots.slot_url(base, bus_id)
    validate_id(bus_id)
    root = bus_root(base)
    slot = root / bus_id
    st = _lstat(slot)
    if st is not None and _is_link(st):
        raise SlotIdError(f"slot {bus_id!r} is a symbolic link; slots must be real folders inside {root}")
    return slot


# list_ids keeps, per gate_bus folder, the names of its candidate folders and whether each
# held an image.png when last checked.
# - The names are reused while gate_bus's identity, mtime and link count are unchanged (any
#   folder added, removed or renamed in it changes them). They are only trusted once that
#   mtime is older than the file system's timestamp step, so a change in the same tick as the
#   scan cannot hide behind an equal mtime: 0.1 s where mtimes have sub-second digits (the
#   kernel's clock tick is at most 10 ms), else 2 s (FAT's step; HFS+ and ext3 have 1 s).
# - A folder that appeared since an earlier listing is checked on every call for a while,
#   so a slot made by hand (mkdir, then image.png) is listed as soon as its image exists.
# - Every folder is checked again at least every _LISTING_RECHECK_NS; between those checks an
#   image.png added to or removed from an older folder by hand (not by the bus, whose publish
#   and delete rename folders) can go unseen for up to that long. Checking 100,000 folders
#   costs 100,000 system calls, which is what this saves on most calls.
_LISTING_SETTLE_FINE_NS = 100_000_000
_LISTING_SETTLE_COARSE_NS = 2_000_000_000
_LISTING_RECHECK_NS = 2_000_000_000
_LISTING_FRESH_NS = 30_000_000_000


class _Listing:
    __slots__ = ("stamp", "names", "name_set", "holds", "fresh", "unknown", "checked_at", "id_set", "ids")

    def __init__(self, stamp, names, name_set, holds, fresh, unknown, checked_at, id_set):
        self.stamp = stamp            # None: rescan the names on the next call
        self.names = names            # candidate folder names
        self.name_set = name_set
        self.holds = holds            # name -> held an image.png when last checked
        self.fresh = fresh            # name -> when it first appeared (monotonic ns)
        self.unknown = unknown        # names not checked yet
        self.checked_at = checked_at  # when every name was last checked (monotonic ns)
        self.id_set = id_set          # names that hold an image
        self.ids = None               # sorted(id_set), while it does not change


_listing_cache: dict[str, _Listing] = {}
_listing_lock = threading.Lock()


def list_ids(base) -> list[str]:
    """Sorted ids of the slots that hold an image; empty, linked, staging and foreign folders are left out.

    Cached as described above _LISTING_RECHECK_NS: a call while nothing changed costs one
    stat; a folder added, removed or renamed, or a slot made by hand, shows at once.
    """
    if is_remote(base):
        from .storage import s3slots

        return s3slots.list_ids(base)
    key = os.fspath(base)
    try:
        before = os.stat(key)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not stat.S_ISDIR(before.st_mode):
        return []
    stamp = (before.st_dev, before.st_ino, before.st_mtime_ns, before.st_ctime_ns, before.st_nlink)
    with _listing_lock:
        listing = _listing_cache.get(key)
        before_ids = listing.ids if listing is not None else None
        now = time.monotonic_ns()
        if listing is None or listing.stamp is None or listing.stamp != stamp:
            started = time.time_ns()
            try:
                names = _candidate_folders(key, listing.name_set if listing else frozenset())
            except (FileNotFoundError, NotADirectoryError):
                _listing_cache.pop(key, None)
                return []
            fine = before.st_mtime_ns % 1_000_000_000 != 0
            settled = started - before.st_mtime_ns > (_LISTING_SETTLE_FINE_NS if fine else _LISTING_SETTLE_COARSE_NS)
            listing = _relisted(listing, stamp if settled else None, names, now)
            _listing_cache[key] = listing
        if now - listing.checked_at >= _LISTING_RECHECK_NS:
            due = listing.names
            listing.checked_at = now
        else:
            for name, seen in list(listing.fresh.items()):
                if now - seen > _LISTING_FRESH_NS:
                    del listing.fresh[name]
            due = sorted(listing.unknown.union(listing.fresh))
        if due:
            found = set(_holding_an_image(key, due))
            holds, id_set = listing.holds, listing.id_set
            for name in due:
                holding = name in found
                if holds.get(name) is not holding:
                    holds[name] = holding
                    if holding:
                        id_set.add(name)
                    else:
                        id_set.discard(name)
                    listing.ids = None
            listing.unknown.clear()
        if listing.ids is None:
            listing.ids = sorted(listing.id_set)
        ids = listing.ids
    # A slot swapped without an atomic exchange is missing for an instant: one that was listed and is
    # missing now is only left out once it is really gone (see _confirm_missing); so is one whose swap
    # is in flight (its lock is there), which a first listing or a cache that looked mid-swap cannot know.
    doubtful = set() if before_ids is None or ids is before_ids else set(before_ids).difference(ids)
    if not _can_exchange(Path(key)):
        doubtful |= _mid_swap(key).difference(ids)
    kept = [bus_id for bus_id in sorted(doubtful) if _still_a_slot(key, bus_id)]
    if not kept:
        return list(ids)
    with _listing_lock:
        # The cache saw the slot between two renames: put it back, or the next call, comparing against
        # a cache that forgot it, would leave it out without looking.
        listing = _listing_cache.get(key)
        if listing is not None:
            for bus_id in kept:
                listing.holds[bus_id] = True
                listing.id_set.add(bus_id)
            listing.ids = None
    return sorted(set(ids).union(kept))


def _mid_swap(key: str) -> set[str]:
    """Ids that may have been between two renames while the folder was listed: those whose swap lock is
    there now, and those whose folder is there now (a swap that ended after the listing)."""
    names = []
    try:
        with os.scandir(key) as entries:
            for entry in entries:
                names.append(entry.name[len(_LOCK_PREFIX):] if entry.name.startswith(_LOCK_PREFIX) else entry.name)
    except OSError:
        return set()
    return {name for name in names if is_valid_id(name)}


def _still_a_slot(key: str, bus_id: str) -> bool:
    """A slot listed before and not now: gone (deleted, emptied by hand) or caught between two renames.

    A swap without exchange only ever shows the slot whole or not at all, so a folder that is there
    without an image was emptied by hand, and one that is missing is waited for (_confirm_missing).
    Each look can meet the next swap of a publish loop, hence a few rounds.
    """
    slot = Path(key, bus_id)
    for _ in range(4):
        if _lstat(slot) is None:
            if _confirm_missing(slot):
                return False
            continue  # it came back: look at what it holds
        if _holding_an_image(key, [bus_id]):
            return True
        if _lstat(slot) is not None:
            return _holds_an_image_when_still(key, slot)
    return True  # in and out on every look: a slot being published over and over


def _holds_an_image_when_still(key: str, slot: Path) -> bool:
    """A folder seen there, then not seen holding an image: emptied by hand, or a whole swap went by
    between the two looks (the old folder moved aside, the new one moved in). Without an atomic
    exchange, look once more while holding the slot's lock, when no swap is between its renames.
    (A reader that cannot take the lock, say on a read-only folder, answers from what it saw.)"""
    if _can_exchange(slot.parent):
        return False  # the folder is never missing its image mid-swap there: it was emptied
    try:
        with _swap_lock(slot):
            return bool(_holding_an_image(key, [slot.name]))
    except OSError:
        return False


def _relisted(previous: _Listing | None, stamp, names: list[str], now: int) -> _Listing:
    """A listing of `names` that keeps what is known of the names it had before."""
    name_set = frozenset(names)
    if previous is None:
        return _Listing(stamp, names, name_set, {}, {}, set(names), 0, set())
    added, removed = name_set - previous.name_set, previous.name_set - name_set
    holds, id_set = previous.holds, previous.id_set
    for name in removed | added:  # a name that comes back is a new folder: check it again
        holds.pop(name, None)
        id_set.discard(name)
    fresh = {name: seen for name, seen in previous.fresh.items() if name in name_set}
    fresh.update(dict.fromkeys(added, now))
    listing = _Listing(stamp, names, name_set, holds, fresh, set(added) | previous.unknown & name_set,
                       previous.checked_at, id_set)
    return listing


def _candidate_folders(base: str, known: frozenset = frozenset()) -> list[str]:
    """Names of the real folders in `base` whose names are valid ids (no stat on Linux: d_type).

    Names in `known` were valid before: only their folder-ness is checked again.
    """
    if os.name == "nt":
        names = []
        with os.scandir(base) as entries:
            for entry in entries:
                try:
                    if entry.name[0] != "." and is_valid_id(entry.name) and entry.is_dir(follow_symlinks=False) \
                            and not _is_link(entry.stat(follow_symlinks=False)):  # junctions: free here
                        names.append(entry.name)
                except OSError:
                    continue
        return names
    with os.scandir(base) as entries:
        folders = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    return [name for name in folders if name in known or (name[0] != "." and is_valid_id(name))]


def _holding_an_image(base: str, candidates: list[str]) -> list[str]:
    """The candidates whose image.png is a regular file (not a link): one cheap system call each.

    access() answers "no" without raising, which keeps the common miss cheap; the hits are
    then checked to be regular files.
    """
    suffix = os.sep + SLOT_IMAGE
    if not (os.access in os.supports_dir_fd and os.lstat in os.supports_dir_fd):
        ids = []
        for name in candidates:
            image = _lstat(os.path.join(base, name, SLOT_IMAGE))
            if image is not None and stat.S_ISREG(image.st_mode):
                ids.append(name)
        return ids
    try:
        fd = os.open(base, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (FileNotFoundError, NotADirectoryError):
        return []
    try:
        access, lstat, is_regular, present = os.access, os.lstat, stat.S_ISREG, os.F_OK
        ids = []
        for name in candidates:
            if not access(name + suffix, present, dir_fd=fd):
                continue
            try:
                if is_regular(lstat(name + suffix, dir_fd=fd).st_mode):
                    ids.append(name)
            except OSError:
                continue
        return ids
    finally:
        os.close(fd)


def delete_id(base, bus_id) -> bool:
    """Remove a slot at once (readers see it whole or gone); True if it existed."""
    if is_remote(base):
        from .storage import s3slots

        return s3slots.delete_id(base, bus_id)
    slot = bus_dir(base, bus_id)
    if _lstat(slot) is None and _lock_is_live(_lock_path(slot)) is not True:
        return False
    doomed = slot.parent / _staging_name(bus_id, "rm")
    try:
        with _swap_lock(slot) if not _can_exchange(slot.parent) else contextlib.nullcontext():
            _rename_retrying(slot, doomed)
    except FileNotFoundError:
        return False
    _remove(doomed)
    return True


# --- publishing -----------------------------------------------------------------------

def _staging_name(bus_id: str, kind: str) -> str:
    return f"{SLOT_STAGING_PREFIX}{kind}-{os.getpid()}-{_PROCESS_TAG}-{secrets.token_hex(6)}-{bus_id}"


def _parse_staging_name(name: str) -> tuple[str, int, str, str] | None:
    """(kind, pid, process tag, slot id) of a staging folder name, or None for anything else."""
    if not name.startswith(SLOT_STAGING_PREFIX):
        return None
    parts = name[len(SLOT_STAGING_PREFIX):].split("-", 4)
    if len(parts) != 5 or not parts[1].isdigit():
        return None
    kind, pid, tag, _random, bus_id = parts
    return kind, int(pid), tag, bus_id


def publish(base, bus_id, write_files: Callable[[Path], None]) -> Path:
    """Atomically replace slot `bus_id` with the files `write_files(folder)` writes.

    The files are written and flushed to a staging folder beside the slot, then
    exchanged with the slot in one step. If `write_files` raises, the old slot is
    untouched and the staging folder removed.
    """
    if is_remote(base):
        raise TypeError("publish writes folders; on an object store slots.bus_write uploads through s3slots")
    slot = bus_dir(base, bus_id)
    root = slot.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = root / _staging_name(bus_id, "new")
    staging.mkdir()
    try:
        write_files(staging)
        _fsync_tree(staging)
        previous = _swap_in(staging, slot)
    except BaseException:
        _remove(staging)
        raise
    _remove(previous)
    _fsync_dir(root)
    return slot


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or link, without ever following a link; errors ignored."""
    st = _lstat(path)
    if st is None:
        return
    try:
        if stat.S_ISDIR(st.st_mode) and not _is_link(st):
            _retrying(shutil.rmtree, path)
        elif _WINDOWS and stat.S_ISDIR(st.st_mode):
            _retrying(os.rmdir, path)  # a junction: removes the link, not its target
        else:
            _retrying(os.unlink, path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)  # what is left is a leftover for sweep_staging


def _fsync_tree(folder: Path) -> None:
    flags = os.O_RDWR | getattr(os, "O_BINARY", 0) if _WINDOWS else os.O_RDONLY
    for entry in os.scandir(folder):
        fd = os.open(entry.path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make the folder's entries durable where the system allows opening folders (not Windows)."""
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


_AT_FDCWD = -100
_LINUX_RENAME_EXCHANGE = 2
_MACOS_RENAME_SWAP = 2


def _load_exchange() -> Callable[[bytes, bytes], int] | None:
    """A C function that swaps two paths atomically, or None where the system has none."""
    if _WINDOWS or not hasattr(os, "uname"):
        return None
    system = os.uname().sysname
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if system == "Linux":
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            return lambda a, b: fn(_AT_FDCWD, a, _AT_FDCWD, b, _LINUX_RENAME_EXCHANGE)
        if system == "Darwin":
            fn = libc.renamex_np
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            return lambda a, b: fn(a, b, _MACOS_RENAME_SWAP)
    except (OSError, AttributeError):
        return None
    return None


_exchange_fn = _load_exchange()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step; False where the system (or file system) cannot."""
    if _exchange_fn is None:
        return False
    if _exchange_fn(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    if err == errno.ENOENT:
        raise FileNotFoundError(err, os.strerror(err), str(b))
    raise OSError(err, os.strerror(err), str(b))


def _retrying(action, *args):
    """action(*args), retried with a growing pause for up to SHARING_RETRY_SECONDS while Windows reports a
    file or folder in use (a sharing violation surfaces as PermissionError); elsewhere it runs once."""
    deadline = None
    pause = 0.005
    while True:
        try:
            return action(*args)
        except PermissionError:
            if not _RETRY_SHARING:
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + SHARING_RETRY_SECONDS
            if now >= deadline:
                raise
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.1)


def _rename_retrying(src: Path, dst: Path) -> None:
    _retrying(os.rename, src, dst)


def _occupied(exc: OSError) -> bool:
    """A rename failed because its target exists (a non-empty folder on POSIX, anything on Windows)."""
    return isinstance(exc, FileExistsError) or exc.errno in (errno.EEXIST, errno.ENOTEMPTY)


# File systems (by device) found without an atomic exchange although the system has one.
_no_exchange_devices: set[int] = set()


def _can_exchange(root: Path) -> bool:
    if _exchange_fn is None:
        return False
    try:
        return os.stat(root).st_dev not in _no_exchange_devices
    except OSError:
        return True


def _swap_in(staging: Path, slot: Path) -> Path:
    """Put `staging` in place of `slot`; returns the path that now holds the previous slot (if any), to remove."""
    if not _can_exchange(slot.parent):
        with _swap_lock(slot):
            return _swap_by_renames(staging, slot)
    for _ in range(READ_RETRIES):
        if _lstat(slot) is None:
            try:
                _rename_retrying(staging, slot)
                return staging
            except OSError as exc:
                if not (_occupied(exc) or exc.errno == errno.EACCES) or _lstat(slot) is None:
                    raise
                continue  # another publisher created the slot first: exchange with it
        try:
            if _exchange(staging, slot):
                return staging
        except FileNotFoundError:
            continue  # the slot was deleted meanwhile: rename into place
        try:  # this file system cannot exchange: every later publish on it takes the locked fallback
            _no_exchange_devices.add(os.stat(slot.parent).st_dev)
        except OSError:
            pass
        with _swap_lock(slot):
            return _swap_by_renames(staging, slot)
    raise SlotError(f"slot {slot.name!r}: could not swap in the new files (too much contention)")


def _swap_by_renames(staging: Path, slot: Path) -> Path:
    """The swap without an atomic exchange, under the slot's lock: the old slot aside, the new one in.

    Readers that find the slot missing between the two renames see the lock and wait. A crash in
    between leaves the old slot under a name that sweep_staging renames back.
    """
    if _lstat(slot) is None:
        _rename_retrying(staging, slot)
        return staging
    aside = slot.parent / _staging_name(slot.name, "old")
    try:
        _rename_retrying(slot, aside)
    except FileNotFoundError:  # deleted meanwhile by a process that did not know this file system
        _rename_retrying(staging, slot)
        return staging
    try:
        _rename_retrying(staging, slot)
    except OSError as exc:
        if _occupied(exc) and _lstat(slot) is not None:
            # A publisher that did not take the lock (it had not yet found that this file system has
            # no exchange) put its version in the gap: that one is the newer, ours is dropped.
            _remove(staging)
            return aside
        _rename_retrying(aside, slot)
        raise
    return aside


# --- the slot lock (only where there is no atomic exchange) --------------------------------

def _lock_path(slot: Path) -> Path:
    return slot.parent / (_LOCK_PREFIX + slot.name)


def _lock_is_live(marker: Path) -> bool | None:
    """None: no lock; True: held by a live process; False: left by a dead one, or held implausibly long."""
    try:
        st = os.lstat(marker)
        owners = os.listdir(marker)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return True  # cannot tell: waits on it are bounded anyway
    if time.time() - st.st_mtime > LOCK_STALE_SECONDS:
        return False
    for owner in owners:
        pid, _, rest = owner.partition("-")
        if pid.isdigit():
            if int(pid) == os.getpid():
                return rest.split("-", 1)[0] == _PROCESS_TAG  # else an earlier process that had our pid
            return _process_alive(int(pid))
    return True


@contextlib.contextmanager
def _swap_lock(slot: Path):
    """Hold the slot's lock: its folder, named after the slot, holding a file named after its owner.

    It is taken by renaming a ready-made folder (owner file inside) onto that name, which fails while
    another holds it, on every system; so the owner is known from the instant the lock exists.
    """
    marker = _lock_path(slot)
    ready = slot.parent / _staging_name(slot.name, "lk")
    owner = f"{os.getpid()}-{_PROCESS_TAG}-{secrets.token_hex(4)}"
    ready.mkdir()
    try:
        with open(ready / owner, "xb"):
            pass
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        pause = 0.0005
        while True:
            try:
                _rename_retrying(ready, marker)
                break
            except OSError as exc:
                if not _occupied(exc):
                    raise
            live = _lock_is_live(marker)
            if live is False:
                _break_lock(slot, marker)
            elif time.monotonic() > deadline:
                raise SlotError(f"slot {slot.name!r}: another publish has held its lock ({marker.name}) "
                                f"for over {LOCK_WAIT_SECONDS:g} s")
            elif live:
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
    except BaseException:
        _remove(ready)
        raise
    try:
        yield
    finally:
        if os.path.lexists(marker / owner):  # else it was broken as stuck meanwhile
            doomed = slot.parent / _staging_name(slot.name, "rm")
            try:
                _rename_retrying(marker, doomed)
                _remove(doomed)
            except OSError:
                pass  # a leftover for the next publisher (stale by then) or sweep_staging


def _break_lock(slot: Path, marker: Path) -> None:
    """Remove a lock left by a dead process; give it back if a live one took it in the meantime."""
    doomed = slot.parent / _staging_name(slot.name, "rm")
    try:
        os.rename(marker, doomed)
    except OSError:
        return
    if _lock_is_live(doomed):
        with contextlib.suppress(OSError):
            os.rename(doomed, marker)
        return  # never remove a live lock; if it could not go back, it is a leftover for sweep_staging
    _remove(doomed)


# --- reading --------------------------------------------------------------------------

_DIR_FD_READS = (
    not _WINDOWS
    and hasattr(os, "O_DIRECTORY")
    and os.open in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
    and os.listdir in os.supports_fd
)


class SlotReader:
    """Reads the files of one version of a slot. Links inside the slot are refused."""

    def __init__(self, bus_id: str, folder: Path, dir_fd: int | None = None):
        self.bus_id = bus_id
        self.folder = folder
        self._fd = dir_fd

    def names(self) -> list[str]:
        return sorted(os.listdir(self._fd if self._fd is not None else self.folder))

    def stat(self, name: str) -> os.stat_result:
        if self._fd is not None:
            return os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        return os.lstat(self.folder / name)

    def exists(self, name: str) -> bool:
        try:
            self.stat(name)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, name: str) -> bytes:
        st = self.stat(name)
        if _is_link(st):
            raise SlotError(f"slot {self.bus_id!r}: {name} is a symbolic link; slot files must be real files")
        if not stat.S_ISREG(st.st_mode):
            raise SlotError(f"slot {self.bus_id!r}: {name} is not a regular file")
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            if self._fd is not None:
                fd = os.open(name, flags, dir_fd=self._fd)
            else:
                fd = os.open(self.folder / name, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link after the check above
                raise SlotError(f"slot {self.bus_id!r}: {name} is a symbolic link") from exc
            raise
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


def _identity(st: os.stat_result | None) -> tuple | None:
    return None if st is None else (st.st_dev, st.st_ino, st.st_ctime_ns)


def _backoff(attempt: int) -> None:
    if attempt >= 2:
        time.sleep(min(0.001 * attempt, 0.05))


def read_slot(base, bus_id, read: Callable[[SlotReader], object]):
    """Run `read(reader)` on one consistent version of slot `bus_id` and return its result.

    If a publish swaps the slot while `read` runs (a file vanishes, or `read`
    fails on a version that is no longer the slot), `read` runs again on the
    new version, so the result never mixes versions and a concurrent publish
    is never reported as a broken slot. Raises SlotNotFound when the slot does
    not exist or is empty.
    """
    if is_remote(base):
        from .storage import s3slots

        return s3slots.read_slot(base, bus_id, read)
    slot = bus_dir(base, bus_id)
    attempt, deadline = 0, None
    while attempt < READ_RETRIES:
        _backoff(attempt)
        try:
            if _DIR_FD_READS:
                outcome = _read_pinned(slot, bus_id, read)
            else:
                outcome = _read_checked(slot, bus_id, read)
        except _SlotMissing:
            deadline = deadline or time.monotonic() + SWAP_WAIT_SECONDS
            if time.monotonic() >= deadline or _confirm_missing(slot):
                raise _not_found(bus_id, slot) from None
            continue  # it was between the two renames of a swap without exchange: read the new version
        if outcome is not _CHANGED:
            return outcome
        attempt += 1
    raise SlotError(f"slot {bus_id!r}: kept changing while being read")


def _confirm_missing(slot: Path) -> bool:
    """True when `slot` is really absent, False when it is there again (it was mid-swap).

    Without an atomic exchange a publish moves the old slot aside before the new one in, holding the
    slot's lock from before the first rename to after the second. So: wait while a live lock is held;
    and where this process itself swaps without exchange, look once more while holding the lock, when
    no swap can be between its renames. (A reader that cannot take the lock, say on a read-only
    folder, answers from what it saw.)
    """
    if _lstat(slot) is not None:
        return False
    deadline = time.monotonic() + SWAP_WAIT_SECONDS
    while _lock_is_live(_lock_path(slot)) and time.monotonic() < deadline:
        time.sleep(0.0005)
        if _lstat(slot) is not None:
            return False
    if _lstat(slot) is not None:
        return False
    if _can_exchange(slot.parent):
        return True
    try:
        with _swap_lock(slot):
            return _lstat(slot) is None
    except OSError:
        return True


_CHANGED = object()


class _SlotMissing(SlotNotFound):
    """The slot's folder is not there (as opposed to there and empty)."""


def _not_found(bus_id: str, slot: Path, cls=SlotNotFound) -> SlotNotFound:
    return cls(f"slot {bus_id!r} does not exist or is empty ({slot})")


def _read_pinned(slot: Path, bus_id: str, read):
    try:
        fd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _not_found(bus_id, slot, _SlotMissing) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            st = _lstat(slot)
            if exc.errno == errno.ELOOP or (st is not None and _is_link(st)):
                raise SlotIdError(f"slot {bus_id!r} is a symbolic link") from exc
            raise SlotError(f"slot {bus_id!r} is not a folder") from exc
        raise
    try:
        return _read_version(slot, bus_id, SlotReader(bus_id, slot, fd), lambda: _identity(os.fstat(fd)), read)
    finally:
        os.close(fd)


def _read_checked(slot: Path, bus_id: str, read):
    """Where folders cannot be held open: read by path and check that the folder stayed the same one."""
    before = _lstat(slot)
    if before is None:
        raise _not_found(bus_id, slot, _SlotMissing)
    if _is_link(before):
        raise SlotIdError(f"slot {bus_id!r} is a symbolic link")
    if not stat.S_ISDIR(before.st_mode):
        raise SlotError(f"slot {bus_id!r} is not a folder")
    held = _identity(before)
    return _read_version(slot, bus_id, SlotReader(bus_id, slot), lambda: held, read)


def _read_version(slot: Path, bus_id: str, reader: SlotReader, held_identity: Callable[[], tuple], read):
    """Run `read` on the version `reader` holds; _CHANGED when the slot stopped being that version."""

    def still_the_slot() -> bool:
        return held_identity() == _identity(_lstat(slot))

    try:
        if not reader.names():
            if still_the_slot():
                raise _not_found(bus_id, slot)
            return _CHANGED
        result = read(reader)
    except SlotNotFound:
        raise
    except Exception:
        # A version swapped out mid-read is being deleted file by file: retry on the new one.
        if not still_the_slot():
            return _CHANGED
        raise
    # Still the slot after the read: then it was the slot all along (a version swapped out
    # never comes back), so no file of it was being deleted while it was read.
    return result if still_the_slot() else _CHANGED


# --- leftovers ------------------------------------------------------------------------

def sweep_staging(base) -> int:
    """Clean up after publishes and deletes whose process died; returns how many entries it handled.

    A staging folder of a live process is left alone (it is mid-publish) unless it
    is hours old. A slot moved aside by a publish that died before putting the new
    one in place is moved back; everything else is removed.
    """
    if is_remote(base):
        from .storage import s3slots

        return s3slots.sweep(base)
    handled = 0
    root = bus_root(base)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        if entry.name.startswith(_LOCK_PREFIX):
            if _lock_is_live(Path(entry.path)) is False:  # its publish died; a live one is left alone
                _remove(Path(entry.path))
                handled += 1
            continue
        parsed = _parse_staging_name(entry.name)
        if parsed is None:
            if entry.name.startswith(SLOT_STAGING_PREFIX):
                _remove(Path(entry.path))  # unparseable: not from this version, and never a slot
                handled += 1
            continue
        kind, pid, tag, bus_id = parsed
        if pid == os.getpid() and tag == _PROCESS_TAG:
            continue  # a publish running in this process right now
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if pid != os.getpid() and _process_alive(pid) and age < STALE_STAGING_SECONDS:
            continue
        path = Path(entry.path)
        if kind == "old" and is_valid_id(bus_id) and _lstat(root / bus_id) is None:
            try:
                _rename_retrying(path, root / bus_id)
                handled += 1
                continue
            except OSError:
                pass
        _remove(path)
        handled += 1
    return handled


_swept: set[str] = set()
_swept_lock = threading.Lock()


def sweep_once(base) -> int:
    """`sweep_staging` the first time this process uses `base`; later calls do nothing."""
    key = str(base) if is_remote(base) else str(bus_root(base))
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    return sweep_staging(base)


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if _WINDOWS:
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0 only checks; on Windows os.kill would terminate, hence the branch above
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _windows_process_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    process_query_limited_information = 0x1000
    still_active = 259
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)
