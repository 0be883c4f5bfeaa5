"""The disk image bus on an object store: immutable versions and one pointer per slot, committed last.

    <prefix>gate_bus/heads/<id>                      the pointer: which version is the slot (JSON)
    <prefix>gate_bus/versions/<id>/<version>/<file>  the files of one version, never changed

A publish uploads a new version's files under a fresh version name, then writes the pointer with a
conditional request (If-Match on the pointer it read, or If-None-Match for a new slot). Until that
request succeeds nobody can reach the new files; once it does every reader's next look finds them
all. A publish that loses the race (another server's pointer went in first) commits on top of it:
the last commit wins and each version is complete. The version a commit replaced is deleted after
it; a reader that was reading it meets a missing file, sees the pointer changed and reads again.
A publish that died before its commit left only unreachable files: `sweep` removes versions the
pointer does not name once they are an hour old (a version name starts with its creation time).
docs/object_storage.md has the whole protocol.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from types import SimpleNamespace

from .. import imagebus
from . import ObjectLocation
from .objects import Conflict, store_for

POINTER_FORMAT = "datasete-gate-slot-pointer"
COMMIT_RETRIES = 64
# A version that no pointer names is only removed once this old: younger ones may be mid-publish on
# another server (the time is the version's own, from its name, so clocks may differ by minutes).
STALE_VERSION_SECONDS = 3600
UPLOAD_WORKERS = 8

_uploads = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS, thread_name_prefix="datasete-s3-put")


def _root(base: ObjectLocation) -> str:
    return base.prefix


def head_key(base: ObjectLocation, bus_id: str) -> str:
    return f"{_root(base)}heads/{bus_id}"


def version_prefix(base: ObjectLocation, bus_id: str, version: str | None = None) -> str:
    return f"{_root(base)}versions/{bus_id}/" + (f"{version}/" if version else "")


def new_version() -> str:
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}"


def version_age(version: str, now_ns: int | None = None) -> float:
    stamp = version.split("-", 1)[0]
    if not stamp.isdigit():
        return float("inf")  # not one of ours: a leftover of nobody
    return ((now_ns or time.time_ns()) - int(stamp)) / 1e9


def slot_url(base: ObjectLocation, bus_id: str) -> str:
    imagebus.validate_id(bus_id)
    return f"s3://{base.bucket}/{head_key(base, bus_id)}"


def _parse_pointer(raw: bytes) -> dict:
    """A slot pointer from its JSON bytes; ValueError when they hold none."""
    pointer = json.loads(raw.decode("utf-8"))  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(pointer, dict) or pointer.get("format") != POINTER_FORMAT \
            or not isinstance(pointer.get("files"), dict) or not isinstance(pointer.get("version"), str):
        raise ValueError("not a slot pointer")
    return pointer


def _read_pointer(store, base, bus_id, lenient: bool = False):
    """The slot's pointer and its etag ((None, None) without one).

    A bad pointer fails the read with SlotError, or, when `lenient` (a commit about to replace it, whose
    write its etag still guards), reads as (None, etag).
    """
    found = store.get(head_key(base, bus_id))
    if found is None:
        return None, None
    raw, etag = found
    try:
        return _parse_pointer(raw), etag
    except ValueError as exc:
        if lenient:
            return None, etag
        raise imagebus.SlotError(f"slot {bus_id!r}: its pointer {head_key(base, bus_id)} is bad: {exc}") from None


def publish(base: ObjectLocation, bus_id: str, files: dict[str, bytes]) -> dict:
    """Make `files` the slot's contents in one step; returns the committed pointer."""
    imagebus.validate_id(bus_id)
    store = store_for(base)
    version = new_version()
    prefix = version_prefix(base, bus_id, version)
    for _ in _uploads.map(lambda item: store.put(prefix + item[0], item[1], if_none_match=True), files.items()):
        pass
    pointer = {"format": POINTER_FORMAT, "version": version,
               "files": {name: len(data) for name, data in files.items()},
               "published_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    body = json.dumps(pointer).encode()
    try:
        previous = _commit(store, base, bus_id, body)
    except BaseException:
        store.delete([prefix + name for name in files])  # never reachable: take it back now
        raise
    if previous is not None and previous["version"] != version:
        store.delete([version_prefix(base, bus_id, previous["version"]) + name for name in previous["files"]])
    return pointer


def _commit(store, base, bus_id, body: bytes) -> dict | None:
    """Write the pointer over the one read just before; on losing a race, read again and retry."""
    for _ in range(COMMIT_RETRIES):
        previous, etag = _read_pointer(store, base, bus_id, lenient=True)
        try:
            if etag is None:
                store.put(head_key(base, bus_id), body, if_none_match=True, content_type="application/json")
            else:
                store.put(head_key(base, bus_id), body, if_match=etag, content_type="application/json")
            return previous
        except Conflict:
            continue
    raise imagebus.SlotError(f"slot {bus_id!r}: could not commit the new version (too much contention)")


class RemoteSlotReader:
    """Reads the files of one committed version (the same calls as imagebus.SlotReader)."""

    def __init__(self, store, base, bus_id, pointer):
        self.bus_id = bus_id
        self._store = store
        self._prefix = version_prefix(base, bus_id, pointer["version"])
        self._files = pointer["files"]
        try:
            stamp = datetime.fromisoformat(pointer.get("published_at", "")).timestamp()
        except (TypeError, ValueError):
            stamp = 0.0
        self._mtime = stamp

    def names(self) -> list[str]:
        return sorted(self._files)

    def stat(self, name: str):
        if name not in self._files:
            raise FileNotFoundError(name)
        return SimpleNamespace(st_size=int(self._files[name]), st_mtime=self._mtime)

    def exists(self, name: str) -> bool:
        return name in self._files

    def read_bytes(self, name: str) -> bytes:
        if name not in self._files:
            raise FileNotFoundError(name)
        found = self._store.get(self._prefix + name)
        if found is None:
            raise _VersionGone(name)
        return found[0]


class _VersionGone(FileNotFoundError):
    """A file of the version being read was deleted: a newer version was committed meanwhile."""


def read_slot(base: ObjectLocation, bus_id: str, read):
    """Run `read(reader)` on the committed version; again on the newer one if it was replaced mid-read."""
    imagebus.validate_id(bus_id)
    store = store_for(base)
    for attempt in range(imagebus.READ_RETRIES):
        if attempt >= 2:
            time.sleep(min(0.005 * attempt, 0.1))
        pointer, _etag = _read_pointer(store, base, bus_id)
        if pointer is None or not pointer["files"]:
            raise imagebus.SlotNotFound(f"slot {bus_id!r} does not exist or is empty ({slot_url(base, bus_id)})")
        try:
            return read(RemoteSlotReader(store, base, bus_id, pointer))
        except Exception:
            again, _ = _read_pointer(store, base, bus_id)
            if again is not None and again.get("version") == pointer["version"]:
                raise  # the same version: the failure is the slot's own
            continue
    raise imagebus.SlotError(f"slot {bus_id!r}: kept changing while being read")


def list_ids(base: ObjectLocation) -> list[str]:
    """Sorted ids of the committed slots: one listing of the pointers (1 request per 1000 slots)."""
    store = store_for(base)
    objects, _ = store.list(f"{_root(base)}heads/")
    cut = len(f"{_root(base)}heads/")
    return sorted(name for name in (entry["key"][cut:] for entry in objects) if imagebus.is_valid_id(name))


def delete_id(base: ObjectLocation, bus_id: str) -> bool:
    """Remove the pointer (readers see the slot gone at once), then its version's files."""
    imagebus.validate_id(bus_id)
    store = store_for(base)
    pointer, etag = _read_pointer(store, base, bus_id, lenient=True)
    if etag is None:
        return False
    store.delete([head_key(base, bus_id)])
    if pointer is not None:
        store.delete([version_prefix(base, bus_id, pointer["version"]) + name for name in pointer["files"]])
    return True


def sweep(base: ObjectLocation) -> int:
    """Remove versions no pointer names once they are STALE_VERSION_SECONDS old; returns how many."""
    store = store_for(base)
    objects, _ = store.list(f"{_root(base)}versions/")
    cut = len(f"{_root(base)}versions/")
    by_version: dict[tuple[str, str], list[str]] = {}
    for entry in objects:
        parts = entry["key"][cut:].split("/", 2)
        if len(parts) == 3:
            by_version.setdefault((parts[0], parts[1]), []).append(entry["key"])
    now = time.time_ns()
    current: dict[str, str | None] = {}
    doomed: list[str] = []
    versions = 0
    for (bus_id, version), keys in sorted(by_version.items()):
        if version_age(version, now) < STALE_VERSION_SECONDS:
            continue
        if bus_id not in current:
            pointer = _read_pointer(store, base, bus_id, lenient=True)[0] if imagebus.is_valid_id(bus_id) else None
            current[bus_id] = None if pointer is None else pointer["version"]
        if current[bus_id] == version:
            continue
        doomed += keys
        versions += 1
    if doomed:
        store.delete(doomed)
    return versions
