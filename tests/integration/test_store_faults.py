"""The store and the checkpoint protocol through a fault-injecting proxy (s3proxy.py) in front of
the real S3 server: each fault class either heals through the retries, leaving the right final
state, or ends in one clean StoreError; a checkpoint whose upload failed is never listed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from launcher import contract
from launcher.checkpoints import download_latest, list_checkpoints, upload_checkpoint
from launcher.store import StoreError, open_store
from launcher.testing import load_by_path

s3proxy = load_by_path(Path(__file__).with_name("s3proxy.py"))
pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def proxy(s3_server, monkeypatch):
    s3_server.use(monkeypatch)
    p = s3proxy.S3FaultProxy(s3_server.endpoint_url).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    yield p
    p.close()


@pytest.fixture
def bucket(s3_server, proxy):
    return s3_server.make_bucket()


def store_at(bucket, **options):
    # Short timeouts and few attempts keep the failing cases quick; the retries are the same.
    options = {"connect_timeout": 2, "read_timeout": 3, "max_attempts": 4, **options}
    return open_store(f"s3://{bucket}/job", **options)


def make_checkpoint(root: Path, step: int, size: int = 4096) -> Path:
    d = root / contract.step_dirname(step)
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(os.urandom(size))
    (d / "state.json").write_text(f'{{"step": {step}}}')
    contract.write_manifest(d, contract.build_manifest(d, step=step))
    return d


def test_slowdown_and_internal_errors_are_retried(bucket, proxy):
    store = store_at(bucket)
    proxy.fail_next(2, status=503, method="PUT")
    proxy.fail_next(1, status=500, method="PUT", forward=True)  # done by the server, answer lost
    store.put_bytes("a.txt", b"hello")
    proxy.fail_next(2, status=500, method="GET")
    assert store.get_bytes("a.txt") == b"hello"
    proxy.fail_next(1, status=503, method="GET", path=r"list-type=2")
    assert [o.key for o in store.list()] == ["a.txt"]
    assert proxy.fired("status") == 6


def test_errors_that_do_not_stop_end_in_one_store_error(bucket, proxy):
    store = store_at(bucket)
    proxy.fail_next(None, status=503, method="PUT")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="a.txt"):
        store.put_bytes("a.txt", b"hello")
    assert proxy.fired("status") == 4  # max_attempts, then a clean error
    assert time.monotonic() - t0 < 60
    proxy.clear()
    store.put_bytes("a.txt", b"hello")
    assert store.get_bytes("a.txt") == b"hello"


def test_reset_in_the_middle_of_an_upload_part(bucket, proxy, s3_server, tmp_path):
    store = store_at(bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MiB))
    proxy.reset_mid_body(1, method="PUT", path=r"partNumber=2", where="request")
    proxy.reset_mid_body(1, method="PUT", path=r"partNumber=3", where="response")
    store.put_file(src, "big.bin")
    assert proxy.fired("reset") == 2
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []


def test_reset_and_truncation_in_the_middle_of_a_download(bucket, proxy, tmp_path):
    store = store_at(bucket)
    data = os.urandom(256 * 1024)
    store.put_bytes("blob", data)
    for fault in (proxy.reset_mid_body, proxy.truncate):
        fault(1, method="GET", path=r"/blob")
        assert store.get_bytes("blob") == data
        fault(1, method="GET", path=r"/blob")
        store.get_file("blob", tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == data
    proxy.truncate(1, method="GET", path=r"list-type=2")
    assert [o.key for o in store.list()] == ["blob"]
    assert proxy.fired("reset") == 2 and proxy.fired("truncate") == 3


def test_a_stall_past_the_read_timeout_is_retried(bucket, proxy):
    store = store_at(bucket, read_timeout=2)
    store.put_bytes("a.txt", b"hello")
    proxy.stall(30, method="GET")
    t0 = time.monotonic()
    assert store.get_bytes("a.txt") == b"hello"
    assert time.monotonic() - t0 < 20  # the stalled request was given up, not waited for
    proxy.stall(30, method="PUT")
    store.put_bytes("b.txt", b"later")
    assert store.get_bytes("b.txt") == b"later"
    proxy.stall(0.5, method="GET")  # shorter than the timeout: just slow
    assert store.get_bytes("a.txt") == b"hello"
    assert proxy.fired("stall") == 3


def test_a_store_that_is_down_gives_a_clean_error_and_works_when_back(bucket, proxy):
    store = store_at(bucket)
    store.put_bytes("a.txt", b"hello")
    proxy.down()
    with pytest.raises(StoreError, match="cannot reach"):
        store.put_bytes("b.txt", b"x")
    with pytest.raises(StoreError):
        store.get_bytes("a.txt")
    proxy.up()
    store.put_bytes("b.txt", b"x")
    assert [o.key for o in store.list()] == ["a.txt", "b.txt"]


def test_a_checkpoint_whose_manifest_never_went_up_is_not_listed(bucket, proxy, tmp_path):
    store = store_at(bucket)
    upload_checkpoint(store, make_checkpoint(tmp_path / "local", 10))
    proxy.fail_next(None, status=500, method="PUT", path=r"MANIFEST\.json")
    with pytest.raises(StoreError):
        upload_checkpoint(store, make_checkpoint(tmp_path / "local", 20))
    proxy.clear()
    assert [c.step for c in list_checkpoints(store)] == [10]
    proxy.reset_mid_body(1, method="GET", path=r"MANIFEST\.json")
    proxy.truncate(1, method="GET", path=r"model\.pt")
    step, path = download_latest(store, tmp_path / "resume")
    assert step == 10 and contract.verify_checkpoint(path) is not None
    assert proxy.fired("reset") == 1 and proxy.fired("truncate") == 1


def test_a_lost_manifest_answer_and_a_corrupt_download_heal(bucket, proxy, tmp_path):
    store = store_at(bucket)
    local = make_checkpoint(tmp_path / "local", 30, size=64 * 1024)
    proxy.reset_mid_body(1, method="PUT", path=r"MANIFEST\.json", where="response")
    proxy.fail_next(1, status=503, method="PUT", path=r"model\.pt")
    upload_checkpoint(store, local)
    assert [c.step for c in list_checkpoints(store)] == [30]
    proxy.truncate(2, method="GET", path=r"model\.pt")
    step, path = download_latest(store, tmp_path / "resume")
    assert step == 30
    assert (path / "model.pt").read_bytes() == (local / "model.pt").read_bytes()
    assert proxy.fired() == 4
