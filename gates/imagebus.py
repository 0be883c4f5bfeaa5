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
- A read pins one version of the slot (an open folder handle where the system
  has them, else a before/after identity check) and retries on the new version
  if a publish swapped it meanwhile.
"""

from __future__ import annotations

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
    SLOT_MASK,
    SLOT_STAGING_PREFIX,
)

# Windows maps these names to devices in any folder, with or without an extension.
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{stem}{n}" for stem in ("COM", "LPT") for n in "123456789"
}

# A read that keeps losing the race against publishes gives up after this many versions.
READ_RETRIES = 64
# Staging leftovers of a live process are kept this long; no publish takes an hour.
STALE_STAGING_SECONDS = 3600

# Staging folders carry the pid and a tag unique to this process, so a restart
# that happens to get the same pid (containers) still recognises old leftovers.
_PROCESS_TAG = secrets.token_hex(4)

_WINDOWS = os.name == "nt"
_FILE_ATTRIBUTE_REPARSE_POINT = 0x400


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
    validate_id(bus_id)
    root = bus_root(base)
    slot = root / bus_id
    st = _lstat(slot)
    if st is not None and _is_link(st):
        raise SlotIdError(f"slot {bus_id!r} is a symbolic link; slots must be real folders inside {root}")
    return slot


def image_path(base, bus_id) -> Path:
    return bus_dir(base, bus_id) / SLOT_IMAGE


def mask_path(base, bus_id) -> Path:
    return bus_dir(base, bus_id) / SLOT_MASK


def has(base, bus_id) -> bool:
    """True if slot `bus_id` holds an image.png (whether it is readable is for the reader to say)."""
    return _lstat(image_path(base, bus_id)) is not None


def ensure_dir(base, bus_id) -> Path:
    slot = bus_dir(base, bus_id)
    slot.mkdir(parents=True, exist_ok=True)
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
        return list(listing.ids)


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
    slot = bus_dir(base, bus_id)
    if _lstat(slot) is None:
        return False
    doomed = slot.parent / _staging_name(bus_id, "rm")
    try:
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
        _remove(staging)
        raise
    _remove(staging)  # now holds the previous slot, if there was one
    _fsync_dir(root)
    return slot


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or link, without ever following a link; errors ignored."""
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode) and not _is_link(st):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        if _WINDOWS and stat.S_ISDIR(st.st_mode):
            os.rmdir(path)  # a junction: removes the link, not its target
        else:
            os.unlink(path)
    except OSError:
        pass


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


def _rename_retrying(src: Path, dst: Path) -> None:
    """os.rename, retried briefly on Windows, where a folder with a file open in it cannot be renamed."""
    for attempt in range(40 if _WINDOWS else 1):
        try:
            os.rename(src, dst)
            return
        except PermissionError:
            if not _WINDOWS or attempt == 39:
                raise
            time.sleep(0.05)


def _swap_in(staging: Path, slot: Path) -> None:
    """Put `staging` in place of `slot`; afterwards `staging` holds the old slot (or nothing)."""
    for _ in range(READ_RETRIES):
        if _lstat(slot) is None:
            try:
                os.rename(staging, slot)
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EACCES) or _lstat(slot) is None:
                    raise
                continue  # another publisher created the slot first: exchange with it
        try:
            if _exchange(staging, slot):
                return
        except FileNotFoundError:
            continue  # the slot was deleted meanwhile: rename into place
        # No atomic exchange here: move the old slot aside, then the new one in. A reader in
        # between sees no slot; a crash in between leaves the old slot under a name that
        # sweep_staging renames back.
        aside = slot.parent / _staging_name(slot.name, "old")
        try:
            _rename_retrying(slot, aside)
        except FileNotFoundError:
            continue
        try:
            os.rename(staging, slot)
        except OSError:
            os.rename(aside, slot)
            raise
        os.rename(aside, staging)
        return
    raise SlotError(f"slot {slot.name!r}: could not swap in the new files (too much contention)")


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
    slot = bus_dir(base, bus_id)
    for attempt in range(READ_RETRIES):
        _backoff(attempt)
        if _DIR_FD_READS:
            outcome = _read_pinned(slot, bus_id, read)
        else:
            outcome = _read_checked(slot, bus_id, read)
        if outcome is not _CHANGED:
            return outcome
    raise SlotError(f"slot {bus_id!r}: kept changing while being read")


_CHANGED = object()


def _not_found(bus_id: str, slot: Path) -> SlotNotFound:
    return SlotNotFound(f"slot {bus_id!r} does not exist or is empty ({slot})")


def _read_pinned(slot: Path, bus_id: str, read):
    try:
        fd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _not_found(bus_id, slot) from None
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
        raise _not_found(bus_id, slot)
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
    handled = 0
    root = bus_root(base)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
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
                os.rename(path, root / bus_id)
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
    key = str(bus_root(base))
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
