"""The store interface, the same specification run against file:// and s3:// (moto)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.store import BucketNotFound, NotFound, StoreError, check_writable, open_store

BUCKET = "ckpt-bucket"  # created by the `aws` fixture (conftest.py)


def test_bytes_round_trip(store):
    store.put_bytes("a/b.txt", b"hello")
    assert store.get_bytes("a/b.txt") == b"hello"
    store.put_bytes("a/b.txt", b"again")  # overwrite
    assert store.get_bytes("a/b.txt") == b"again"


def test_file_round_trip(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    store.put_file(src, "ckpt/step-00000001/model.pt")
    out = tmp_path / "deep" / "out.bin"
    store.get_file("ckpt/step-00000001/model.pt", out)
    assert out.read_bytes() == b"x" * 1000


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_get_file_sha256_returns_the_hash_of_what_it_wrote(store, tmp_path, size):
    import hashlib
    import os

    data = os.urandom(size)
    store.put_bytes("blob", data)
    out = tmp_path / "o" / "blob"
    assert store.get_file_sha256("blob", out) == hashlib.sha256(data).hexdigest()
    assert out.read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["blob"]  # no temp file left
    with pytest.raises(NotFound):
        store.get_file_sha256("nope", tmp_path / "o" / "nope")
    assert sorted(p.name for p in out.parent.iterdir()) == ["blob"]


def test_missing_key_raises_not_found(store, tmp_path):
    with pytest.raises(NotFound):
        store.get_bytes("nope")
    with pytest.raises(NotFound):
        store.get_file("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_exists(store):
    assert not store.exists("k")
    store.put_bytes("k", b"")
    assert store.exists("k")
    store.put_bytes("dir/inner", b"1")
    assert not store.exists("dir")  # a prefix is not an object


def test_list_is_a_string_prefix_with_sizes_and_mtimes(store):
    for key, data in [("ckpt/step-00000002/a", b"12"), ("ckpt/step-00000010/b", b"1"),
                      ("logs/attempt-1.log", b"log"), ("metrics.jsonl", b"{}\n")]:
        store.put_bytes(key, data)
    listed = store.list("ckpt/")
    assert [(o.key, o.size) for o in listed] == [("ckpt/step-00000002/a", 2),
                                                  ("ckpt/step-00000010/b", 1)]
    assert all(o.mtime > 1e9 for o in listed)
    assert [o.key for o in store.list("ckpt/step-0000001")] == ["ckpt/step-00000010/b"]
    assert [o.key for o in store.list()] == ["ckpt/step-00000002/a", "ckpt/step-00000010/b",
                                              "logs/attempt-1.log", "metrics.jsonl"]
    assert store.list("nothing/") == []


def test_delete_is_quiet_on_missing_keys(store):
    store.put_bytes("k", b"1")
    store.delete("k")
    store.delete("k")
    assert not store.exists("k")


def test_delete_prefix_deletes_only_below(store):
    for k in ["ckpt/step-00000001/a", "ckpt/step-00000001/sub/b", "ckpt/step-00000002/a"]:
        store.put_bytes(k, b"1")
    assert store.delete_prefix("ckpt/step-00000001/") == 2
    assert [o.key for o in store.list()] == ["ckpt/step-00000002/a"]
    assert store.delete_prefix("ckpt/step-00000001/") == 0


def test_child_is_rooted_below(store):
    child = store.child("ckpt")
    assert child.uri == store.uri + "/ckpt"
    child.put_bytes("step-00000001/a", b"1")
    assert store.get_bytes("ckpt/step-00000001/a") == b"1"
    assert [o.key for o in child.list()] == ["step-00000001/a"]
    assert child.child("step-00000001").get_bytes("a") == b"1"


def test_keys_must_be_relative(store):
    for bad in ["/abs", "a/../b", ""]:
        with pytest.raises(StoreError):
            store.put_bytes(bad, b"")


def test_check_writable_leaves_nothing_behind(store):
    check_writable(store.uri)
    assert store.list() == []


def test_open_store_rejects_unknown_schemes():
    with pytest.raises(StoreError, match="unsupported store URI 'gs://b/x'"):
        open_store("gs://b/x")


def test_file_store_list_hides_temp_files(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.put_bytes("a", b"1")
    (tmp_path / ".a.launch-tmp-0123456789abcdef0123456789abcdef").write_bytes(b"partial")
    assert [o.key for o in store.list()] == ["a"]


def test_check_writable_points_to_store_init_when_bucket_missing(aws):
    with pytest.raises(BucketNotFound, match=r"launch store init s3://no-such-bucket/runs"):
        check_writable("s3://no-such-bucket/runs")


def test_importing_the_store_and_cli_does_not_import_boto3():
    code = ("import sys, launcher.store, launcher.checkpoints, launcher.store.infra, "
            "launcher.commands.store; "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
