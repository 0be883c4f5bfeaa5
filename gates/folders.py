"""Image folders inside ComfyUI's input folder: the path rule, listing in natural order, captions and
walk positions on disk. Stdlib and Pillow's table of file extensions only: no torch, no ComfyUI.

The path rule, decided here once for the loader's `folder`, the Text Gate's `caption_path` and the
HTTP routes:
- A value is a path relative to ComfyUI's input folder, written with `/` (or `\\`, read as `/` on
  every system, so a value means the same folder on Windows and Linux).
- It is refused, with an error naming it, when it is empty, absolute (`/x`, `C:\\x`, `\\\\server\\x`,
  `C:x`), has a `..` component, holds a control character (NUL, newline, ...) or is over 4096
  characters. `.` and empty components (`a//b/`) are dropped.
- The rule reads the words of the value, not where they lead: a symbolic link (or junction) that
  sits inside the input folder is followed, wherever it points (a dataset on another disk is a
  normal setup). Only someone with access to the machine can make such a link, and that person
  can read the dataset anyway; nothing a browser or a prompt sends can create one.

Listing: images are the files whose extension Pillow reads (png, jpg/jpeg, webp, gif, bmp, tiff,
...; a few formats that run external programs or are not pictures are left out), hidden names
(starting with ".") are skipped, and the order is natural (`2.png` before `10.png`), by path
component. A listing is cached per folder and reused while the folder's entries are unchanged (one
stat per folder per call), so a run in a folder of 10,000 images does not list it again.

Positions: the `next` walk of a folder keeps the last image it handed out (its path in the folder)
in a small JSON file in ComfyUI's user folder. The next image is the first one that sorts after it,
so images added or removed meanwhile neither repeat nor skip one that was not handed out yet.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from .constants import CAPTION_EXTENSIONS, SCRATCH_SUFFIX
from .imagebus import _LISTING_SETTLE_COARSE_NS, _LISTING_SETTLE_FINE_NS, _fsync_dir, _process_alive

MAX_PATH_CHARS = 4096

# Formats Pillow opens that are no dataset pictures or that hand the file to another program
# (EPS and PS run Ghostscript; WMF/EMF only render on Windows; the rest are science, video or stubs).
_EXCLUDED_FORMATS = {"EPS", "WMF", "MPEG", "IPTC", "BUFR", "GRIB", "HDF5", "FITS"}


def _image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in _EXCLUDED_FORMATS)


IMAGE_EXTENSIONS = _image_extensions()

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class FolderError(ValueError):
    """A folder or path value that breaks the path rule, or names nothing usable; the message names it."""


class FolderNotFound(FolderError):
    pass


class PositionError(ValueError):
    """A position file that cannot be read; the message names it."""


# --- the path rule --------------------------------------------------------------------------------

def split_relative(value, what: str = "folder") -> list[str]:
    """The components of a path relative to the input folder, or FolderError naming the value."""
    if not isinstance(value, str):
        raise FolderError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if len(value) > MAX_PATH_CHARS:
        raise FolderError(f"{what} {value[:60]!r}... is over {MAX_PATH_CHARS} characters")
    if _CONTROL.search(value):
        raise FolderError(f"{what} {value!r} holds a control character")
    text = value.replace("\\", "/")
    if text.startswith("/"):
        raise FolderError(f"{what} {value!r} is an absolute path: give a path inside ComfyUI's input folder, "
                          "such as datasets/cats")
    if _DRIVE.match(text):
        raise FolderError(f"{what} {value!r} names a drive: give a path inside ComfyUI's input folder")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FolderError(f"{what} {value!r} leaves the input folder (it has a '..' component)")
    if not parts:
        raise FolderError(f"{what} {value!r} is empty: name a folder inside ComfyUI's input folder, "
                          "such as datasets/cats")
    return parts


def folder_key(value) -> str:
    """The canonical form of a folder value: its components joined by "/"."""
    return "/".join(split_relative(value))


def resolve_folder(input_dir, value) -> tuple[str, Path]:
    """(canonical key, folder path) of an existing folder inside the input folder."""
    parts = split_relative(value)
    path = Path(input_dir).joinpath(*parts)
    try:
        is_dir = path.is_dir()
    except OSError:
        is_dir = False
    if not is_dir:
        what = "is not a folder" if path.exists() else "does not exist"
        raise FolderNotFound(f"folder {value!r} {what} in ComfyUI's input folder ({input_dir})")
    return "/".join(parts), path


# --- natural order --------------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key of one name: runs of digits compare as numbers (2 < 10), letters without case.

    Text and number runs alternate from a text run (maybe empty), so two keys always compare
    like with like; the name itself breaks ties ("007" vs "7", "A" vs "a").
    """
    parts = _DIGITS.split(name)
    return tuple(int(part) if index % 2 else part.casefold() for index, part in enumerate(parts)), name


def path_key(relative: str) -> tuple:
    """Sort key of a "/"-joined path: component by component, so a folder's files stay together.

    A file sorts by its name without the extension first (img.png, img1.png, img2.png), then by
    the extension; a folder by its whole name.
    """
    parts = relative.split("/")
    keys = [(natural_key(part), "") for part in parts[:-1]]
    stem, extension = os.path.splitext(parts[-1])
    keys.append((natural_key(stem), extension.casefold()))
    return tuple(keys)


def natural_sorted(names) -> list[str]:
    return sorted(names, key=path_key)


# --- listing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listing:
    folder: str                # the folder listed (as given)
    paths: tuple[str, ...]     # images, "/"-joined relative to the folder, in natural order
    keys: tuple                # path_key of each

    def __len__(self) -> int:
        return len(self.paths)

    def index_after(self, last: str | None) -> int:
        """Index of the first image that sorts after `last` (0 when nothing was handed out)."""
        if last is None:
            return 0
        return bisect.bisect_right(self.keys, path_key(last))


class _Cached:
    __slots__ = ("listing", "stamps")

    def __init__(self, listing: Listing, stamps: dict | None):
        self.listing = listing
        self.stamps = stamps  # folder path -> stamp; None: list again on the next call


_listing_cache: dict[tuple[str, bool], _Cached] = {}
_listing_lock = threading.Lock()
_LISTING_CACHE_MAX = 64


def _stamp(st: os.stat_result) -> tuple:
    # Adding, removing or renaming an entry changes a folder's mtime and ctime.
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def _settled(st: os.stat_result, scanned_at_ns: int) -> bool:
    """Whether a change in the same timestamp tick as the scan would still show as a new mtime.

    The same rule as imagebus.list_ids: trust an mtime only once it is older than the file
    system's timestamp step (sub-second mtimes: 0.1 s; whole seconds, as FAT and HFS+: 2 s).
    """
    fine = st.st_mtime_ns % 1_000_000_000 != 0
    return scanned_at_ns - st.st_mtime_ns > (_LISTING_SETTLE_FINE_NS if fine else _LISTING_SETTLE_COARSE_NS)


def _scan(folder: Path, recursive: bool) -> tuple[list[str], dict, bool]:
    """(image paths, folder stamps, every folder settled). Links to folders are followed once each."""
    scanned_at = time.time_ns()
    images: list[str] = []
    stamps: dict[str, tuple] = {}
    settled = True
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [(os.fspath(folder), "")]
    while pending:
        path, prefix = pending.pop()
        try:
            st = os.stat(path)
        except OSError:
            if not prefix:
                raise
            continue  # a subfolder removed meanwhile
        if (st.st_dev, st.st_ino) in seen:
            continue  # a link back up the tree: walk each folder once
        seen.add((st.st_dev, st.st_ino))
        stamps[path] = _stamp(st)
        settled = settled and _settled(st, scanned_at)
        try:
            entries = list(os.scandir(path))
        except OSError:
            if not prefix:
                raise
            continue  # an unreadable subfolder is left out, not the whole walk
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    if entry.is_file():
                        images.append(prefix + name)
                elif recursive and entry.is_dir():
                    pending.append((entry.path, prefix + name + "/"))
            except OSError:
                continue
    return images, stamps, settled


def _unchanged(stamps: dict) -> bool:
    for path, stamp in stamps.items():
        try:
            if _stamp(os.stat(path)) != stamp:
                return False
        except OSError:
            return False
    return True


def list_images(folder, recursive: bool = False) -> Listing:
    """The images of `folder` (and its subfolders when `recursive`) in natural order.

    Cached: a call while no folder of the walk changed costs one stat per folder.
    """
    folder = Path(folder)
    cache_key = (os.fspath(folder), bool(recursive))
    with _listing_lock:
        cached = _listing_cache.get(cache_key)
        if cached is not None and cached.stamps is not None and _unchanged(cached.stamps):
            return cached.listing
    paths, stamps, settled = _scan(folder, recursive)
    listing = _relisted(cached.listing if cached is not None else None, os.fspath(folder), paths)
    with _listing_lock:
        if len(_listing_cache) >= _LISTING_CACHE_MAX and cache_key not in _listing_cache:
            _listing_cache.pop(next(iter(_listing_cache)))
        _listing_cache[cache_key] = _Cached(listing, stamps if settled else None)
    return listing


# Up to this many images added or removed since the last listing are merged into it; more: sort anew.
_MERGE_LIMIT = 256


def _relisted(previous: Listing | None, folder: str, paths: list[str]) -> Listing:
    """The listing of `paths`, reusing what `previous` knew.

    A folder changes far more often than its images do (every caption saved beside them renames a
    file into it): when the images are the same, the previous listing is kept as it is; a few added
    or removed ones are merged in; only a folder that changed a lot is sorted again.
    """
    if previous is None:
        ordered = natural_sorted(paths)
        return Listing(folder, tuple(ordered), tuple(path_key(p) for p in ordered))
    now, before = set(paths), set(previous.paths)
    if now == before:
        return previous
    added, removed = now - before, before - now
    if len(added) + len(removed) > max(_MERGE_LIMIT, len(paths) // 20):
        ordered = natural_sorted(paths)
        return Listing(folder, tuple(ordered), tuple(path_key(p) for p in ordered))
    keys, kept = [], []
    for key, path in zip(previous.keys, previous.paths, strict=True):
        if path not in removed:
            keys.append(key)
            kept.append(path)
    for path in added:
        key = path_key(path)
        at = bisect.bisect_right(keys, key)
        keys.insert(at, key)
        kept.insert(at, path)
    return Listing(folder, tuple(kept), tuple(keys))


def listing_fingerprint(folder, recursive: bool = False) -> tuple:
    """What changes when an image is added, removed or renamed: for caching `index` and `all` runs."""
    listing = list_images(folder, recursive)
    with _listing_lock:
        cached = _listing_cache.get((os.fspath(Path(folder)), bool(recursive)))
        stamps = None if cached is None or cached.stamps is None else tuple(sorted(cached.stamps.items()))
    return listing.paths, stamps if stamps is not None else time.time_ns()


def file_fingerprint(path) -> tuple:
    """(size, mtime) of a file and of its caption files: what an `index` or `all` run read."""
    out = []
    for candidate in [Path(path)] + [caption_candidate(path, ext) for ext in CAPTION_EXTENSIONS]:
        try:
            st = os.stat(candidate)
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def list_subfolders(input_dir, depth: int, limit: int, skip: tuple[str, ...] = ()) -> tuple[list[str], bool]:
    """("/"-joined folders inside the input folder, in natural order; whether the list was cut at `limit`).

    Hidden folders and the top-level names in `skip` are left out; links are followed, each folder once.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    try:
        root = os.stat(input_dir)
        seen.add((root.st_dev, root.st_ino))
    except OSError:
        return [], False
    level: list[tuple[str, str]] = [(os.fspath(input_dir), "")]
    truncated = False
    for _ in range(depth):
        below: list[tuple[str, str]] = []
        for path, prefix in level:
            try:
                entries = sorted(os.scandir(path), key=lambda e: natural_key(e.name))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or (not prefix and entry.name in skip):
                    continue
                try:
                    if not entry.is_dir():
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                if len(found) >= limit:
                    truncated = True
                    break
                found.append(prefix + entry.name)
                below.append((entry.path, prefix + entry.name + "/"))
        level = below
        if truncated or not level:
            break
    return natural_sorted(found), truncated


# --- captions -------------------------------------------------------------------------------------

class CaptionReadError(ValueError):
    """A caption file that is not UTF-8 text or cannot be read; the message names it."""


_BOM = b"\xef\xbb\xbf"


def caption_candidate(image_path, extension: str) -> Path:
    """The same-stem file beside an image: x/cat.png -> x/cat.txt."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + extension)


def caption_file(image_path) -> Path | None:
    """The image's caption file: the same-stem .txt, else .caption, else None."""
    for extension in CAPTION_EXTENSIONS:
        candidate = caption_candidate(image_path, extension)
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def decode_caption(raw: bytes, name: str = "caption") -> str:
    """The caption in a file's bytes: UTF-8, one leading BOM and one trailing line ending removed."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CaptionReadError(f"caption file {name} is not UTF-8 text (byte {exc.start}: "
                               f"{raw[exc.start:exc.start + 1]!r})") from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def read_caption(image_path, display=None) -> tuple[str, Path | None]:
    """(caption text, its file) of an image; ("", None) when it has none.

    `display(path)` gives the name an error shows for the caption file (default: the path itself).
    """
    path = caption_file(image_path)
    if path is None:
        return "", None
    shown = display(path) if display is not None else os.fspath(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CaptionReadError(f"caption file {shown} cannot be read: {exc.strerror or exc}") from None
    return decode_caption(raw, shown), path


# --- positions ------------------------------------------------------------------------------------

POSITION_FORMAT = "datasete-loader-position"


@dataclass(frozen=True)
class Position:
    """Where a `next` walk is: the last image handed out (None: none yet) and how many resets it saw."""

    last: str | None = None
    generation: int = 0


def position_key(folder_key_value: str, recursive: bool) -> str:
    return f"{folder_key_value}\n{'subfolders' if recursive else 'folder'}"


# One lock for every store of the process: a commit (the prompt worker) and a Reset (an HTTP route)
# each make a store of their own, and their read-compare-write must not interleave.
_STORE_LOCK = threading.RLock()


class PositionStore:
    """One small JSON file per walked folder, replaced atomically (write, fsync, rename)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self._lock = _STORE_LOCK

    def path_for(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json")

    def read(self, key: str) -> Position:
        path = self.path_for(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return Position()
        except OSError as exc:
            raise PositionError(f"walk position file {path} cannot be read: {exc.strerror or exc}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or data.get("format") != POSITION_FORMAT:
                raise ValueError("not a position file")
            last = data.get("last")
            generation = data.get("generation", 0)
            if not (last is None or isinstance(last, str)) or isinstance(generation, bool) \
                    or not isinstance(generation, int):
                raise ValueError("bad fields")
        except ValueError as exc:
            raise PositionError(f"walk position file {path} is damaged ({exc}); press Reset on the loader "
                                "(or POST its reset route) to start the folder over") from None
        return Position(last, generation)

    def _write(self, key: str, position: Position, folder: str, recursive: bool, count: int | None) -> None:
        payload = {"format": POSITION_FORMAT, "version": 1, "folder": folder, "include_subfolders": recursive,
                   "last": position.last, "generation": position.generation, "count": count,
                   "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_atomic(self.path_for(key), (json.dumps(payload, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))

    def write(self, key: str, position: Position, *, folder: str, recursive: bool, count: int | None = None) -> None:
        with self._lock:
            self._write(key, position, folder, recursive, count)

    def compare_and_write(self, key: str, expected: Position, new: Position, *, folder: str, recursive: bool,
                          count: int | None = None) -> bool:
        """Write `new` only if the file still holds `expected` (a Reset meanwhile wins); True if written."""
        with self._lock:
            try:
                current = self.read(key)
            except PositionError:
                return False
            if current != expected:
                return False
            self._write(key, new, folder, recursive, count)
            return True

    def reset(self, key: str, *, folder: str, recursive: bool) -> Position:
        """Start the walk over; the new generation turns any commit still in flight into a no-op."""
        with self._lock:
            try:
                generation = self.read(key).generation
            except PositionError:
                generation = 0  # a damaged file is what Reset is for
            position = Position(None, generation + 1)
            self._write(key, position, folder, recursive, None)
            return position


# --- atomic replace -------------------------------------------------------------------------------

# Scratch files carry the pid and a tag of this process, so a leftover of a killed process is told
# apart from a write in flight (the same rule as the bus's staging folders).
_PROCESS_TAG = secrets.token_hex(4)
STALE_SCRATCH_SECONDS = 3600


def _scratch_prefix(path: Path) -> str:
    return f".{path.name}."


def scratch_name(path: Path) -> str:
    return f"{_scratch_prefix(path)}{os.getpid()}-{_PROCESS_TAG}-{secrets.token_hex(6)}{SCRATCH_SUFFIX}"


def sweep_scratch(path) -> int:
    """Remove the scratch files a killed writer left beside `path`; returns how many."""
    path = Path(path)
    prefix = _scratch_prefix(path)
    removed = 0
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)
                   and e.name.endswith(SCRATCH_SUFFIX)]
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        middle = entry.name[len(prefix):-len(SCRATCH_SUFFIX)].split("-")
        if len(middle) != 3 or not middle[0].isdigit():
            continue  # not one of ours
        pid, tag = int(middle[0]), middle[1]
        if pid == os.getpid() and tag == _PROCESS_TAG:
            continue  # a write of this process, in flight right now
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if pid != os.getpid() and _process_alive(pid) and age < STALE_SCRATCH_SECONDS:
            continue  # another live process is writing it
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` in one step: a reader (or a crash) sees the old file or the new one.

    The bytes go to a hidden scratch file beside it, are flushed to disk, and renamed over it; the
    folder is flushed too, so the new name survives a power cut. A failure removes the scratch file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(scratch_name(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(scratch, flags, 0o666 if mode is None else mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:
            os.chmod(scratch, stat.S_IMODE(mode))
        os.replace(scratch, path)
    except BaseException:
        try:
            os.unlink(scratch)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
