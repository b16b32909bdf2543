"""The store, the checkpoint protocol and `launch store` against a real S3-compatible server
(SeaweedFS over HTTP, see conftest.py)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from launcher import contract
from launcher.checkpoints import (
    apply_retention,
    download_latest,
    list_checkpoints,
    sync_file_up,
    upload_checkpoint,
)
from launcher.commands.store import store as store_group
from launcher.store import BucketNotFound, NotFound, StoreError, check_writable, open_store

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def bucket(s3_server, monkeypatch):
    s3_server.use(monkeypatch)
    return s3_server.make_bucket()


def make_checkpoint(root, step, acc):
    d = root / contract.step_dirname(step)
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(os.urandom(2048))
    (d / "optim.pt").write_bytes(os.urandom(512))
    contract.write_manifest(d, contract.build_manifest(
        d, step=step, best={"key": "val_acc", "mode": "max", "value": acc}))
    return d


def cli(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(store_group, list(args), catch_exceptions=False)
    return result


def test_store_round_trip(bucket, tmp_path):
    store = open_store(f"s3://{bucket}/runs/job-1")
    store.put_bytes("a/b.txt", b"hello")
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.exists("a/b.txt") and not store.exists("a")
    store.put_bytes("a/c.txt", b"12")
    store.put_bytes("z.txt", b"")
    assert [(o.key, o.size) for o in store.list("a/")] == [("a/b.txt", 5), ("a/c.txt", 2)]
    assert store.child("a").get_bytes("c.txt") == b"12"
    assert store.delete_prefix("a/") == 2
    assert [o.key for o in store.list()] == ["z.txt"]
    store.delete("z.txt")
    store.delete("z.txt")
    with pytest.raises(NotFound):
        store.get_bytes("z.txt")


def test_multipart_upload(bucket, tmp_path):
    store = open_store(f"s3://{bucket}/p", multipart_threshold=5 * MiB,
                       multipart_chunksize=5 * MiB, max_concurrency=3)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MiB))
    store.put_file(src, "big.bin")
    assert store.list("big")[0].size == 11 * MiB
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_missing_bucket_points_to_store_init(s3_server, monkeypatch):
    s3_server.use(monkeypatch)
    with pytest.raises(BucketNotFound, match=r"launch store init s3://never-made-bucket/runs"):
        check_writable("s3://never-made-bucket/runs")
    with pytest.raises(BucketNotFound):
        open_store("s3://never-made-bucket/runs").get_bytes("k")


def test_wrong_credentials_are_refused(s3_server, bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    if s3_server.kind == "moto":  # moto's server does not check signatures
        return
    with pytest.raises(StoreError, match="access denied"):
        open_store(f"s3://{bucket}/runs").put_bytes("k", b"1")


def test_checkpoint_protocol(bucket, tmp_path):
    store = open_store(f"s3://{bucket}/runs/job-1")
    local = tmp_path / "local"
    for step, acc in [(100, 0.9), (200, 0.5), (300, 0.6), (400, 0.7)]:
        upload_checkpoint(store, make_checkpoint(local, step, acc))
    store.put_bytes("ckpt/step-00000500/model.pt", b"upload cut short")  # no manifest
    assert [c.step for c in list_checkpoints(store)] == [400, 300, 200, 100]

    size = (local / "step-00000400" / "model.pt").stat().st_size
    store.put_bytes("ckpt/step-00000400/model.pt", b"\0" * size)  # corrupted, same size
    step, path = download_latest(store, tmp_path / "restored")
    assert step == 300 and contract.verify_checkpoint(path) is not None

    assert apply_retention(store, keep_last=2) == [200]  # keeps 400, 300 and the best (100)
    assert [c.step for c in list_checkpoints(store)] == [400, 300, 100]
    assert store.exists("ckpt/step-00000500/model.pt")  # newer than the newest: in progress


def test_logs_sync_as_they_grow(bucket, tmp_path):
    store = open_store(f"s3://{bucket}/runs/job-1")
    log = tmp_path / "attempt-1.log"
    log.write_text("epoch 1\n")
    state = {}
    assert sync_file_up(store, log, "logs/attempt-1.log", state)
    assert not sync_file_up(store, log, "logs/attempt-1.log", state)
    with open(log, "a") as f:
        f.write("epoch 2\n")
    assert sync_file_up(store, log, "logs/attempt-1.log", state)
    assert store.get_bytes("logs/attempt-1.log") == b"epoch 1\nepoch 2\n"


def test_store_init_against_the_server(s3_server, monkeypatch, tmp_path):
    s3_server.use(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the built-in declaration, plus a tag
    (tmp_path / "bucket.yaml").write_text("tags: {purpose: launch-test}\n")
    uri = "s3://init-test-bucket/runs"

    plan = json.loads(cli("init", uri, "--dry-run", "--json", "--config", "bucket.yaml").stdout)
    assert plan["plan"]["exists"] is False and plan["plan"]["to_change"] == 6

    first = cli("init", uri, "--json", "--config", "bucket.yaml")
    assert first.exit_code == 0, first.stderr
    results = {r["setting"]: r for r in json.loads(first.stdout)["results"]}
    assert results["bucket"]["status"] == "created"
    assert results["versioning"]["status"] == "created"
    assert results["lifecycle"]["status"] == "created"
    for r in results.values():
        assert r["status"] in ("created", "unsupported"), r
        if r["status"] == "unsupported":
            assert r["message"].startswith("not supported by this endpoint")
    if s3_server.kind == "seaweedfs":  # SeaweedFS 4.x answers NotImplemented (501) for it
        assert results["public_access_block"]["status"] == "unsupported"

    second = cli("init", uri, "--config", "bucket.yaml")
    assert second.exit_code == 0
    assert "Nothing to change" in second.stdout
    if s3_server.kind == "seaweedfs":
        assert "! public_access_block  unsupported  not supported by this endpoint" in second.stdout

    client = s3_server.client()
    client.put_bucket_versioning(Bucket="init-test-bucket",
                                 VersioningConfiguration={"Status": "Suspended"})
    rows = {r["setting"]: r["state"] for r in
            json.loads(cli("status", uri, "--json", "--config", "bucket.yaml").stdout)["settings"]}
    assert rows["versioning"] == "DRIFT"
    repair = cli("init", uri, "--config", "bucket.yaml")
    assert "versioning             changed" in repair.stdout
    assert client.get_bucket_versioning(Bucket="init-test-bucket")["Status"] == "Enabled"
    check_writable(uri)
