"""python -m gates.storage: check that the store DATASETE_GATES_STORE names can hold slots and pools.

It writes one probe object under the prefix and checks the two conditional writes the protocol relies
on (docs/object_storage.md): a second create with If-None-Match must fail, a replace with a wrong
If-Match must fail, a replace with the right one must succeed. Then it removes the probe. Exit 0: usable;
1: the store answered but does not honour the conditions (do not use it); 2: not configured or not
reachable.
"""

from __future__ import annotations

import secrets
import sys

from . import STORE_ENV, StoreConfigError, configured_store


def main() -> int:
    try:
        location = configured_store()
    except StoreConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if location is None:
        print(f"{STORE_ENV} is not set: slots and pools live in ComfyUI's input folder")
        return 0
    from .objects import Conflict, StoreError, store_for

    key = f"{location.prefix}.probe-{secrets.token_hex(6)}"
    try:
        store = store_for(location)
        etag = store.put(key, b"1", if_none_match=True)
        problems = []
        try:
            store.put(key, b"2", if_none_match=True)
            problems.append("a second create with If-None-Match: * succeeded")
        except Conflict:
            pass
        try:
            store.put(key, b"3", if_match='"00000000000000000000000000000000"')
            problems.append("a replace with a wrong If-Match succeeded")
        except Conflict:
            pass
        try:
            store.put(key, b"4", if_match=store.head(key)["etag"] or etag)
        except Conflict:
            problems.append("a replace with the right If-Match failed")
        store.delete([key])
    except StoreError as exc:
        print(f"error: {location}: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{location} does not honour conditional writes: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{location}: conditional writes honoured; slots and pools can live here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
