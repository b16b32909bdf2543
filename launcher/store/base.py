"""The object store interface: a flat key space of bytes under a root URI.

Two implementations: ``file://`` (:mod:`launcher.store.file`, a local folder) and ``s3://``
(:mod:`launcher.store.s3`, any S3-compatible endpoint). Keys are ``/``-joined strings relative to
the store's root, never ``Path`` objects (``Path`` mangles ``s3://``). ``child(prefix)`` gives a
store rooted below, which is how a job's prefix store is made from the bucket's store.

Every method is safe to call twice: writes replace, ``delete`` of a missing key is quiet.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

from launcher.errors import LaunchError


class StoreError(LaunchError):
    """An object store call failed; the message says what to do about it."""


class NotFound(StoreError):
    """The key does not exist (the bucket does)."""


class BucketNotFound(StoreError):
    """The bucket (or the file store's root volume) does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's root
    size: int
    mtime: float  # unix time of the last write


def join_key(*parts: str) -> str:
    """Join key parts with single slashes: ``join_key("a/", "/b", "c") == "a/b/c"``."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def check_key(key: str) -> str:
    """A key must be relative, non-empty, and free of ``.``/``..`` segments."""
    if not key or key.startswith("/") or any(s in (".", "..") for s in key.split("/")):
        raise StoreError(f"invalid object key {key!r}: keys are relative '/'-joined names")
    return key


class ObjectStore(ABC):
    """A store rooted at ``uri``. Implementations map their backend's errors onto
    :class:`StoreError` (:class:`NotFound` for a missing key, :class:`BucketNotFound` for a
    missing bucket), so callers never see a boto3 or OS exception."""

    uri: str

    @abstractmethod
    def put_file(self, local: str | os.PathLike, key: str) -> None:
        """Upload a local file; readers see the old object or the whole new one, never a part."""

    @abstractmethod
    def get_file(self, key: str, local: str | os.PathLike) -> None:
        """Download to ``local`` (parent folders are created). Raises :class:`NotFound`."""

    def get_file_sha256(self, key: str, local: str | os.PathLike) -> str:
        """:meth:`get_file`, returning the sha256 (hex) of what was written. This fallback reads
        the file again; the stores hash the bytes as they arrive instead."""
        self.get_file(key, local)
        h = hashlib.sha256()
        with open(local, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object in one request."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a whole object. Raises :class:`NotFound`."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the key holds an object (a prefix with objects below it is not one)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""

    @abstractmethod
    def child(self, prefix: str) -> ObjectStore:
        """The same store rooted at ``prefix`` below this one."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
