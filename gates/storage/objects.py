"""The few object-store requests the protocol needs, over s3fs (an optional requirement).

Every request names one key. Conditional writes are what replace renames and locks:
  put(..., if_none_match=True)   create only if no object has the key (If-None-Match: *)
  put(..., if_match=etag)        replace only the version read before (If-Match: <etag>)
A failed condition raises Conflict; the caller re-reads and decides. S3 (since 2024-08 for
If-None-Match, 2024-11 for If-Match), MinIO, R2 and moto's server honour both.

Requests are counted per kind (`requests`), for the benchmarks: on a remote store they, not
milliseconds of CPU, are what is billed and what latency multiplies.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

from . import ObjectLocation

MAX_DELETE_BATCH = 1000


class StoreError(OSError):
    """The object store refused or failed a request; the message names the store and the key."""


class Conflict(StoreError):
    """A conditional write lost: another writer created or changed the object first."""


class StoreUnavailable(StoreError):
    """s3fs is not installed, or the store cannot be reached."""


def _s3fs():
    try:
        import s3fs
    except ImportError:
        raise StoreUnavailable(
            "DATASETE_GATES_STORE names an s3:// store but s3fs is not installed: "
            "pip install -r requirements-s3.txt (or pip install s3fs)") from None
    return s3fs


def _client_error_code(exc: BaseException) -> tuple[str, int]:
    cause = exc
    while cause is not None:
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(error.get("Code", "")), int(status or 0)
        cause = cause.__cause__
    return "", 0


def _is_conflict(exc: BaseException) -> bool:
    code, status = _client_error_code(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


def _is_missing(exc: BaseException) -> bool:
    code, status = _client_error_code(exc)
    return isinstance(exc, FileNotFoundError) or status == 404 or code in ("NoSuchKey", "404", "NotFound")


class ObjectStore:
    """One bucket. Thread-safe: s3fs runs its requests on its own event loop thread."""

    def __init__(self, bucket: str):
        s3fs = _s3fs()
        self.bucket = bucket
        # Its own instance (not s3fs's cache): the endpoint and credentials of this moment's environment.
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        self.requests: Counter = Counter()
        self._count_lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._count_lock:
            self.requests[kind] += 1

    def _run(self, coro):
        from fsspec.asyn import sync

        return sync(self.fs.loop, lambda: coro)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _fail(self, exc: BaseException, what: str, key: str) -> StoreError:
        code, status = _client_error_code(exc)
        detail = f"{code} (HTTP {status})" if code else str(exc)
        return StoreError(f"object store: {what} {self._where(key)} failed: {detail}")

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, etag) of the object, or None when there is none."""
        async def go():
            response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=key)
            body = response["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
            return data, response.get("ETag", "")

        self._count("GET")
        try:
            return self._run(go())
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._fail(exc, "reading", key) from exc

    def head(self, key: str) -> dict | None:
        """{"etag", "size", "metadata", "modified"} of the object, or None when there is none."""
        self._count("HEAD")
        try:
            response = self._run(self.fs._call_s3("head_object", Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._fail(exc, "looking up", key) from exc
        return {"etag": response.get("ETag", ""), "size": response.get("ContentLength", 0),
                "metadata": response.get("Metadata", {}) or {}, "modified": response.get("LastModified")}

    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None,
             delimiter: str | None = None) -> tuple[list[dict], list[str]]:
        """Objects under `prefix` in key order ({"key", "size", "modified"}), and the common prefixes
        when `delimiter` is given. `limit` stops early: a page of a 10,000-object listing costs one
        request, not ten; `start_after` continues after a key."""
        objects: list[dict] = []
        prefixes: list[str] = []
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            if limit is not None:
                kwargs["MaxKeys"] = max(1, min(1000, limit - len(objects)))
            self._count("LIST")
            try:
                response = self._run(self.fs._call_s3("list_objects_v2", **kwargs))
            except Exception as exc:
                raise self._fail(exc, "listing", prefix) from exc
            for entry in response.get("Contents", []) or []:
                objects.append({"key": entry["Key"], "size": entry.get("Size", 0),
                                "modified": entry.get("LastModified")})
            prefixes += [entry["Prefix"] for entry in response.get("CommonPrefixes", []) or []]
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token or (limit is not None and len(objects) >= limit):
                return objects, prefixes

    # --- writes --------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None,
            metadata: dict | None = None, content_type: str | None = None) -> str:
        """Write the object whole (S3 never shows a partly written object); returns its etag."""
        kwargs = {"Bucket": self.bucket, "Key": key, "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if metadata:
            kwargs["Metadata"] = metadata
        if content_type:
            kwargs["ContentType"] = content_type
        self._count("PUT")
        try:
            response = self._run(self.fs._call_s3("put_object", **kwargs))
        except Exception as exc:
            if (if_none_match or if_match is not None) and (_is_conflict(exc) or isinstance(exc, FileExistsError)):
                raise Conflict(f"object store: {self._where(key)} was written by someone else first") from None
            raise self._fail(exc, "writing", key) from exc
        return response.get("ETag", "")

    def delete(self, keys) -> None:
        """Remove objects (absent ones are fine), up to 1000 per request."""
        keys = list(keys)
        for start in range(0, len(keys), MAX_DELETE_BATCH):
            batch = keys[start:start + MAX_DELETE_BATCH]
            self._count("DELETE")
            try:
                if len(batch) == 1:
                    self._run(self.fs._call_s3("delete_object", Bucket=self.bucket, Key=batch[0]))
                else:
                    response = self._run(self.fs._call_s3(
                        "delete_objects", Bucket=self.bucket,
                        Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}))
                    errors = response.get("Errors") or []
                    if errors:
                        raise StoreError(f"object store: deleting {self._where(errors[0].get('Key', ''))} "
                                         f"failed: {errors[0].get('Code')}")
            except StoreError:
                raise
            except Exception as exc:
                if _is_missing(exc):
                    continue
                raise self._fail(exc, "deleting", batch[0]) from exc


_stores: dict[tuple, ObjectStore] = {}
_stores_lock = threading.Lock()


def store_for(location: ObjectLocation) -> ObjectStore:
    """One client per bucket and environment (endpoint and credentials as set when first used)."""
    key = (location.bucket, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_ACCESS_KEY_ID"),
           os.environ.get("AWS_PROFILE"))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = ObjectStore(location.bucket)
        return store


def request_counts() -> Counter:
    """Requests made so far by every store of this process, per kind."""
    total: Counter = Counter()
    with _stores_lock:
        for store in _stores.values():
            total.update(store.requests)
    return total
