"""Object stores behind one small interface; :func:`open_store` picks one by URI scheme.

    store = open_store("s3://my-bucket/runs/quickstart-1a2b3c4d")   # or file:///home/me/store
    store.put_bytes("DONE", b"")
    ckpt = store.child("ckpt")

Importing this package does not import boto3; opening an ``s3://`` store does.
"""

from __future__ import annotations

from typing import Any

from launcher.store.base import (
    BucketNotFound,
    NotFound,
    ObjectInfo,
    ObjectStore,
    StoreError,
    join_key,
)

SCHEMES = ("file://", "s3://")


def open_store(uri: str, **options: Any) -> ObjectStore:
    """The store for ``uri``. ``options`` go to the S3 store (``endpoint_url``, ``profile``,
    ``region``, ``client``, ``multipart_threshold``, ``multipart_chunksize``,
    ``max_concurrency``); the file store takes none."""
    if uri.startswith("file://"):
        from launcher.store.file import FileStore

        if options:
            raise StoreError(f"file:// stores take no options, got {sorted(options)}")
        return FileStore.from_uri(uri)
    if uri.startswith("s3://"):
        from launcher.store.s3 import S3Store

        return S3Store.from_uri(uri, **options)
    raise StoreError(f"unsupported store URI {uri!r}: use one of {', '.join(s + '...' for s in SCHEMES)}")


def check_writable(uri: str, **options: Any) -> None:
    """Write and delete a small probe object under ``uri``; raise :class:`StoreError` pointing to
    ``launch store init URI`` when the bucket is missing or not writable. Safe to call twice."""
    import uuid

    store = open_store(uri, **options)
    key = f".launch-probe-{uuid.uuid4().hex}"
    try:
        store.put_bytes(key, b"launch write probe\n")
        store.delete(key)
    except BucketNotFound:
        raise
    except StoreError as e:
        hint = "" if uri.startswith("file://") else (
            f"; if the bucket is new or its settings are missing, run `launch store init {uri}`")
        raise StoreError(f"store {uri} is not writable ({e}){hint}") from e


__all__ = ["BucketNotFound", "NotFound", "ObjectInfo", "ObjectStore", "StoreError",
           "check_writable", "join_key", "open_store"]
