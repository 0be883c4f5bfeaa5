"""Where slots and pools live: ComfyUI's input folder (the default) or an object store.

`DATASETE_GATES_STORE` selects it:
  unset or empty      the input folder: gate_bus/ and gate_pool/ beside ComfyUI's inputs, exactly as
                      without this setting (imagebus.py and pools.py, atomic renames and locks)
  s3://bucket/prefix  an S3-compatible object store (AWS S3, MinIO, Cloudflare R2, ...) through s3fs;
                      credentials, region and endpoint come from the standard AWS variables
                      (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, profiles)

A "base" handed to slots, imagebus and pools is then either a path (local) or an ObjectLocation;
their public functions hand an ObjectLocation to the object-store protocol (s3slots.py,
s3pools.py; docs/object_storage.md describes it). Nothing here imports s3fs until a store is used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

STORE_ENV = "DATASETE_GATES_STORE"

# S3's bucket naming rules (3-63 lowercase letters, digits, dots and hyphens), and a prefix of plain
# path segments: no empty, "." or ".." segment, so a prefix cannot alias another one.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,127}")


class StoreConfigError(ValueError):
    """DATASETE_GATES_STORE holds something the pack cannot use; the message names the value."""


@dataclass(frozen=True)
class ObjectLocation:
    """A bucket and a key prefix ("" or "a/b/", always ending in a slash) on an object store."""

    bucket: str
    prefix: str

    def child(self, name: str) -> ObjectLocation:
        return ObjectLocation(self.bucket, f"{self.prefix}{name}/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __fspath__(self):  # never a path: code that would treat it as one fails loudly
        raise TypeError(f"{self} is an object-store location, not a folder")


def parse_store(value: str | None) -> ObjectLocation | None:
    """None for the local default, else the location `value` names; StoreConfigError for anything else."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not text.startswith("s3://"):
        raise StoreConfigError(
            f"{STORE_ENV}={value!r} is not supported: leave it unset for ComfyUI's input folder, "
            "or give s3://bucket/prefix for an S3-compatible object store")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise StoreConfigError(f"{STORE_ENV}={value!r}: {bucket!r} is not a valid bucket name "
                               "(3 to 63 lowercase letters, digits, dots and hyphens)")
    segments = [segment for segment in prefix.split("/") if segment != ""]
    if prefix and (prefix.strip("/") == "" or "//" in prefix.strip("/")):
        raise StoreConfigError(f"{STORE_ENV}={value!r}: the prefix {prefix!r} has an empty part")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise StoreConfigError(f"{STORE_ENV}={value!r}: the prefix part {segment!r} is not allowed "
                                   "(use letters, digits and _ . = + -)")
    return ObjectLocation(bucket, "".join(f"{segment}/" for segment in segments))


def configured_store() -> ObjectLocation | None:
    """The store DATASETE_GATES_STORE names now (read on every call: tests and tools change it)."""
    return parse_store(os.environ.get(STORE_ENV))


def is_remote(base) -> bool:
    return isinstance(base, ObjectLocation)


def describe(base) -> str:
    """A base as people read it: the folder, or s3://bucket/prefix/."""
    return str(base) if is_remote(base) else os.fspath(base)
