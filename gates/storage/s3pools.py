"""Image pools on an object store: immutable item objects, one marker per item naming its state.

    <prefix>gate_pool/<pool>/pool.json                   the pool exists; {"next": N}, the counter
    <prefix>gate_pool/<pool>/items/<name>.png            an item's pixels (never changed; metadata: pixel hash)
    <prefix>gate_pool/<pool>/items/<name>.txt            its caption, exactly (only when it has one)
    <prefix>gate_pool/<pool>/state/<state>/<name>[~c]    the commit of an item and its state (~c: captioned)
    <prefix>gate_pool/<pool>/pixels/<sha256>             the claim of a pixel hash by one item (skip_duplicates)
    <prefix>gate_pool/<pool>/moves/<time>-<random>       a move in flight: which markers go where

The rules (docs/object_storage.md has the whole protocol and why each step is where it is):
- Names come from the counter, advanced with If-Match (a lost race reads again and retries), so two
  servers never get the same number; item objects are written with If-None-Match, so even a counter
  set back by hand cannot overwrite an item.
- An add uploads caption then PNG, and commits the item by creating its pending marker last. An item
  without a marker is invisible; `sweep` removes such leftovers of a crashed add after an hour.
- A move (a grid decision) writes a moves/ record first, then the new marker, then deletes the old
  one and the record. A reader that meets a record treats its items as already in their new state
  (it is still running) or, a minute later, finishes it (its writer died): no item is ever seen in
  two states or lost between them.
- A page lists pending markers from the oldest, only as many as it shows (one request for up to 1000),
  and takes the counts from a listing of all markers at most COUNT_SECONDS old plus this server's own
  changes: a 10,000-item pool is not listed in full on every page.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import imaging
from ..constants import POOL_KEPT, POOL_PENDING, POOL_REJECTED, POOL_STATES
from . import ObjectLocation
from .objects import Conflict, store_for

log = logging.getLogger("datasete_gates")

POOL_FORMAT = "datasete-gate-pool"
CAPTIONED = "~c"
COUNTER_RETRIES = 200
# A moves/ record this old belongs to a writer that died (a move takes milliseconds): it is finished.
ROLL_FORWARD_SECONDS = 60
# Item objects without a marker this old belong to an add that died: they are removed.
STALE_SECONDS = 3600
# Counts on a page come from a listing of every marker at most this old, plus this server's changes.
COUNT_SECONDS = 10.0
STATE_PRECEDENCE = (POOL_KEPT, POOL_REJECTED, POOL_PENDING)

_workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="datasete-s3-pool")


def _pools_mod():
    from .. import pools

    return pools


# --- keys ------------------------------------------------------------------------------------------

def pool_prefix(base: ObjectLocation, pool: str) -> str:
    return f"{base.prefix}{pool}/"


def _key(base, pool, *parts) -> str:
    return pool_prefix(base, pool) + "/".join(parts)


def marker_key(base, pool, state: str, name: str, captioned: bool) -> str:
    return _key(base, pool, "state", state, name + (CAPTIONED if captioned else ""))


def _parse_marker(rest: str) -> tuple[str, str, bool] | None:
    """(state, name, captioned) of a key below state/, else None."""
    state, _, leaf = rest.partition("/")
    if state not in POOL_STATES or not leaf:
        return None
    captioned = leaf.endswith(CAPTIONED)
    name = leaf[:-len(CAPTIONED)] if captioned else leaf
    return (state, name, captioned) if _pools_mod().imagebus.is_valid_id(name) else None


def pool_url(base: ObjectLocation, pool: str) -> str:
    return f"s3://{base.bucket}/{pool_prefix(base, pool)}"


# --- the pool object and the counter -------------------------------------------------------------

def _read_pool(store, base, pool):
    found = store.get(_key(base, pool, "pool.json"))
    if found is None:
        return None, None
    raw, etag = found
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        data = {}
    return data, etag


def exists(base, pool) -> bool:
    return store_for(base).head(_key(base, pool, "pool.json")) is not None


def _require(store, base, pool) -> None:
    if store.head(_key(base, pool, "pool.json")) is None:
        raise _pools_mod().PoolNotFound(f"pool {pool!r} does not exist ({pool_url(base, pool)})")


def _ensure(store, base, pool) -> None:
    if store.head(_key(base, pool, "pool.json")) is not None:
        return
    body = json.dumps({"format": POOL_FORMAT, "next": 1}).encode()
    try:
        store.put(_key(base, pool, "pool.json"), body, if_none_match=True, content_type="application/json")
    except Conflict:
        pass  # another server made it first


def reserve_numbers(base, pool, count: int) -> int:
    """The first of `count` numbers nobody else will get: the counter advanced with If-Match."""
    store = store_for(base)
    for attempt in range(COUNTER_RETRIES):
        data, etag = _read_pool(store, base, pool)
        if etag is None:
            raise _pools_mod().PoolNotFound(f"pool {pool!r} does not exist ({pool_url(base, pool)})")
        first = data.get("next")
        first = first if isinstance(first, int) and not isinstance(first, bool) and first >= 1 else 1
        body = json.dumps({"format": POOL_FORMAT, "next": first + count}).encode()
        try:
            store.put(_key(base, pool, "pool.json"), body, if_match=etag, content_type="application/json")
            return first
        except Conflict:
            if attempt >= 3:
                time.sleep(min(0.002 * attempt, 0.05) * (1 + secrets.randbelow(100) / 100))
    raise _pools_mod().PoolBusy(f"pool {pool!r} is busy: its counter kept changing ({COUNTER_RETRIES} tries)")


# --- reading the markers ---------------------------------------------------------------------------

@dataclass
class Marker:
    name: str
    state: str
    captioned: bool
    key: str
    modified: float | None = None


def _resolve(found: dict[str, list[Marker]], moving: dict[str, Marker]) -> dict[str, Marker]:
    """One state per item: a move in flight decides; else the only marker; else the state precedence."""
    resolved = {}
    for name, markers in found.items():
        if name in moving:
            resolved[name] = moving[name]
        elif len(markers) == 1:
            resolved[name] = markers[0]
        else:
            resolved[name] = min(markers, key=lambda m: STATE_PRECEDENCE.index(m.state))
    return resolved


def _moves(store, base, pool) -> dict[str, Marker]:
    """Items in a move in flight -> their new marker. Records of dead writers are finished first."""
    objects, _ = store.list(_key(base, pool, "moves/"))
    moving: dict[str, Marker] = {}
    now = time.time_ns()
    for entry in objects:
        record = _read_record(store, entry["key"])
        if record is None:
            continue
        stamp = entry["key"].rsplit("/", 1)[1].split("-", 1)[0]
        age = (now - int(stamp)) / 1e9 if stamp.isdigit() else float("inf")
        if age > ROLL_FORWARD_SECONDS:
            _finish(store, base, pool, entry["key"], record)
            continue
        for name, _old_key, new_state, captioned in record:
            moving[name] = Marker(name, new_state, captioned, marker_key(base, pool, new_state, name, captioned))
    return moving


def _read_record(store, key):
    found = store.get(key)
    if found is None:
        return None
    try:
        moves = json.loads(found[0].decode("utf-8"))["moves"]
        return [(str(n), str(old), str(state), bool(c)) for n, old, state, c in moves if state in POOL_STATES]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return []


def _finish(store, base, pool, record_key, record) -> None:
    """Finish a move whose writer died: every new marker in (if the item is still there), old ones out."""
    for name, old_key, new_state, captioned in record:
        if store.head(_key(base, pool, "items", f"{name}.png")) is not None:
            store.put(marker_key(base, pool, new_state, name, captioned), b"")
        if old_key != marker_key(base, pool, new_state, name, captioned):
            store.delete([old_key])
    store.delete([record_key])
    log.info("pool %r: finished a move left by a server that stopped (%s)", pool, record_key)


def _all_markers(store, base, pool) -> dict[str, Marker]:
    """Every item's marker (the full listing: only for counts, sweeps and the command line)."""
    objects, _ = store.list(_key(base, pool, "state/"))
    cut = len(_key(base, pool, "state/"))
    found: dict[str, list[Marker]] = {}
    for entry in objects:
        parsed = _parse_marker(entry["key"][cut:])
        if parsed:
            state, name, captioned = parsed
            modified = entry.get("modified")
            found.setdefault(name, []).append(Marker(name, state, captioned, entry["key"],
                                                     modified.timestamp() if modified is not None else None))
    moving = _moves(store, base, pool)
    resolved = _resolve(found, moving)
    # Markers a resolved item left behind (two servers deciding one item at once, hand edits) are tidied
    # once all of them are older than any live move takes: a younger one may be a move whose record
    # was written after moves/ was listed, and removing its new marker would lose the item.
    now = time.time()

    def settled(marker_list):
        return all(m.modified is not None and now - m.modified > ROLL_FORWARD_SECONDS for m in marker_list)

    extra = [m.key for name, markers in found.items() if name not in moving and len(markers) > 1
             and settled(markers) for m in markers if m.key != resolved[name].key]
    if extra:
        store.delete(extra)
    return resolved


# --- counts ----------------------------------------------------------------------------------------

_counts: dict[tuple, tuple[float, dict[str, int]]] = {}
_counts_lock = threading.Lock()


def counts(base, pool, fresh: bool = False) -> dict[str, int]:
    """pending / kept / rejected: a full listing at most COUNT_SECONDS old, plus this server's changes."""
    key = (base.bucket, pool_prefix(base, pool))
    with _counts_lock:
        cached = _counts.get(key)
    if cached is not None and not fresh and time.monotonic() - cached[0] < COUNT_SECONDS:
        return dict(cached[1])
    store = store_for(base)
    tally = dict.fromkeys(POOL_STATES, 0)
    for marker in _all_markers(store, base, pool).values():
        tally[marker.state] += 1
    with _counts_lock:
        _counts[key] = (time.monotonic(), tally)
    return dict(tally)


def _count_change(base, pool, changes: dict[str, int]) -> dict[str, int]:
    key = (base.bucket, pool_prefix(base, pool))
    with _counts_lock:
        cached = _counts.get(key)
        if cached is not None:
            tally = cached[1]
            for state, delta in changes.items():
                tally[state] = max(0, tally[state] + delta)
    return counts(base, pool)


def _forget_counts(base, pool) -> None:
    with _counts_lock:
        _counts.pop((base.bucket, pool_prefix(base, pool)), None)


# --- adding ----------------------------------------------------------------------------------------

def add_frames(base, pool, frames, captions, skip_duplicates, compress_level, digests):
    """The object-store add (pools.add_frames checked the arguments and hashed the pixels)."""
    pools = _pools_mod()
    store = store_for(base)
    _ensure(store, base, pool)
    encoded = [None if not caption else caption.encode("utf-8") for caption in captions]
    duplicates, todo, seen = [], [], set()
    for position, digest in enumerate(digests):
        if skip_duplicates and digest in seen:
            duplicates.append(position)
            continue
        seen.add(digest)
        todo.append(position)
    if skip_duplicates and todo:
        claimed = list(_workers.map(lambda p: store.head(_key(base, pool, "pixels", digests[p])) is not None, todo))
        duplicates += [p for p, taken in zip(todo, claimed, strict=True) if taken]
        todo = [p for p, taken in zip(todo, claimed, strict=True) if not taken]
    added: list[str] = []
    if todo:
        first = reserve_numbers(base, pool, len(todo))
        names = {p: pools.item_name(first + k) for k, p in enumerate(todo)}
        if skip_duplicates:
            # The claim is the race's referee: of two servers adding the same pixels, one claim goes in.
            def claim(p):
                try:
                    store.put(_key(base, pool, "pixels", digests[p]), names[p].encode(), if_none_match=True)
                    return True
                except Conflict:
                    return False
            won = list(_workers.map(claim, todo))
            duplicates += [p for p, ok in zip(todo, won, strict=True) if not ok]
            todo = [p for p, ok in zip(todo, won, strict=True) if ok]

        def upload(p):
            name = names[p]
            png = imaging.encode_png(frames[p], compress_level)
            if encoded[p] is not None:
                store.put(_key(base, pool, "items", f"{name}.txt"), encoded[p], if_none_match=True,
                          content_type="text/plain; charset=utf-8")
            store.put(_key(base, pool, "items", f"{name}.png"), png, if_none_match=True,
                      metadata={"pixels": digests[p]}, content_type="image/png")
            return p

        try:
            for _ in _workers.map(upload, todo):
                pass
        except imaging.ImagingError as exc:
            raise pools.PoolError(f"pool {pool!r}: could not write an item: {exc}") from exc
        except Conflict as exc:
            raise pools.PoolError(f"pool {pool!r}: an item of that name exists already; not overwriting it "
                                  f"(was pool.json set back?): {exc}") from None
        # The commit: one marker per item, in frame order. Until its marker exists an item is nowhere.
        for p in todo:
            store.put(marker_key(base, pool, POOL_PENDING, names[p], encoded[p] is not None), b"", if_none_match=True)
            added.append(names[p])
    duplicates.sort()
    total = _count_change(base, pool, {POOL_PENDING: len(added)})
    return pools.AddResult(pool, added, duplicates, total, [])


# --- pages and reads -------------------------------------------------------------------------------

def pending_markers(store, base, pool, limit: int) -> list[Marker]:
    """The oldest `limit` pending items: a listing of the pending markers that stops there."""
    prefix = _key(base, pool, "state", POOL_PENDING) + "/"
    moving = _moves(store, base, pool)
    want = max(0, int(limit))
    out: list[Marker] = []
    start = None
    cut = len(_key(base, pool, "state/"))
    while len(out) < want:
        # A few more than wanted: items in a move in flight are left out of the page.
        batch = want - len(out) + len(moving) + 1
        objects, _ = store.list(prefix, start_after=start, limit=batch)
        for entry in objects:
            parsed = _parse_marker(entry["key"][cut:])
            if parsed is None:
                continue
            _state, name, captioned = parsed
            if (name in moving and moving[name].state != POOL_PENDING) or (out and out[-1].name == name):
                continue
            out.append(Marker(name, POOL_PENDING, captioned, entry["key"]))
        if len(objects) < batch:
            break
        start = objects[-1]["key"]
    pools = _pools_mod()
    out.sort(key=lambda m: pools.sort_key(m.name))
    return out[:want]


def read_png(store, base, pool, marker: Marker) -> bytes:
    pools = _pools_mod()
    found = store.get(_key(base, pool, "items", f"{marker.name}.png"))
    if found is None:
        raise pools.ItemNotFound(f"pool {pool!r}: {marker.name}.png is missing (removed meanwhile?)")
    return found[0]


def read_caption(store, base, pool, marker: Marker) -> str | None:
    if not marker.captioned:
        return None
    pools = _pools_mod()
    found = store.get(_key(base, pool, "items", f"{marker.name}.txt"))
    if found is None:
        raise pools.ItemNotFound(f"pool {pool!r}: {marker.name}.txt is missing (removed meanwhile?)")
    try:
        return found[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise pools.PoolError(f"pool {pool!r}: {marker.name}.txt is not UTF-8 text ({exc})") from None


def _decode(pool, marker, raw) -> np.ndarray:
    pools = _pools_mod()
    try:
        return imaging.read_image_pixels(raw)
    except imaging.ImagingError as exc:
        raise pools.PoolError(f"pool {pool!r}: {marker.state}/{marker.name}.png is not a readable image "
                              f"({str(exc).replace('payload', 'the file')})") from None


def pending_page(base, pool, limit: int):
    pools = _pools_mod()
    store = store_for(base)
    _require(store, base, pool)
    markers = pending_markers(store, base, pool, limit)

    def load(marker):
        return pools.PageItem(marker.name, POOL_PENDING, f"{marker.name}.png",
                              _decode(pool, marker, read_png(store, base, pool, marker)),
                              read_caption(store, base, pool, marker))

    items = list(_workers.map(load, markers))
    tally = counts(base, pool)
    # The cached count cannot be below what this page just saw.
    if tally[POOL_PENDING] < len(items):
        tally = counts(base, pool, fresh=True)
    return pools.Page(pool, items, max(tally[POOL_PENDING], len(items)), tally)


def _locate(store, base, pool, names: list[str]) -> dict[str, Marker]:
    """The current marker of each named item (absent names are left out); pending looked at first."""
    moving = _moves(store, base, pool)
    found: dict[str, list[Marker]] = {}
    cut = len(_key(base, pool, "state/"))
    wanted = set(names)

    def look(name):
        hits = []
        for state in POOL_STATES:
            objects, _ = store.list(_key(base, pool, "state", state, name), limit=3)
            for entry in objects:
                parsed = _parse_marker(entry["key"][cut:])
                if parsed and parsed[1] == name:
                    hits.append(Marker(name, parsed[0], parsed[2], entry["key"]))
            if hits and state == POOL_PENDING:
                break  # the usual case, a grid decision: one request
        return name, hits

    pools = _pools_mod()
    ordered = sorted(wanted, key=pools.sort_key)
    if len(ordered) > 2:
        # A grid decision names a run of the oldest pending items: one listing from the first usually
        # finds them all; only names it missed are looked up one by one.
        first = ordered[0]
        before = first[:-1] + chr(ord(first[-1]) - 1) + "\x7f"  # sorts after every key below `first`
        prefix = _key(base, pool, "state", POOL_PENDING) + "/"
        objects, _ = store.list(prefix, start_after=prefix + before,
                                limit=min(1000, len(ordered) + len(moving) + 8))
        for entry in objects:
            parsed = _parse_marker(entry["key"][cut:])
            if parsed and parsed[1] in wanted:
                found.setdefault(parsed[1], []).append(Marker(parsed[1], parsed[0], parsed[2], entry["key"]))
    for name, hits in _workers.map(look, [name for name in ordered if name not in found]):
        if hits:
            found[name] = hits
    return _resolve(found, {n: m for n, m in moving.items() if n in found})


def read_items(base, pool, names):
    pools = _pools_mod()
    store = store_for(base)
    _require(store, base, pool)
    names = list(names)
    located = _locate(store, base, pool, names)
    out = []
    for name in names:
        marker = located.get(name)
        if marker is None:
            raise pools.ItemNotFound(f"pool {pool!r} has no item {name!r}")
        item = pools.Item(name, marker.state, f"{name}.png", f"{name}.txt" if marker.captioned else None)
        out.append((item, _decode(pool, marker, read_png(store, base, pool, marker)),
                    read_caption(store, base, pool, marker)))
    return out


# --- moving and removing ---------------------------------------------------------------------------

def move(base, pool, targets: dict[str, str]):
    pools = _pools_mod()
    store = store_for(base)
    _require(store, base, pool)
    located = _locate(store, base, pool, list(targets))
    moved, missing, plan = {}, [], []
    for name, state in targets.items():
        marker = located.get(name)
        if marker is None:
            missing.append(name)
            continue
        moved[name] = state
        if marker.state != state:
            plan.append((name, marker, state))
    changes = dict.fromkeys(POOL_STATES, 0)
    if plan:
        record_key = _key(base, pool, "moves", f"{time.time_ns():020d}-{secrets.token_hex(6)}")
        record = {"moves": [[name, marker.key, state, marker.captioned] for name, marker, state in plan]}
        store.put(record_key, json.dumps(record).encode(), if_none_match=True, content_type="application/json")
        # From here on every reader sees these items in their new state; the markers follow.
        for _ in _workers.map(lambda step: store.put(marker_key(base, pool, step[2], step[0], step[1].captioned), b""),
                              plan):
            pass
        store.delete([marker.key for _name, marker, _state in plan])
        store.delete([record_key])
        for _name, marker, state in plan:
            changes[marker.state] -= 1
            changes[state] += 1
    return pools.MoveResult(pool, moved, missing, _count_change(base, pool, changes))


def remove_items(base, pool, names):
    """Each item's marker goes first (it is gone for every reader), then its objects and pixel claim."""
    pools = _pools_mod()
    store = store_for(base)
    _require(store, base, pool)
    located = _locate(store, base, pool, list(names))
    removed, missing = {}, []
    changes = dict.fromkeys(POOL_STATES, 0)
    for name in names:
        marker = located.get(name)
        if marker is None:
            missing.append(name)
            continue
        _remove_item(store, base, pool, name)
        removed[name] = marker.state
        changes[marker.state] -= 1
    return pools.MoveResult(pool, removed, missing, _count_change(base, pool, changes))


def _remove_item(store, base, pool, name: str) -> None:
    markers = [marker_key(base, pool, state, name, c) for state in POOL_STATES for c in (False, True)]
    store.delete(markers)
    head = store.head(_key(base, pool, "items", f"{name}.png"))
    digest = (head or {}).get("metadata", {}).get("pixels")
    if digest:
        claim = store.get(_key(base, pool, "pixels", digest))
        if claim is not None and claim[0].decode("utf-8", "replace") == name:
            store.delete([_key(base, pool, "pixels", digest)])
    store.delete([_key(base, pool, "items", f"{name}.txt"), _key(base, pool, "items", f"{name}.png")])


def remove_pool(base, pool) -> bool:
    """pool.json goes first (the pool is gone for every reader), then everything under it."""
    store = store_for(base)
    if store.head(_key(base, pool, "pool.json")) is None:
        return False
    store.delete([_key(base, pool, "pool.json")])
    objects, _ = store.list(pool_prefix(base, pool))
    store.delete([entry["key"] for entry in objects])
    _forget_counts(base, pool)
    return True


def list_pools(base) -> list[dict]:
    store = store_for(base)
    _objects, prefixes = store.list(base.prefix, delimiter="/")
    pools = _pools_mod()
    out = []
    for prefix in sorted(prefixes):
        pool = prefix[len(base.prefix):].rstrip("/")
        if not pools.imagebus.is_valid_id(pool) or store.head(_key(base, pool, "pool.json")) is None:
            continue
        out.append({"id": pool, **counts(base, pool)})
    return out


def items(base, pool, state: str | None = None) -> list[tuple[object, int, str | None]]:
    """Every item (or those in `state`) with its PNG's size and its caption: for the command line."""
    pools = _pools_mod()
    store = store_for(base)
    _require(store, base, pool)
    markers = sorted(_all_markers(store, base, pool).values(), key=lambda m: pools.sort_key(m.name))
    out = []
    for wanted in POOL_STATES:
        for marker in markers:
            if marker.state != wanted or (state is not None and wanted != state):
                continue
            head = store.head(_key(base, pool, "items", f"{marker.name}.png"))
            item = pools.Item(marker.name, marker.state, f"{marker.name}.png",
                              f"{marker.name}.txt" if marker.captioned else None)
            out.append((item, (head or {}).get("size", 0), read_caption(store, base, pool, marker)))
    return out


def read_item_png(base, pool, item) -> bytes:
    store = store_for(base)
    return read_png(store, base, pool, Marker(item.name, item.state, item.caption is not None, ""))


# --- leftovers -------------------------------------------------------------------------------------

def sweep(base, pool) -> int:
    """Remove what adds that died left (item objects and claims with no marker, an hour old) and finish
    moves whose writer died. Lists the whole pool: run once per process and pool."""
    store = store_for(base)
    committed = set(_all_markers(store, base, pool))
    objects, _ = store.list(_key(base, pool, "items/"))
    cut = len(_key(base, pool, "items/"))
    now = time.time()
    doomed = []
    for entry in objects:
        name = entry["key"][cut:].rsplit(".", 1)[0]
        modified = entry.get("modified")
        age = now - modified.timestamp() if modified is not None else float("inf")
        if name not in committed and age > STALE_SECONDS:
            doomed.append(entry["key"])
    claims, _ = store.list(_key(base, pool, "pixels/"))
    for entry in claims:
        modified = entry.get("modified")
        age = now - modified.timestamp() if modified is not None else float("inf")
        if age <= STALE_SECONDS:
            continue
        found = store.get(entry["key"])
        if found is not None and found[0].decode("utf-8", "replace") not in committed:
            doomed.append(entry["key"])
    if doomed:
        store.delete(doomed)
    return len(doomed)


_swept: set[tuple] = set()
_swept_lock = threading.Lock()


def sweep_root(base) -> int:
    """Sweep every pool of the store once per process (the object-store side of pools.sweep_root)."""
    key = (base.bucket, base.prefix)
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    store = store_for(base)
    _objects, prefixes = store.list(base.prefix, delimiter="/")
    handled = 0
    for prefix in prefixes:
        pool = prefix[len(base.prefix):].rstrip("/")
        if _pools_mod().imagebus.is_valid_id(pool):
            handled += sweep(base, pool)
    return handled

