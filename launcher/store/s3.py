"""``s3://bucket/prefix`` store on boto3, for AWS S3 and S3-compatible endpoints (MinIO, R2, B2,
SeaweedFS).

Credentials come from boto3's standard chain (environment, ``AWS_PROFILE`` or ``profile=``, shared
files, instance roles). ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (or ``endpoint_url=``)
points at an S3-compatible server; path-style addressing is used whenever an endpoint is set.
Checksums are computed and validated only when an operation requires them, because several
S3-compatible stores reject the newer default (CRC trailers). Files above ``multipart_threshold``
go up as parallel multipart parts; a failed multipart upload is aborted so it does not keep
billing. Downloads are parallel ranged GETs hashed as they arrive (``get_file_sha256``). boto3
is imported here only, never at the top of a module the CLI imports.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from launcher.store.base import (
    BucketNotFound,
    NotFound,
    ObjectInfo,
    ObjectStore,
    StoreError,
    check_key,
    join_key,
)

MiB = 1 << 20
# Parts of 16 MiB keep a big file's download parallel (s3transfer grows the part size itself when
# a file would need more than S3's 10,000 parts); 8 requests per file, and checkpoints move
# several files at once (launcher.checkpoints), so the connection pool is sized for both.
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MiB
DEFAULT_MAX_CONCURRENCY = 8
MAX_POOL_CONNECTIONS = 64
# Every request is tried up to MAX_ATTEMPTS times (botocore's standard mode: throttling, 5xx,
# resets and timeouts are retried with jittered exponential back-off). A stalled connection is
# given up after READ_TIMEOUT seconds without a byte, an unanswered connect after CONNECT_TIMEOUT.
# LAUNCH_S3_MAX_ATTEMPTS, LAUNCH_S3_CONNECT_TIMEOUT and LAUNCH_S3_READ_TIMEOUT override them.
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0

_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                 "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or configure "
                    "~/.aws/credentials")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``"s3://bucket/a/b/" -> ("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise StoreError(f"invalid S3 URI {uri!r}: expected s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StoreError(f"invalid S3 URI {uri!r}: no bucket name")
    return bucket, join_key(prefix)


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - boto3 is a dev dependency
        raise StoreError("s3:// stores need boto3: pip install 'launch[s3]'") from e
    return boto3


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise StoreError(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise StoreError(f"{name}={value!r} must be positive")
    return number


def client_config(endpoint_url: str | None, *, max_attempts: int | None = None,
                  connect_timeout: float | None = None, read_timeout: float | None = None) -> Any:
    """The botocore Config every client of ours uses: retries and timeouts from the arguments,
    else the LAUNCH_S3_* variables, else the defaults above."""
    from botocore.config import Config

    attempts = max_attempts or int(_env_number("LAUNCH_S3_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    return Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if endpoint_url else {},
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=MAX_POOL_CONNECTIONS,
        connect_timeout=connect_timeout or _env_number("LAUNCH_S3_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
        read_timeout=read_timeout or _env_number("LAUNCH_S3_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
    )


def make_client(endpoint_url: str | None = None, profile: str | None = None,
                region: str | None = None, **config: Any) -> Any:
    """An S3 client from the standard credential chain, honouring the endpoint variables;
    ``config`` goes to :func:`client_config` (``max_attempts``, ``connect_timeout``,
    ``read_timeout``)."""
    boto3 = _import_boto3()
    from botocore.exceptions import BotoCoreError

    endpoint_url = endpoint_url or endpoint_from_env()
    try:
        session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
        region = region or session.region_name or ("us-east-1" if endpoint_url else None)
        return session.client("s3", endpoint_url=endpoint_url, region_name=region,
                              config=client_config(endpoint_url, **config))
    except BotoCoreError as e:  # ProfileNotFound, invalid endpoint, ...
        raise StoreError(f"cannot configure the S3 client: {e}") from e


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError (or of one wrapped by boto3's transfer layer)."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def bucket_missing(bucket: str, uri: str) -> BucketNotFound:
    return BucketNotFound(f"bucket {bucket!r} does not exist; create it with `launch store init {uri}`")


def map_error(exc: BaseException, what: str, bucket: str, uri: str) -> StoreError:
    """Turn a boto3/botocore exception into our StoreError with a message that says what to do."""
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoreError(f"{what}: no usable S3 credentials ({exc}); {CREDENTIALS_HINT}")
    if isinstance(exc, EndpointConnectionError):
        return StoreError(f"{what}: cannot reach the S3 endpoint ({exc}); check AWS_ENDPOINT_URL")
    code = error_code(exc)
    if code in _MISSING_BUCKET_CODES:
        return bucket_missing(bucket, uri)
    if code in _MISSING_KEY_CODES:
        return NotFound(f"{what}: no such object")
    if code in _DENIED_CODES:
        return StoreError(f"{what}: access denied ({code}); check the credentials ({CREDENTIALS_HINT})"
                          f" and that their policy covers this prefix (`launch store policy {uri}`)")
    return StoreError(f"{what}: {exc}")


def _body_cut_off(exc: BaseException) -> bool:
    """Whether reading a response body failed half-way (reset, early close, timeout)."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    return isinstance(exc, (ResponseStreamingError, IncompleteReadError, ReadTimeoutError,
                            ConnectionClosedError))


def _total_size(resp: dict[str, Any], got: int) -> int:
    """The object's whole size from a ranged GET's ``Content-Range: bytes a-b/total`` (a server
    that ignored the range sent the whole object, ``got`` bytes)."""
    content_range = resp.get("ContentRange") or ""
    tail = content_range.rpartition("/")[2]
    return int(tail) if tail.isdigit() else got


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 region: str | None = None,
                 multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                 multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
                 max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 max_attempts: int | None = None, connect_timeout: float | None = None,
                 read_timeout: float | None = None):
        self.bucket = bucket
        self.prefix = join_key(prefix)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client or make_client(endpoint_url, profile, region, max_attempts=max_attempts,
                                            connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.max_concurrency = max_concurrency

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> S3Store:
        bucket, prefix = parse_s3_uri(uri)
        return cls(bucket, prefix, **options)

    # --- helpers ------------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return join_key(self.prefix, check_key(key)) if self.prefix else check_key(key)

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def _error(self, exc: BaseException, what: str) -> StoreError:
        return map_error(exc, what, self.bucket, self.uri)

    def _read_error(self, exc: BaseException, what: str, key: str) -> StoreError:
        """The error of a read of one key. A 404 does not say whether the key or the bucket is
        missing, and without an unconditional s3:ListBucket (our least-privilege policy) S3
        answers 403 for a missing key: a listing of the key settles both."""
        err = self._error(exc, what)
        if isinstance(err, NotFound) or error_code(exc) in ("403", "AccessDenied"):
            try:
                if not self._listed(key):
                    return NotFound(f"{what}: no such object")
            except BucketNotFound as missing:
                return missing
            except StoreError:
                pass
        return err

    def _listed(self, key: str) -> bool:
        """Whether ``key`` exists, by a one-key listing (allowed under a prefix-only policy)."""
        full = self._full(key)
        try:
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1)
        except Exception as e:
            raise self._error(e, f"check {self.uri}/{key}") from e
        # Keys sort byte-wise, so an exact match comes before every longer key with its prefix.
        return any(obj["Key"] == full for obj in resp.get("Contents", []))

    def transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_threshold,
                              multipart_chunksize=self.multipart_chunksize,
                              max_concurrency=self.max_concurrency, use_threads=True)

    # --- the interface ------------------------------------------------------------------------
    def put_file(self, local: str | os.PathLike, key: str) -> None:
        full = self._full(key)
        if not os.path.isfile(local):
            raise StoreError(f"cannot upload {local}: no such file")
        try:
            self.client.upload_file(os.fspath(local), self.bucket, full, Config=self.transfer_config())
        except Exception as e:
            self._abort_multipart(full)
            raise self._error(e, f"upload {local} to {self.uri}/{key}") from e

    def _abort_multipart(self, full_key: str) -> None:
        """Best effort: abort unfinished multipart uploads of this key (boto3 aborts its own on
        failure; this catches one left by an interrupted call). Lifecycle rules are the backstop."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full_key)
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Key"] == full_key:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key,
                                                           UploadId=up["UploadId"])
        except Exception:
            pass

    def get_file(self, key: str, local: str | os.PathLike) -> None:
        self.get_file_sha256(key, local)

    def get_file_sha256(self, key: str, local: str | os.PathLike) -> str:
        """Download to ``local`` and return the sha256 of what was written, hashed as the bytes
        arrive, so verifying a checkpoint costs no second read of the file.

        An object larger than ``multipart_chunksize`` comes as ranged GETs of that size,
        ``max_concurrency`` at a time, each written at its offset; the hash follows in order, so
        at most ``max_concurrency`` parts are held in memory. Every range after the first is
        pinned to the first answer's ETag: an object replaced half-way is an error, never a mix
        of two versions. A part whose body is cut off is fetched again. The file is written under
        a temp name next to ``local`` and renamed, so ``local`` is never half-written."""
        full = self._full(key)
        target = Path(local)
        what = f"download {self.uri}/{key} to {local}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{what}: {e}") from e
        tmp = target.with_name(f".{target.name}.launch-part-{uuid.uuid4().hex[:12]}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                digest = self._download_into(fd, full, what)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except StoreError:
            raise
        except OSError as e:
            raise StoreError(f"{what}: {e}") from e
        except Exception as e:
            raise self._read_error(e, what, key) from e
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def _download_into(self, fd: int, full: str, what: str) -> str:
        chunk = max(1, int(self.multipart_chunksize))
        h = hashlib.sha256()
        try:
            first, resp = self._read_object(Key=full, Range=f"bytes=0-{chunk - 1}")
        except Exception as e:
            if error_code(e) != "InvalidRange":
                raise
            first, resp = self._read_object(Key=full)  # an empty object has no byte 0
        total = _total_size(resp, len(first))
        _pwrite_all(fd, first, 0)
        h.update(first)
        if len(first) >= total:
            return h.hexdigest()
        etag = resp.get("ETag")
        ranges = [(start, min(start + chunk, total)) for start in range(len(first), total, chunk)]

        def fetch(start: int, end: int) -> bytes:
            extra = {"IfMatch": etag} if etag else {}
            data, _ = self._read_object(Key=full, Range=f"bytes={start}-{end - 1}", **extra)
            if len(data) != end - start:
                raise StoreError(f"{what}: bytes {start}-{end - 1} came back as {len(data)} bytes")
            _pwrite_all(fd, data, start)
            return data

        workers = max(1, min(int(self.max_concurrency), len(ranges)))
        pool = ThreadPoolExecutor(max_workers=workers)
        pending: deque = deque()
        todo = iter(ranges)
        try:
            for r in itertools.islice(todo, workers):
                pending.append(pool.submit(fetch, *r))
            while pending:
                try:
                    data = pending.popleft().result()
                except Exception as e:
                    if error_code(e) in ("PreconditionFailed", "412"):
                        raise StoreError(f"{what}: the object changed while it was being "
                                         f"downloaded; try again") from e
                    raise
                h.update(data)
                for r in itertools.islice(todo, 1):
                    pending.append(pool.submit(fetch, *r))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return h.hexdigest()

    def _read_object(self, **request: Any) -> tuple[bytes, dict[str, Any]]:
        """``get_object`` and its body. botocore retries the request, but not the body read that
        comes after it: a body cut off by a reset or a close (checked against Content-Length)
        is fetched again here, up to the client's attempts."""
        attempts = int(self.client.meta.config.retries.get("total_max_attempts") or DEFAULT_MAX_ATTEMPTS)
        for attempt in range(1, attempts + 1):
            try:
                resp = self.client.get_object(Bucket=self.bucket, **request)
                return resp["Body"].read(), resp
            except Exception as e:
                if attempt < attempts and _body_cut_off(e):
                    time.sleep(random.uniform(0, min(2.0, 0.1 * 2 ** attempt)))
                    continue
                raise
        raise AssertionError("unreachable")

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)
        except Exception as e:
            raise self._error(e, f"write {self.uri}/{key}") from e

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._read_object(Key=self._full(key))[0]
        except Exception as e:
            raise self._read_error(e, f"read {self.uri}/{key}", key) from e

    def exists(self, key: str) -> bool:
        return self._listed(key)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", []):
                    found.append(ObjectInfo(self._rel(obj["Key"]), int(obj["Size"]),
                                            obj["LastModified"].timestamp()))
        except Exception as e:
            raise self._error(e, f"list {self.uri}/{prefix}") from e
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:
            err = self._error(e, f"delete {self.uri}/{key}")
            if not isinstance(err, NotFound):
                raise err from e

    def delete_prefix(self, prefix: str) -> int:
        objects = self.list(prefix)
        for start in range(0, len(objects), 1000):
            batch = [{"Key": self._full(o.key)} for o in objects[start:start + 1000]]
            try:
                resp = self.client.delete_objects(Bucket=self.bucket,
                                                  Delete={"Objects": batch, "Quiet": True})
            except Exception as e:
                raise self._error(e, f"delete {self.uri}/{prefix}*") from e
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise StoreError(f"delete {self.uri}/{prefix}*: {len(resp['Errors'])} objects not "
                                 f"deleted, e.g. {first.get('Key')}: {first.get('Code')}")
        return len(objects)

    def child(self, prefix: str) -> S3Store:
        return S3Store(self.bucket, join_key(self.prefix, check_key(join_key(prefix))),
                       client=self.client, multipart_threshold=self.multipart_threshold,
                       multipart_chunksize=self.multipart_chunksize,
                       max_concurrency=self.max_concurrency)

