"""The image pool format: a folder per pool, where the state of an item is the folder its PNG is in.

    input/gate_pool/<pool>/
      pending/ kept/ rejected/   <name>.png (RGB or RGBA) and, when the item has a caption, <name>.txt:
                                 exactly the caption in UTF-8 (no BOM, no newline added)
      .next                      the next number to hand out; max(names on disk) + 1 is its floor
      .index                     pixel hashes for skip_duplicates: a cache, checked against each
                                 file's size, mtime and inode, rebuilt from the files when it disagrees
      .lock                      held (flock) while the pool changes, so adders and deciders take turns

Names are 000001, 000002, ...: a counter that never hands out a number twice, even after files are
deleted or moved (the counter is written before the files it names). A person may move, delete or
drop files with a file manager; the folders are the only truth, so there is nothing to disagree with.

Crash safety (a SIGKILL at any instant leaves every item whole in exactly one folder):
- An add writes `.staging-add-…-<name>.txt` and `.staging-add-…-<name>.png` into pending/, flushes
  both, then renames the caption into place and the PNG last: a PNG never exists without its caption.
  A caption whose PNG is still staged when the adder died is finished (the staged PNG was complete
  before the caption moved); any other staging file is a leftover and removed.
- A decision puts the caption into the new folder first (a second hard link, or a flushed copy where
  the file system has no links), then renames the PNG, then removes the old caption: a PNG always has
  its caption beside it. The copy a killed move leaves behind is removed when it is the same file or
  the same bytes as the caption beside the PNG. Items half-moved by hand (a .txt and its .png in
  different folders) are put back together in the PNG's folder: the PNG's folder wins.
- A removal renames the PNG aside first, then the caption; a caption left behind by a removal that
  died is removed with its staged PNG.
The repairs run under the lock at the next use of the pool.

Same id rules, link refusals and no-escape guarantees as the disk bus (imagebus): pool ids and item
names are checked with its rules; a pool folder, a state folder or an item file that is a symbolic
link is refused; nothing is read or written outside gate_pool.

Pure: stdlib, numpy and imaging (Pillow); no torch and no ComfyUI at import.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import imagebus, imaging
from .constants import (
    POOL_COUNTER_FILE,
    POOL_INDEX_FILE,
    POOL_KEPT,
    POOL_LOCK_FILE,
    POOL_NAME_DIGITS,
    POOL_PENDING,
    POOL_REJECTED,
    POOL_STAGING_PREFIX,
    POOL_STATES,
)
from .storage import is_remote

log = logging.getLogger("datasete_gates")

# A name found in two folders (copied by hand) is listed once, in the first of these.
STATE_PRECEDENCE = (POOL_KEPT, POOL_REJECTED, POOL_PENDING)
# Waiting for another process's hold on a pool gives up after this long.
LOCK_TIMEOUT_SECONDS = 120.0
# Staging files of a live process are left alone this long; no add takes an hour.
STALE_STAGING_SECONDS = 3600
# The pixel index is rewritten whole when it holds this many more lines than items (it is appended to).
INDEX_SLACK = 256

_WINDOWS = os.name == "nt"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_PROCESS_TAG = secrets.token_hex(4)


class PoolIdError(imagebus.SlotIdError):
    """A pool id (or item name) that could name a path outside gate_pool, or that is not portable."""


class PoolError(OSError):
    """A pool that cannot be read or changed; the message names the pool (and the file)."""


class PoolNotFound(PoolError):
    """No pool of that name exists."""


class ItemNotFound(PoolError):
    """No item of that name is in the pool."""


class CaptionError(ValueError):
    """Captions that do not fit the frames (the message says how many of each)."""


# --- ids and paths ---------------------------------------------------------------------------------

def validate_pool_id(pool) -> str:
    """`pool` if it is a valid pool id (the bus's slot id rules), else PoolIdError naming it."""
    try:
        return imagebus.validate_id(pool)
    except imagebus.SlotIdError as exc:
        raise PoolIdError(str(exc).replace("slot id", "pool id", 1)) from None


def pool_id_problem(pool) -> str | None:
    """Why `pool` is not a valid pool id (the message names it), or None: what a node's VALIDATE_INPUTS
    answers when a prompt is queued."""
    try:
        validate_pool_id(pool)
    except PoolIdError as exc:
        return str(exc)
    return None


def validate_item_name(name) -> str:
    try:
        return imagebus.validate_id(name)
    except imagebus.SlotIdError as exc:
        raise PoolIdError(str(exc).replace("slot id", "item name", 1)) from None


def item_name(number: int) -> str:
    return f"{number:0{POOL_NAME_DIGITS}d}"


def pools_root(base) -> Path:
    """The gate_pool folder, with any link in its own path resolved (an input folder on another disk)."""
    return Path(os.path.realpath(base))


def pool_dir(base, pool) -> Path:
    """The folder of a valid pool id; a pool folder that is a link is refused."""
    if is_remote(base):
        raise TypeError(f"{base} is an object store, not a folder")
    validate_pool_id(pool)
    folder = pools_root(base) / pool
    st = _lstat(folder)
    if st is not None and imagebus._is_link(st):
        raise PoolIdError(f"pool {pool!r} is a symbolic link; pools must be real folders inside "
                          f"{pools_root(base)}")
    return folder


def exists(base, pool) -> bool:
    if is_remote(base):
        from .storage import s3pools

        return s3pools.exists(base, validate_pool_id(pool))
    st = _lstat(pool_dir(base, pool))
    return st is not None and stat.S_ISDIR(st.st_mode)


def _lstat(path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _split_file(name: str) -> tuple[str, str] | None:
    """(stem, "png" | "txt") for an item or caption file name, else None."""
    stem, dot, ext = name.rpartition(".")
    ext = ext.lower()
    if not dot or ext not in ("png", "txt"):
        return None
    # Counter names (digits only) are valid ids; checking them the long way costs a pool of thousands
    # of items a noticeable share of every add.
    if not ((stem.isdigit() and stem.isascii() and 0 < len(stem) <= 64) or imagebus.is_valid_id(stem)):
        return None
    return stem, ext


def _number(stem: str) -> int | None:
    return int(stem) if stem.isdigit() and stem.isascii() else None


def sort_key(name: str) -> tuple:
    """Counter names by number (the order they were added), then names made by hand, by name."""
    number = _number(name)
    return (0, number, "") if number is not None else (1, 0, name)


# --- staging names ---------------------------------------------------------------------------------

def _staging_name(kind: str, file_name: str) -> str:
    return f"{POOL_STAGING_PREFIX}{kind}-{os.getpid()}-{_PROCESS_TAG}-{secrets.token_hex(6)}-{file_name}"


@dataclass(frozen=True)
class Staged:
    state: str | None   # None: in the pool folder itself
    file: str           # the staging file's own name
    kind: str
    pid: int
    tag: str
    target: str         # the file name it stands for ("000007.png")


def _parse_staging(state: str | None, name: str) -> Staged | None:
    parts = name[len(POOL_STAGING_PREFIX):].split("-", 4)
    if len(parts) != 5 or not parts[1].isdigit():
        return None
    kind, pid, tag, _random, target = parts
    return Staged(state, name, kind, int(pid), tag, target)


# --- reading a pool's folders ----------------------------------------------------------------------

@dataclass
class Item:
    name: str
    state: str
    png: str                   # the PNG's file name in the state folder
    caption: str | None        # the caption's file name in the same folder, if it has one
    link: bool = False         # the PNG is a symbolic link: listed, refused when read


@dataclass
class PoolScan:
    pool: str
    folder: Path
    items: dict[str, Item] = field(default_factory=dict)
    pngs: dict[str, dict[str, str]] = field(default_factory=dict)   # name -> state -> file
    txts: dict[str, dict[str, str]] = field(default_factory=dict)
    staging: list[Staged] = field(default_factory=list)
    junk: list[tuple[str | None, str]] = field(default_factory=list)  # unparseable staging names
    highest: int = 0

    def in_state(self, state: str) -> list[Item]:
        return sorted((item for item in self.items.values() if item.state == state),
                      key=lambda item: sort_key(item.name))

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(POOL_STATES, 0)
        for item in self.items.values():
            counts[item.state] += 1
        return counts

    def path(self, state: str | None, file: str) -> Path:
        return self.folder / file if state is None else self.folder / state / file

    def path_str(self, state: str, file: str) -> str:
        """path() as a plain string: much cheaper where every item of a large pool is visited."""
        return os.path.join(self.folder_str, state, file)

    @property
    def folder_str(self) -> str:
        return os.fspath(self.folder)


def _state_dir(folder: Path, pool: str, state: str) -> Path | None:
    """The state folder, None when absent; a link or a file in its place is refused."""
    path = folder / state
    st = _lstat(path)
    if st is None:
        return None
    if imagebus._is_link(st):
        raise PoolError(f"pool {pool!r}: {state}/ is a symbolic link; it must be a real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise PoolError(f"pool {pool!r}: {state} is not a folder")
    return path


def scan(base, pool) -> PoolScan:
    """What is in the pool's folders now (no repair: see `repair`). PoolNotFound for no pool."""
    if is_remote(base):
        raise TypeError(f"{base} is an object store: pool_counts and s3pools.items replace scan there")
    folder = pool_dir(base, pool)
    st = _lstat(folder)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise PoolNotFound(f"pool {pool!r} does not exist ({folder})")
    return _scan(pool, folder)


def _scan(pool: str, folder: Path) -> PoolScan:
    found = PoolScan(pool, folder)
    links: set[tuple[str, str]] = set()
    try:
        root_entries = [entry.name for entry in os.scandir(folder)]
    except FileNotFoundError:
        raise PoolNotFound(f"pool {pool!r} does not exist ({folder})") from None
    for name in root_entries:
        if name.startswith(POOL_STAGING_PREFIX):
            staged = _parse_staging(None, name)
            found.staging.append(staged) if staged else found.junk.append((None, name))
    highest = 0
    for state in POOL_STATES:
        path = _state_dir(folder, pool, state)
        if path is None:
            continue
        pngs, txts = found.pngs, found.txts
        # Every file of the pool passes here on every add: the common case (a counter name) is kept short.
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    if name.startswith(POOL_STAGING_PREFIX):
                        staged = _parse_staging(state, name)
                        found.staging.append(staged) if staged else found.junk.append((state, name))
                    continue
                parsed = _split_file(name)
                if parsed is None:
                    continue
                try:
                    if entry.is_symlink():
                        links.add((state, name))
                    elif entry.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                stem, ext = parsed
                (pngs if ext == "png" else txts).setdefault(stem, {})[state] = name
                if stem.isdigit() and stem.isascii():
                    number = int(stem)
                    if number > highest:
                        highest = number
    found.highest = highest
    txts = found.txts
    for name, states in found.pngs.items():
        if len(states) == 1:
            (state, png), = states.items()
        else:
            state = next(s for s in STATE_PRECEDENCE if s in states)
            png = states[state]
        caption = txts.get(name)
        found.items[name] = Item(name, state, png, caption.get(state) if caption else None,
                                 bool(links) and (state, png) in links)
    return found


# --- the lock --------------------------------------------------------------------------------------

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class PoolBusy(PoolError):
    """Another process held the pool for longer than LOCK_TIMEOUT_SECONDS."""


@contextlib.contextmanager
def locked(folder: Path, pool: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the pool: one thread of this process and one process at a time (flock, released by the
    system when a process dies, so a killed adder never leaves the pool locked)."""
    key = str(folder)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())
    if not thread_lock.acquire(timeout=timeout):
        raise PoolBusy(f"pool {pool!r} is busy: another add or decision in this process held it over {timeout:.0f} s")
    try:
        try:
            fd = os.open(folder / POOL_LOCK_FILE, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY, 0o644)
        except FileNotFoundError:
            raise PoolNotFound(f"pool {pool!r} does not exist ({folder})") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PoolError(f"pool {pool!r}: {POOL_LOCK_FILE} is a symbolic link") from None
            raise
        try:
            _lock_file(fd, pool, time.monotonic() + timeout)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
    finally:
        thread_lock.release()


def _lock_file(fd: int, pool: str, deadline: float) -> None:
    if _WINDOWS:  # pragma: no cover - Windows only
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise PoolBusy(f"pool {pool!r} is busy: another process holds it") from None
                time.sleep(0.05)
    import fcntl

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise PoolBusy(f"pool {pool!r} is busy: another process holds it") from None
            time.sleep(0.02)
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                # A file system without locks (some network mounts): this process's lock still holds.
                log.warning("pool %r: the file system cannot lock %s (%s); adds from two processes at "
                            "once are not kept apart", pool, POOL_LOCK_FILE, exc.strerror)
                return
            raise


# --- repair ----------------------------------------------------------------------------------------

def _owner_gone(staged: Staged, now: float, mtime: float) -> bool:
    if staged.pid == os.getpid() and staged.tag == _PROCESS_TAG:
        return False  # this process, mid-add right now (its own lock is held by another thread)
    if staged.pid != os.getpid() and imagebus._process_alive(staged.pid) and now - mtime < STALE_STAGING_SECONDS:
        return False
    return True


_warned_twice: set[tuple[str, str]] = set()


def repair(found: PoolScan) -> PoolScan:
    """Finish or roll back what a killed add, decision or removal left; call it holding the lock.

    Returns a fresh scan when anything changed, else `found`.
    """
    changed = False
    now = time.time()
    gone: list[Staged] = []
    for staged in found.staging:
        st = _lstat(found.path(staged.state, staged.file))
        if st is not None and _owner_gone(staged, now, st.st_mtime):
            gone.append(staged)
    # 1. Adds killed between renaming the caption in and renaming the PNG in: finish them. The staged
    #    PNG was complete and flushed before the caption moved.
    for staged in gone:
        parsed = _split_file(staged.target)
        if staged.kind != "add" or parsed is None or parsed[1] != "png" or staged.state is None:
            continue
        name = parsed[0]
        if found.txts.get(name, {}).get(staged.state) and name not in found.pngs:
            _rename(found.path(staged.state, staged.file), found.path(staged.state, staged.target))
            log.info("pool %r: finished adding %s (its add was killed half-way)", found.pool, name)
            changed = True
    # 2. Removals killed between the PNG and the caption: the caption goes too.
    for staged in gone:
        parsed = _split_file(staged.target)
        if staged.kind != "rm" or parsed is None or parsed[1] != "png" or staged.state is None:
            continue
        name = parsed[0]
        caption = found.txts.get(name, {}).get(staged.state)
        if caption and name not in found.pngs:
            _unlink(found.path(staged.state, caption))
            changed = True
    # 3. Every other staging file of a process that is gone is a leftover.
    for staged in gone:
        if _lstat(found.path(staged.state, staged.file)) is not None:
            _unlink(found.path(staged.state, staged.file))
            changed = True
    for state, name in found.junk:
        _unlink(found.path(state, name))
        changed = True
    if changed:
        found = _scan(found.pool, found.folder)
    # 4. Half-moved items: a caption in another folder than its PNG goes to the PNG's folder.
    moved = False
    for name, item in found.items.items():
        if item.caption is not None:
            continue
        elsewhere = found.txts.get(name, {})
        source = next((s for s in STATE_PRECEDENCE if s in elsewhere and s != item.state), None)
        if source is None:
            continue
        target = found.path(item.state, elsewhere[source])
        if _lstat(target) is None:
            _rename(found.path(source, elsewhere[source]), target)
            log.info("pool %r: moved the caption of %s back beside its PNG in %s/", found.pool, name, item.state)
            moved = True
    # 5. A move killed after the caption reached the new folder: the copy the PNG left behind goes, but
    #    only when it is the same file or the same bytes as the caption beside the PNG.
    for name, item in found.items.items():
        if item.caption is None:
            continue
        for state, file in found.txts.get(name, {}).items():
            if state == item.state or state in found.pngs.get(name, {}):
                continue
            stray, beside = found.path(state, file), found.path(item.state, item.caption)
            if _same_file(stray, beside):
                _unlink(stray)
                moved = True
    for name, states in found.pngs.items():
        if len(states) > 1 and (str(found.folder), name) not in _warned_twice:
            _warned_twice.add((str(found.folder), name))
            log.warning("pool %r: %s is in %s at once (copied by hand?); it counts as %s and the other "
                        "copies are left alone", found.pool, name, " and ".join(f"{s}/" for s in states),
                        found.items[name].state)
    if moved:
        found = _scan(found.pool, found.folder)
    if changed or moved:
        for state in (None, *POOL_STATES):
            _fsync_dir(found.folder if state is None else found.folder / state)
    return found


def _same_file(a: Path, b: Path) -> bool:
    """The same file (a second link) or the same bytes."""
    first, second = _lstat(a), _lstat(b)
    if first is None or second is None or not (stat.S_ISREG(first.st_mode) and stat.S_ISREG(second.st_mode)):
        return False
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    if first.st_size != second.st_size or first.st_size > 1 << 20:
        return False
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        imagebus._remove(path)
    except PermissionError:
        if path.is_dir():
            imagebus._remove(path)
        else:
            raise


def _fsync_dir(folder: Path) -> None:
    imagebus._fsync_dir(folder)


def _fsync_file(path: Path) -> None:
    flags = (os.O_RDWR | _BINARY) if _WINDOWS else os.O_RDONLY
    fd = os.open(path, flags | _NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- opening and creating pools --------------------------------------------------------------------

def pool_counts(base, pool) -> dict[str, int]:
    """pending / kept / rejected of a pool, wherever it lives. PoolNotFound for no pool."""
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        if not s3pools.exists(base, pool):
            raise PoolNotFound(f"pool {pool!r} does not exist ({s3pools.pool_url(base, pool)})")
        return s3pools.counts(base, pool, fresh=True)
    return scan(base, pool).counts()


def ensure_pool(base, pool) -> Path:
    """The pool's folder with its three state folders, made if needed; links refused."""
    folder = pool_dir(base, pool)
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(exist_ok=True)
    except FileExistsError:
        raise PoolError(f"pool {pool!r}: {folder} exists and is not a folder") from None
    pool_dir(base, pool)  # made meanwhile as a link by someone else: refuse it
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise PoolError(f"pool {pool!r}: {folder} is not a folder")
    for state in POOL_STATES:
        try:
            (folder / state).mkdir(exist_ok=True)
        except FileExistsError:
            raise PoolError(f"pool {pool!r}: {state} is not a folder") from None
        _state_dir(folder, pool, state)
    return folder


@contextlib.contextmanager
def opened(base, pool, create: bool = False) -> Iterator[PoolScan]:
    """Hold the pool, repair it and yield what it holds. PoolNotFound when it does not exist (and not `create`)."""
    folder = ensure_pool(base, pool) if create else pool_dir(base, pool)
    if not create:
        st = _lstat(folder)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise PoolNotFound(f"pool {pool!r} does not exist ({folder})")
    with locked(folder, pool):
        if create:
            ensure_pool(base, pool)  # removed while this waited for the lock
        yield repair(_scan(pool, folder))


def list_pools(base) -> list[dict]:
    """[{"id", "pending", "kept", "rejected"}] for every pool folder in gate_pool, sorted by id. Read-only."""
    if is_remote(base):
        from .storage import s3pools

        return s3pools.list_pools(base)
    root = pools_root(base)
    try:
        entries = sorted(entry.name for entry in os.scandir(root)
                         if not entry.name.startswith(".") and imagebus.is_valid_id(entry.name)
                         and entry.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []
    pools = []
    for pool in entries:
        try:
            counts = _scan(pool, root / pool).counts()
        except (PoolError, OSError) as exc:
            log.warning("pool %r cannot be listed: %s", pool, exc)
            continue
        pools.append({"id": pool, **counts})
    return pools


# --- pixels ----------------------------------------------------------------------------------------

def as_rgb_or_rgba(frame: np.ndarray) -> np.ndarray:
    """An (H,W,1|3|4) uint8 frame as RGB or RGBA: a gray frame becomes RGB, as it is read back."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or 0 in frame.shape:
        raise ValueError(f"expected a uint8 frame (height, width, 1|3|4), got {frame.dtype} {tuple(frame.shape)}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame


def pixel_hash(frame: np.ndarray) -> str:
    """sha256 of the frame's shape and pixels: equal for equal pixels however they were encoded."""
    frame = as_rgb_or_rgba(frame)
    height, width, channels = frame.shape
    digest = hashlib.sha256(f"{height}x{width}x{channels}:".encode())
    if frame.flags.c_contiguous:
        digest.update(memoryview(frame).cast("B"))
    else:
        for row in frame:  # a padded frame from imaging: its rows are contiguous, the frame is not
            digest.update(np.ascontiguousarray(row).data)
    return digest.hexdigest()


def _read_file(found: PoolScan, state: str, file: str) -> bytes:
    """A file of the pool, refusing links and anything but a regular file."""
    where = f"{state}/{file}"
    path = found.path(state, file)
    try:
        fd = os.open(path, os.O_RDONLY | _BINARY | _NOFOLLOW)
    except FileNotFoundError:
        raise ItemNotFound(f"pool {found.pool!r}: {where} is missing (moved or deleted meanwhile?)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PoolError(f"pool {found.pool!r}: {where} is a symbolic link; items must be real files") from None
        raise PoolError(f"pool {found.pool!r}: {where} cannot be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise PoolError(f"pool {found.pool!r}: {where} is not a regular file")
        return handle.read()


def read_pixels(found: PoolScan, item: Item) -> np.ndarray:
    """The item's pixels, (H,W,3) or (H,W,4) uint8; a corrupt file is a PoolError naming pool and file."""
    if item.link:
        raise PoolError(f"pool {found.pool!r}: {item.state}/{item.png} is a symbolic link; items must be real files")
    raw = _read_file(found, item.state, item.png)
    try:
        return imaging.read_image_pixels(raw)
    except imaging.ImagingError as exc:
        raise PoolError(f"pool {found.pool!r}: {item.state}/{item.png} is not a readable image "
                        f"({str(exc).replace('payload', 'the file')})") from None


def read_caption(found: PoolScan, item: Item) -> str | None:
    """The item's caption, or None. A BOM or one final newline added by an editor is not part of it."""
    if item.caption is None:
        return None
    raw = _read_file(found, item.state, item.caption)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PoolError(f"pool {found.pool!r}: {item.state}/{item.caption} is not UTF-8 text ({exc})") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


# --- captions --------------------------------------------------------------------------------------

def split_captions(text, frames: int) -> list[str | None]:
    """The caption of each of `frames` frames from the node's multiline text.

    One line per frame, or one caption for all. An empty line (or empty text) is no caption. A final
    newline, as an editor leaves, is not a line. One frame takes the whole text, newlines and all.
    """
    if text is None:
        return [None] * frames
    if not isinstance(text, str):
        raise CaptionError(f"captions must be text, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    if text == "":
        return [None] * frames
    if frames == 1:
        return [text]
    lines = text.split("\n")
    if len(lines) == 1:
        return [text] * frames
    if len(lines) != frames:
        raise CaptionError(f"captions has {len(lines)} lines for {frames} frames: give one line per frame, "
                           "or a single line for all of them")
    return [line if line != "" else None for line in lines]


# --- the pixel index (a cache) ---------------------------------------------------------------------

class PixelIndex:
    """name -> (size, mtime_ns, inode, hash) as last seen; entries that disagree with the file are ignored.

    Appended to as items are added; rewritten whole when it has grown well past the pool.
    """

    def __init__(self, found: PoolScan):
        self.found = found
        self.path = found.folder / POOL_INDEX_FILE
        self.entries: dict[str, tuple[int, int, int, str]] = {}
        self.lines = 0
        self.fresh: list[str] = []
        self._load()

    def _load(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | _BINARY | _NOFOLLOW)
        except OSError:
            return  # absent, or a link: rebuilt from the files
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read()
        for line in raw.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            self.lines += 1
            if len(parts) != 5 or len(parts[4]) != 64:
                continue
            try:
                self.entries[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]), parts[4])
            except ValueError:
                continue

    @staticmethod
    def _key(st: os.stat_result) -> tuple[int, int, int]:
        return st.st_size, st.st_mtime_ns, st.st_ino

    def record(self, name: str, st: os.stat_result, digest: str) -> None:
        self.entries[name] = (*self._key(st), digest)
        self.fresh.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\t{digest}\n")

    def hashes(self, unreadable: list[str] | None = None) -> dict[str, str]:
        """name -> pixel hash of every item (all states); files the index does not know are decoded.

        A file that cannot be decoded is left out (named in `unreadable`): it cannot be a duplicate.
        """
        found = self.found
        result = {}
        root = found.folder_str
        join = os.path.join
        for name, item in found.items.items():
            st = _lstat(join(root, item.state, item.png))
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            cached = self.entries.get(name)
            if cached is not None and cached[:3] == self._key(st):
                result[name] = cached[3]
                continue
            try:
                digest = pixel_hash(read_pixels(found, item))
            except PoolError as exc:
                if unreadable is not None:
                    unreadable.append(str(exc))
                continue
            self.record(name, st, digest)
            result[name] = digest
        return result

    def save(self) -> None:
        """Append what was learnt; rewrite the file when it has grown far past the pool. Never fatal."""
        try:
            if self.lines + len(self.fresh) > 2 * len(self.found.items) + INDEX_SLACK:
                keep = [f"{name}\t{size}\t{mtime}\t{ino}\t{digest}\n"
                        for name, (size, mtime, ino, digest) in sorted(self.entries.items())
                        if name in self.found.items]
                _write_atomically(self.found.folder, POOL_INDEX_FILE, "".join(keep).encode(), durable=False)
                self.lines = len(keep)
            elif self.fresh:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _BINARY | _NOFOLLOW, 0o644)
                with os.fdopen(fd, "ab") as handle:
                    handle.write("".join(self.fresh).encode())
                self.lines += len(self.fresh)
            self.fresh = []
        except OSError as exc:
            log.warning("pool %r: could not update its pixel index (a cache): %s", self.found.pool, exc)


def _write_atomically(folder: Path, name: str, data: bytes, durable: bool = True) -> None:
    scratch = folder / _staging_name("tmp", name)
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY | _NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(scratch, folder / name)
    except BaseException:
        _unlink(scratch)
        raise
    if durable:
        _fsync_dir(folder)


# --- the counter -----------------------------------------------------------------------------------

def _read_counter(folder: Path) -> int:
    try:
        fd = os.open(folder / POOL_COUNTER_FILE, os.O_RDONLY | _BINARY | _NOFOLLOW)
    except OSError:
        return 0
    with os.fdopen(fd, "rb") as handle:
        text = handle.read(64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def next_number(found: PoolScan) -> int:
    """The first number not handed out yet: the counter, floored by the names on disk. Hold the lock."""
    return max(_read_counter(found.folder), found.highest + 1, 1)


def reserve_numbers(found: PoolScan, count: int) -> int:
    """The first of `count` fresh numbers, the counter advanced on disk past them. Hold the lock."""
    first = next_number(found)
    _write_atomically(found.folder, POOL_COUNTER_FILE, f"{first + count}\n".encode())
    return first


_flush_pool = None
_flush_pool_lock = threading.Lock()


def flush_all(paths: list[Path]) -> None:
    """fsync the files at once: the file system commits concurrent flushes together (on ext4 a batch
    costs about one flush), where one after the other a batch of items would pay one per file."""
    global _flush_pool
    if len(paths) <= 1:
        for path in paths:
            _fsync_file(path)
        return
    with _flush_pool_lock:
        if _flush_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _flush_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="datasete-flush")
    for _ in _flush_pool.map(_fsync_file, paths):
        pass


# --- adding ----------------------------------------------------------------------------------------

@dataclass
class AddResult:
    pool: str
    added: list[str]                 # names of the items added, in frame order
    duplicates: list[int]            # indexes of the frames skipped as already in the pool
    counts: dict[str, int]           # pending / kept / rejected after the add
    unreadable: list[str] = field(default_factory=list)   # files that could not be checked for duplicates

    def summary(self) -> str:
        text = (f"added {len(self.added)} · pending {self.counts[POOL_PENDING]} · kept {self.counts[POOL_KEPT]}"
                f" · rejected {self.counts[POOL_REJECTED]}")
        if self.duplicates:
            text += f" · {len(self.duplicates)} duplicate{'s' if len(self.duplicates) != 1 else ''} skipped"
        return text


def add_frames(base, pool, frames, captions: list[str | None] | None = None,
               skip_duplicates: bool = True, compress_level: int = imaging.BUS_COMPRESS_LEVEL) -> AddResult:
    """Add uint8 frames ((H,W,1|3|4) each, or a (B,H,W,C) batch) to the pool's pending/, each with its caption.

    Everything is checked before anything is written. With `skip_duplicates` a frame whose pixels are
    already in the pool (in any folder, or earlier in this batch) is skipped.
    """
    validate_pool_id(pool)
    frames = [as_rgb_or_rgba(frame) for frame in frames]
    if captions is None:
        captions = [None] * len(frames)
    if len(captions) != len(frames):
        raise CaptionError(f"{len(captions)} captions for {len(frames)} frames")
    for caption in captions:
        if caption is not None and not isinstance(caption, str):
            raise CaptionError(f"a caption must be text, got {type(caption).__name__}")
    encoded_captions = [None if not caption else caption.encode("utf-8") for caption in captions]
    digests = [pixel_hash(frame) for frame in frames]
    if is_remote(base):
        from .storage import s3pools

        return s3pools.add_frames(base, pool, frames, captions, skip_duplicates, compress_level, digests)
    with opened(base, pool, create=True) as found:
        index = PixelIndex(found)
        unreadable: list[str] = []
        known = set(index.hashes(unreadable).values()) if skip_duplicates else set()
        todo, duplicates = [], []
        for position, digest in enumerate(digests):
            if skip_duplicates and digest in known:
                duplicates.append(position)
                continue
            known.add(digest)
            todo.append(position)
        added: list[str] = []
        if todo:
            first = next_number(found)
            names = [item_name(first + offset) for offset in range(len(todo))]
            try:
                _write_items(found, [(names[k], frames[p], encoded_captions[p]) for k, p in enumerate(todo)],
                             compress_level, added, first + len(todo))
            finally:
                for name in added:
                    st = _lstat(found.path(POOL_PENDING, f"{name}.png"))
                    if st is not None:
                        index.record(name, st, digests[todo[names.index(name)]])
                        found.items[name] = Item(name, POOL_PENDING, f"{name}.png",
                                                 f"{name}.txt" if encoded_captions[todo[names.index(name)]] else None)
                index.save()
        return AddResult(pool, added, duplicates, found.counts(), unreadable)


def _write_items(found: PoolScan, items: list[tuple[str, np.ndarray, bytes | None]], compress_level: int,
                 added: list[str], next_value: int) -> None:
    """Stage every file and the advanced counter, flush them all at once, make the counter current, then
    rename each item in, caption first, PNG last. `added` names the items in place.

    Nothing is renamed before every staged file is on disk, and the counter is in place (and its folder
    flushed) before the first item: a number is never handed out twice, and a caption that made it in
    always has a whole PNG staged behind it for the next use to finish."""
    pending = found.folder / POOL_PENDING
    staged: list[Path] = []
    counter = found.folder / _staging_name("tmp", POOL_COUNTER_FILE)
    try:
        plan = []
        for name, frame, caption in items:
            txt = None
            if caption is not None:
                txt = pending / _staging_name("add", f"{name}.txt")
                staged.append(txt)
                fd = os.open(txt, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY | _NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(caption)
            png = pending / _staging_name("add", f"{name}.png")
            staged.append(png)
            plan.append((name, frame, txt, png))
        imaging.write_pngs([(str(png), frame) for _name, frame, _txt, png in plan], compress_level)
        fd = os.open(counter, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY | _NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(f"{next_value}\n".encode())
        flush_all([*staged, counter])
        os.replace(counter, found.folder / POOL_COUNTER_FILE)
        _fsync_dir(found.folder)
        for name, _frame, txt, png in plan:
            for state in POOL_STATES:  # the counter makes this impossible, short of a hand-made file
                for ext in ("png", "txt"):
                    if _lstat(found.folder / state / f"{name}.{ext}") is not None:
                        raise PoolError(f"pool {found.pool!r}: {state}/{name}.{ext} already exists; "
                                        f"not overwriting it (is {POOL_COUNTER_FILE} behind?)")
            if txt is not None:
                os.rename(txt, pending / f"{name}.txt")
            os.rename(png, pending / f"{name}.png")
            added.append(name)
    except imaging.ImagingError as exc:
        raise PoolError(f"pool {found.pool!r}: could not write an item: {exc}") from exc
    finally:
        for path in (*staged, counter):
            if _lstat(path) is not None:
                _unlink(path)
        _fsync_dir(pending)


# --- reading a page --------------------------------------------------------------------------------

@dataclass
class PageItem:
    name: str
    state: str
    file: str
    pixels: np.ndarray
    caption: str | None


@dataclass
class Page:
    pool: str
    items: list[PageItem]
    pending: int                 # pending items in the pool, this page included
    counts: dict[str, int]


def pending_page(base, pool, limit: int) -> Page:
    """The oldest `limit` pending items, decoded, with their captions. PoolNotFound for no pool;
    a PoolError naming the file for an item that cannot be read."""
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        return s3pools.pending_page(base, pool, limit)
    with opened(base, pool) as found:
        pending = found.in_state(POOL_PENDING)
        page = [PageItem(item.name, item.state, item.png, read_pixels(found, item), read_caption(found, item))
                for item in pending[:max(0, int(limit))]]
        return Page(pool, page, len(pending), found.counts())


def read_items(base, pool, names: Iterable[str]) -> list[tuple[Item, np.ndarray, str | None]]:
    """Named items with their pixels and captions, wherever they are."""
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        return s3pools.read_items(base, pool, [validate_item_name(name) for name in names])
    with opened(base, pool) as found:
        out = []
        for name in names:
            item = found.items.get(name)
            if item is None:
                raise ItemNotFound(f"pool {pool!r} has no item {name!r}")
            out.append((item, read_pixels(found, item), read_caption(found, item)))
        return out


# --- moving and removing ---------------------------------------------------------------------------

@dataclass
class MoveResult:
    pool: str
    moved: dict[str, str]        # name -> the state it is in now (also for items already there)
    missing: list[str]           # names no longer in the pool (deleted by hand meanwhile)
    counts: dict[str, int]


def move(base, pool, targets: dict[str, str]) -> MoveResult:
    """Put each named item in the state given (pending, kept or rejected), caption first, PNG last."""
    for name, state in targets.items():
        validate_item_name(name)
        if state not in POOL_STATES:
            raise ValueError(f"unknown state {state!r}: use one of {', '.join(POOL_STATES)}")
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        return s3pools.move(base, pool, targets)
    moved, missing = {}, []
    with opened(base, pool) as found:
        touched = set()
        try:
            for name, state in targets.items():
                item = found.items.get(name)
                if item is None:
                    missing.append(name)
                    continue
                if item.state != state:
                    _move_item(found, item, state)
                    touched.update((item.state, state))
                    item.state = state
                moved[name] = state
        finally:
            for state in touched:
                _fsync_dir(found.folder / state)
        return MoveResult(pool, moved, missing, found.counts())


def decide(base, pool, keep: Iterable[str], reject: Iterable[str]) -> MoveResult:
    """A grid decision: `keep` to kept/, `reject` to rejected/."""
    targets = dict.fromkeys(reject, POOL_REJECTED)
    targets.update(dict.fromkeys(keep, POOL_KEPT))
    return move(base, pool, targets)


def _move_item(found: PoolScan, item: Item, state: str) -> None:
    """Caption into the new folder (a second link to it, or a flushed copy), then the PNG, then the old
    caption away: at every instant the PNG has its caption beside it."""
    dest = found.folder / state
    if _lstat(dest) is None:
        dest.mkdir(exist_ok=True)
    _state_dir(found.folder, found.pool, state)
    if _lstat(dest / item.png) is not None:
        raise PoolError(f"pool {found.pool!r}: cannot move {item.state}/{item.png} to {state}/: "
                        f"{state}/{item.png} exists already")
    if item.caption is not None:
        source = found.path(item.state, item.caption)
        staged = dest / _staging_name("mv", item.caption)
        try:
            try:
                os.link(source, staged, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                                     errno.ENOSYS, errno.EACCES):
                    raise
                _copy_flushed(source, staged)  # a file system without hard links
            os.replace(staged, dest / item.caption)  # over a stray caption of the same name, if any
        except BaseException:
            _unlink(staged)
            raise
    os.rename(found.path(item.state, item.png), dest / item.png)
    if item.caption is not None:
        _unlink(found.path(item.state, item.caption))


def _copy_flushed(source: Path, target: Path) -> None:
    with open(source, "rb") as handle:
        data = handle.read()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_items(base, pool, names: Iterable[str]) -> MoveResult:
    """Delete items (PNG first, then caption: never a PNG without its caption)."""
    names = [validate_item_name(name) for name in names]
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        return s3pools.remove_items(base, pool, names)
    removed, missing = {}, []
    with opened(base, pool) as found:
        for name in names:
            item = found.items.get(name)
            if item is None:
                missing.append(name)
                continue
            folder = found.folder / item.state
            png_aside = folder / _staging_name("rm", item.png)
            os.rename(folder / item.png, png_aside)
            if item.caption is not None:
                _unlink(folder / item.caption)
            _unlink(png_aside)
            _fsync_dir(folder)
            removed[name] = item.state
            del found.items[name]
        return MoveResult(pool, removed, missing, found.counts())


def remove_pool(base, pool) -> bool:
    """Delete a whole pool at once (moved aside under a staging name, then removed); True if it existed."""
    if is_remote(base):
        from .storage import s3pools

        validate_pool_id(pool)
        return s3pools.remove_pool(base, pool)
    folder = pool_dir(base, pool)
    if _lstat(folder) is None:
        return False
    with locked(folder, pool):
        doomed = folder.parent / _staging_name("rm", pool)
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return False
    imagebus._remove(doomed)
    return True


def sweep_root(base) -> int:
    """Remove what whole-pool removals killed half-way left in gate_pool itself."""
    if is_remote(base):
        from .storage import s3pools

        return s3pools.sweep_root(base)
    root = pools_root(base)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    handled = 0
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(POOL_STAGING_PREFIX):
            continue
        staged = _parse_staging(None, entry.name)
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if staged is None or _owner_gone(staged, now, mtime):
            imagebus._remove(Path(entry.path))
            handled += 1
    return handled
