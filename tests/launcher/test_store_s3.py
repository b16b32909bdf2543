"""S3-only behaviour of the store: client configuration, multipart, error mapping (moto)."""

from __future__ import annotations

import pytest

from launcher.store import BucketNotFound, NotFound, StoreError, open_store
from launcher.store.s3 import S3Store, map_error, parse_s3_uri

BUCKET = "ckpt-bucket"  # created by the `aws` fixture (conftest.py)
MiB = 1 << 20


def test_parse_s3_uri():
    assert parse_s3_uri("s3://b/a/b/") == ("b", "a/b")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(StoreError):
        parse_s3_uri("s3:///x")


def test_bucket_root_store(aws):
    store = open_store(f"s3://{BUCKET}")
    store.put_bytes("top", b"1")
    assert aws.get_object(Bucket=BUCKET, Key="top")["Body"].read() == b"1"
    assert store.child("a").uri == f"s3://{BUCKET}/a"


def test_keys_land_under_the_prefix(aws):
    open_store(f"s3://{BUCKET}/runs/job-1/").put_bytes("metrics.jsonl", b"{}")
    keys = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["runs/job-1/metrics.jsonl"]


def test_checksums_only_when_required(aws):
    store = open_store(f"s3://{BUCKET}/p")
    config = store.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    sent = []
    store.client.meta.events.register("before-send.s3.PutObject",
                                      lambda request, **_: sent.append(dict(request.headers)))
    store.put_bytes("k", b"data")
    assert sent and not any(h.lower().startswith("x-amz-checksum") for h in sent[0])
    assert not any(h.lower() == "x-amz-sdk-checksum-algorithm" for h in sent[0])


def test_endpoint_from_environment_uses_path_style(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    store = S3Store("bkt", "p")
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.client.meta.config.s3["addressing_style"] == "path"
    assert store.client.meta.region_name == "us-east-1"


def test_s3_specific_endpoint_variable_wins(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert S3Store("bkt").client.meta.endpoint_url == "http://127.0.0.1:9001"


def test_no_endpoint_means_aws_virtual_hosting(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    client = S3Store("bkt").client
    assert "amazonaws.com" in client.meta.endpoint_url
    assert client.meta.config.s3.get("addressing_style") != "path"


def test_profile_is_honoured(monkeypatch, tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("[profile r2]\nregion = auto\nendpoint_url = http://127.0.0.1:9\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg))
    assert S3Store("bkt", profile="r2").client.meta.region_name == "auto"
    with pytest.raises(StoreError, match="cannot configure the S3 client"):
        S3Store("bkt", profile="missing")


def test_large_file_goes_up_as_parallel_multipart(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p", multipart_threshold=5 * MiB,
                       multipart_chunksize=5 * MiB, max_concurrency=4)
    parts = []
    store.client.meta.events.register("before-parameter-build.s3.UploadPart",
                                      lambda params, **_: parts.append(params["PartNumber"]))
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * (12 * MiB // 256))
    store.put_file(src, "big.bin")
    assert sorted(parts) == [1, 2, 3]
    assert aws.head_object(Bucket=BUCKET, Key="p/big.bin")["ETag"].endswith('-3"')
    store.get_file("big.bin", tmp_path / "d" / "back.bin")
    assert (tmp_path / "d" / "back.bin").read_bytes() == src.read_bytes()
    assert store.transfer_config().max_concurrency == 4


def ranged_gets(store) -> list[str]:
    ranges = []
    store.client.meta.events.register("before-parameter-build.s3.GetObject",
                                      lambda params, **_: ranges.append(params.get("Range", "")))
    return ranges


def test_large_file_comes_down_as_parallel_ranges_hashed_on_the_way(aws, tmp_path):
    import hashlib
    import os

    store = open_store(f"s3://{BUCKET}/p", multipart_chunksize=5 * MiB, max_concurrency=3)
    data = os.urandom(12 * MiB + 7)
    aws.put_object(Bucket=BUCKET, Key="p/big.bin", Body=data)
    ranges = ranged_gets(store)
    assert store.get_file_sha256("big.bin", tmp_path / "d" / "back.bin") == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "d" / "back.bin").read_bytes() == data
    five = 5 * MiB
    assert sorted(ranges) == sorted([f"bytes=0-{five - 1}", f"bytes={five}-{2 * five - 1}",
                                     f"bytes={2 * five}-{12 * MiB + 6}"])
    assert os.listdir(tmp_path / "d") == ["back.bin"]


def test_an_object_replaced_half_way_is_an_error_not_a_mix(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p", multipart_chunksize=5 * MiB, max_concurrency=1)
    aws.put_object(Bucket=BUCKET, Key="p/big.bin", Body=b"a" * (11 * MiB))
    calls = []

    def replace_after_the_first_range(params, **_):
        calls.append(params.get("Range"))
        if len(calls) == 2:  # a new version lands between the first and the second range
            aws.put_object(Bucket=BUCKET, Key="p/big.bin", Body=b"b" * (11 * MiB))

    store.client.meta.events.register("before-parameter-build.s3.GetObject", replace_after_the_first_range)
    with pytest.raises(StoreError, match="changed while it was being downloaded"):
        store.get_file("big.bin", tmp_path / "d" / "back.bin")
    assert list((tmp_path / "d").iterdir()) == []  # neither the file nor its temp


def test_a_part_that_fails_fails_the_download_and_leaves_nothing(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p", multipart_chunksize=5 * MiB, max_concurrency=2)
    aws.put_object(Bucket=BUCKET, Key="p/big.bin", Body=b"a" * (16 * MiB))

    def fail_the_third_range(params, **_):
        if params.get("Range", "").startswith(f"bytes={10 * MiB}-"):
            raise Injected("connection reset while downloading bytes 10 MiB on")

    store.client.meta.events.register("before-parameter-build.s3.GetObject", fail_the_third_range)
    with pytest.raises(StoreError, match="big.bin"):
        store.get_file("big.bin", tmp_path / "d" / "back.bin")
    assert list((tmp_path / "d").iterdir()) == []


def test_small_file_is_one_put(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p", multipart_threshold=5 * MiB)
    src = tmp_path / "small.bin"
    src.write_bytes(b"x" * MiB)
    store.put_file(src, "small.bin")
    assert "-" not in aws.head_object(Bucket=BUCKET, Key="p/small.bin")["ETag"]


class Injected(Exception):
    pass


def test_failed_multipart_upload_is_aborted(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)

    def fail_part_two(params, **_):
        if params["PartNumber"] == 2:
            raise Injected("connection reset while uploading part 2")

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_part_two)
    src = tmp_path / "big.bin"
    src.write_bytes(b"y" * (12 * MiB))
    with pytest.raises(StoreError, match="part 2"):
        store.put_file(src, "big.bin")
    assert aws.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert not store.exists("big.bin")


def test_abort_catches_uploads_left_by_an_interrupted_call(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p")
    aws.create_multipart_upload(Bucket=BUCKET, Key="p/big.bin")  # a preempted earlier attempt
    aws.create_multipart_upload(Bucket=BUCKET, Key="p/big.bin.other")
    store._abort_multipart("p/big.bin")
    left = [u["Key"] for u in aws.list_multipart_uploads(Bucket=BUCKET)["Uploads"]]
    assert left == ["p/big.bin.other"]


@pytest.mark.parametrize("call", ["put_bytes", "get_bytes", "exists", "list", "put_file",
                                  "get_file", "delete_prefix"])
def test_missing_bucket_points_to_store_init(aws, tmp_path, call):
    store = open_store("s3://no-such-bucket/runs/j")
    src = tmp_path / "f"
    src.write_bytes(b"1")
    args = {"put_bytes": ("k", b"1"), "get_bytes": ("k",), "exists": ("k",), "list": ("",),
            "put_file": (src, "k"), "get_file": ("k", tmp_path / "o"), "delete_prefix": ("",)}[call]
    with pytest.raises(BucketNotFound, match=r"bucket 'no-such-bucket' does not exist; create it "
                                             r"with `launch store init s3://no-such-bucket/runs/j`"):
        getattr(store, call)(*args)


def test_missing_key_is_not_found_in_an_existing_bucket(aws, tmp_path):
    store = open_store(f"s3://{BUCKET}/p")
    with pytest.raises(NotFound):
        store.get_file("nope", tmp_path / "o")
    assert store.exists("nope") is False


def test_403_for_a_missing_key_is_not_found(aws, tmp_path):
    """Without an unconditional s3:ListBucket (our least-privilege policy), S3 answers 403, not
    404, for a key that does not exist."""
    from botocore.exceptions import ClientError

    store = open_store(f"s3://{BUCKET}/p")
    store.put_bytes("there", b"1")

    def forbidden(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Forbidden"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
    for op in ("GetObject", "HeadObject"):
        store.client.meta.events.register(f"before-parameter-build.s3.{op}", forbidden)
    with pytest.raises(NotFound):
        store.get_bytes("missing")
    with pytest.raises(NotFound):
        store.get_file("missing", tmp_path / "o")
    assert store.exists("missing") is False and store.exists("there") is True
    with pytest.raises(StoreError, match="access denied") as denied:
        store.get_bytes("there")  # it exists: a real denial
    assert not isinstance(denied.value, NotFound)


def test_upload_of_a_missing_local_file(aws, tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        open_store(f"s3://{BUCKET}/p").put_file(tmp_path / "nope", "k")


def test_no_credentials_gives_a_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for var in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(StoreError, match="no usable S3 credentials.*AWS_ACCESS_KEY_ID"):
        open_store("s3://bkt/p").put_bytes("k", b"1")


def test_unreachable_endpoint_is_named(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}))
    store = open_store("s3://bkt/p", client=client)
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        store.get_bytes("k")


def test_access_denied_points_to_the_policy():
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "PutObject")
    err = map_error(exc, "write s3://b/p/k", "b", "s3://b/p")
    assert type(err) is StoreError
    assert "access denied (AccessDenied)" in str(err) and "launch store policy s3://b/p" in str(err)
