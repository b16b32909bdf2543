"""The checkpoint protocol on a store, run against file:// and s3:// (moto)."""

from __future__ import annotations

import json
import os
import time

import pytest

from launcher import contract
from launcher.checkpoints import (
    CheckpointError,
    apply_retention,
    download_checkpoint,
    download_latest,
    latest_checkpoint,
    list_checkpoints,
    sync_file_up,
    upload_checkpoint,
)

BUCKET = "ckpt-bucket"  # created by the `aws` fixture (conftest.py)


def make_checkpoint(root, step, *, best=None, payload=None):
    """A committed local checkpoint folder, the way a trainer writes one."""
    d = root / contract.step_dirname(step)
    (d / "extra").mkdir(parents=True)
    (d / "model.pt").write_bytes(payload or f"weights at {step}".encode() * 100)
    (d / "extra" / "rng.json").write_text(json.dumps({"step": step}))
    contract.write_manifest(d, contract.build_manifest(d, step=step, best=best))
    return d


@pytest.fixture
def local(tmp_path):
    return tmp_path / "local"


@pytest.fixture
def restored(tmp_path):
    return tmp_path / "restored"


class Recording:
    """Wraps a store and records the keys written, in order."""

    def __init__(self, store):
        self.store, self.written = store, []
        self.uri = store.uri

    def put_file(self, local, key):
        self.written.append(key)
        self.store.put_file(local, key)

    def put_bytes(self, key, data):
        self.written.append(key)
        self.store.put_bytes(key, data)

    def delete(self, key):
        self.written.append(("delete", key))
        self.store.delete(key)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_manifest_is_uploaded_last(store, local):
    rec = Recording(store)
    ckpt = upload_checkpoint(rec, make_checkpoint(local, 120))
    assert ckpt.step == 120 and ckpt.prefix == "ckpt/step-00000120"
    # The files go up on a few threads, in any order; the manifest always after all of them.
    assert sorted(rec.written[:-1]) == ["ckpt/step-00000120/extra/rng.json", "ckpt/step-00000120/model.pt"]
    assert rec.written[-1] == "ckpt/step-00000120/MANIFEST.json"


def frozen_checkpoint(root, step, frozen: bytes):
    """A checkpoint with a file that changes every step and one that never does."""
    d = root / contract.step_dirname(step)
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(f"weights at {step}".encode() * 100)
    (d / "frozen.pt").write_bytes(frozen)
    contract.write_manifest(d, contract.build_manifest(d, step=step))
    return d


def test_an_unchanged_file_is_not_uploaded_again_and_resume_still_verifies_it(store, local, restored):
    frozen = os.urandom(4096)
    upload_checkpoint(store, frozen_checkpoint(local, 100, frozen))
    rec = Recording(store)
    ckpt = upload_checkpoint(rec, frozen_checkpoint(local, 200, frozen))
    # One changed file, one upload (plus the manifest, last).
    assert rec.written == ["ckpt/step-00000200/model.pt", "ckpt/step-00000200/MANIFEST.json"]
    assert ckpt.manifest["stored"] == {"frozen.pt": "step-00000100/frozen.pt"}
    # A third checkpoint points at the first upload of that content, not at a pointer.
    third = upload_checkpoint(store, frozen_checkpoint(local, 300, frozen))
    assert third.manifest["stored"] == {"frozen.pt": "step-00000100/frozen.pt"}
    step, path = download_latest(store, restored)
    assert step == 300 and (path / "frozen.pt").read_bytes() == frozen
    # The local copy carries the trainer's own manifest, and it verifies.
    assert contract.verify_checkpoint(path) == contract.read_manifest(local / "step-00000300")


def test_a_corrupted_shared_file_is_caught_at_resume(store, local, restored):
    frozen = os.urandom(4096)
    upload_checkpoint(store, frozen_checkpoint(local, 100, frozen))
    upload_checkpoint(store, frozen_checkpoint(local, 200, frozen))
    store.put_bytes("ckpt/step-00000100/frozen.pt", b"Y" * len(frozen))  # same size, other bytes
    with pytest.raises(CheckpointError, match=r"frozen.pt \(stored with ckpt/step-00000100/frozen.pt\) does not match"):
        download_checkpoint(store, 200, restored)
    # Both checkpoints share the damaged content: neither is used, nothing is left half-written.
    assert download_latest(store, restored) is None and os.listdir(restored) == []


def test_a_shared_file_missing_from_the_store_makes_the_checkpoint_incomplete(store, local):
    frozen = os.urandom(4096)
    upload_checkpoint(store, frozen_checkpoint(local, 100, frozen))
    upload_checkpoint(store, frozen_checkpoint(local, 200, frozen))
    store.delete("ckpt/step-00000100/frozen.pt")
    assert [c.step for c in list_checkpoints(store)] == []


def test_retention_keeps_a_shared_file_while_a_kept_checkpoint_names_it(store, local, restored):
    frozen = os.urandom(4096)
    for step in (100, 200, 300):
        upload_checkpoint(store, frozen_checkpoint(local, step, frozen))
    assert apply_retention(store, keep_last=1) == [100, 200]
    assert [c.step for c in list_checkpoints(store)] == [300]
    left = sorted(o.key for o in store.list("ckpt/"))
    assert left == ["ckpt/step-00000100/frozen.pt", "ckpt/step-00000300/MANIFEST.json",
                    "ckpt/step-00000300/model.pt"]
    assert download_latest(store, restored)[0] == 300
    assert apply_retention(store, keep_last=1) == []  # nothing more to delete while it is named
    # Once no kept manifest names it, it goes too.
    upload_checkpoint(store, frozen_checkpoint(local, 400, os.urandom(4096)))
    assert apply_retention(store, keep_last=1) == [100, 300]
    assert sorted(o.key for o in store.list("ckpt/")) == [
        "ckpt/step-00000400/MANIFEST.json", "ckpt/step-00000400/frozen.pt", "ckpt/step-00000400/model.pt"]


def test_reupload_hides_the_old_manifest_while_files_change(store, local):
    d = make_checkpoint(local, 120)
    upload_checkpoint(store, d)
    (d / "model.pt").write_bytes(b"retrained")
    contract.write_manifest(d, contract.build_manifest(d, step=120))
    rec = Recording(store)
    upload_checkpoint(rec, d)
    assert rec.written[0] == ("delete", "ckpt/step-00000120/MANIFEST.json")
    assert rec.written[-1] == "ckpt/step-00000120/MANIFEST.json"
    assert latest_checkpoint(store).manifest["files"]["model.pt"]["size"] == len(b"retrained")


def test_upload_refuses_an_uncommitted_folder(store, local):
    d = make_checkpoint(local, 5)
    (d / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        upload_checkpoint(store, d)
    (d / contract.MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointError):
        upload_checkpoint(store, d)
    assert store.list() == []


def test_list_and_latest_highest_first(store, local):
    assert latest_checkpoint(store) is None
    for step in (100, 300, 200):
        upload_checkpoint(store, make_checkpoint(local, step))
    assert [c.step for c in list_checkpoints(store)] == [300, 200, 100]
    latest = latest_checkpoint(store)
    assert latest.step == 300 and latest.manifest["step"] == 300


def test_partial_checkpoint_without_manifest_is_ignored(store, local, restored):
    upload_checkpoint(store, make_checkpoint(local, 100))
    d = make_checkpoint(local, 200)
    store.put_file(d / "model.pt", "ckpt/step-00000200/model.pt")  # preempted before the rest
    assert [c.step for c in list_checkpoints(store)] == [100]
    assert download_latest(store, restored)[0] == 100


def test_manifest_listing_a_missing_or_short_file_is_ignored(store, local):
    upload_checkpoint(store, make_checkpoint(local, 100))
    upload_checkpoint(store, make_checkpoint(local, 200))
    upload_checkpoint(store, make_checkpoint(local, 300))
    store.delete("ckpt/step-00000300/model.pt")
    store.put_bytes("ckpt/step-00000200/model.pt", b"short")
    assert [c.step for c in list_checkpoints(store)] == [100]


def test_garbage_manifest_is_ignored(store, local):
    upload_checkpoint(store, make_checkpoint(local, 100))
    store.put_bytes("ckpt/step-00000200/MANIFEST.json", b"{not json")
    store.put_bytes("ckpt/step-00000300/MANIFEST.json", json.dumps({"format": 99}).encode())
    assert [c.step for c in list_checkpoints(store)] == [100]


def test_download_verifies_and_commits_the_manifest(store, local, restored):
    src = make_checkpoint(local, 100)
    upload_checkpoint(store, src)
    path = download_checkpoint(store, 100, restored)
    assert path == restored / "step-00000100"
    assert (path / "model.pt").read_bytes() == (src / "model.pt").read_bytes()
    assert contract.verify_checkpoint(path) == contract.read_manifest(src)
    assert contract.latest_checkpoint(restored)[0] == 100
    assert sorted(os.listdir(restored)) == ["step-00000100"]  # no temp folder left


def test_download_twice_keeps_a_verified_local_copy(store, local, restored):
    upload_checkpoint(store, make_checkpoint(local, 100))
    path = download_checkpoint(store, 100, restored)
    before = (path / "model.pt").stat().st_mtime_ns
    assert download_checkpoint(store, 100, restored) == path
    assert (path / "model.pt").stat().st_mtime_ns == before


def test_download_replaces_a_damaged_local_copy(store, local, restored):
    upload_checkpoint(store, make_checkpoint(local, 100))
    path = download_checkpoint(store, 100, restored)
    (path / "model.pt").write_bytes(b"damaged")
    download_checkpoint(store, 100, restored)
    assert contract.verify_checkpoint(path) is not None


def test_corrupted_file_fails_verification(store, local, restored):
    d = make_checkpoint(local, 100)
    upload_checkpoint(store, d)
    good = (d / "model.pt").read_bytes()
    store.put_bytes("ckpt/step-00000100/model.pt", b"X" * len(good))  # same size, other bytes
    with pytest.raises(CheckpointError, match="model.pt does not match its manifest"):
        download_checkpoint(store, 100, restored)
    assert os.listdir(restored) == []


def test_download_of_a_missing_step(store, restored):
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        download_checkpoint(store, 7, restored)


def test_download_latest_falls_back_past_a_corrupted_checkpoint(store, local, restored):
    upload_checkpoint(store, make_checkpoint(local, 100))
    d = make_checkpoint(local, 200)
    upload_checkpoint(store, d)
    size = (d / "model.pt").stat().st_size
    store.put_bytes("ckpt/step-00000200/model.pt", b"Z" * size)
    step, path = download_latest(store, restored)
    assert step == 100 and path == restored / "step-00000100"
    assert [p.name for p in restored.iterdir()] == ["step-00000100"]


def test_download_latest_of_an_empty_store(store, restored):
    assert download_latest(store, restored) is None


def test_reupload_of_the_same_step_is_idempotent(store, local):
    d = make_checkpoint(local, 100)
    upload_checkpoint(store, d)
    upload_checkpoint(store, d)
    assert [c.step for c in list_checkpoints(store)] == [100]


def best(value):
    return {"key": "val_acc", "mode": "max", "value": value}


def test_retention_keeps_the_last_n_and_the_best(store, local):
    for step, acc in [(100, 0.5), (200, 0.9), (300, 0.6), (400, 0.7), (500, 0.65)]:
        upload_checkpoint(store, make_checkpoint(local, step, best=best(acc)))
    assert apply_retention(store, keep_last=2) == [100, 300]
    assert [c.step for c in list_checkpoints(store)] == [500, 400, 200]
    assert store.list("ckpt/step-00000100/") == []
    assert apply_retention(store, keep_last=2) == []  # a second run deletes nothing


def test_retention_best_by_min(store, local):
    for step, loss in [(100, 0.2), (200, 0.9), (300, 0.8)]:
        upload_checkpoint(store, make_checkpoint(
            local, step, best={"key": "val_loss", "mode": "min", "value": loss}))
    apply_retention(store, keep_last=1)
    assert [c.step for c in list_checkpoints(store)] == [300, 100]


def test_retention_without_keep_best(store, local):
    for step, acc in [(100, 0.9), (200, 0.1), (300, 0.1)]:
        upload_checkpoint(store, make_checkpoint(local, step, best=best(acc)))
    assert apply_retention(store, keep_last=1, keep_best=False) == [100, 200]


def test_retention_removes_old_orphans_and_keeps_uploads_in_progress(store, local):
    store.put_bytes("ckpt/step-00000050/model.pt", b"orphan")  # no manifest, older
    upload_checkpoint(store, make_checkpoint(local, 100))
    upload_checkpoint(store, make_checkpoint(local, 200))
    store.put_bytes("ckpt/step-00000300/model.pt", b"uploading")  # no manifest yet, newer
    assert apply_retention(store, keep_last=1) == [50, 100]
    keys = {o.key.split("/")[1] for o in store.list("ckpt/")}
    assert keys == {"step-00000200", "step-00000300"}


def test_retention_needs_keep_last(store):
    with pytest.raises(ValueError):
        apply_retention(store, keep_last=0)


def test_sync_file_up_uploads_only_changes(store, tmp_path):
    log = tmp_path / "attempt-1.log"
    state = {}
    assert sync_file_up(store, log, "logs/attempt-1.log", state) is False  # nothing yet
    log.write_text("line 1\n")
    assert sync_file_up(store, log, "logs/attempt-1.log", state) is True
    assert sync_file_up(store, log, "logs/attempt-1.log", state) is False
    with open(log, "a") as f:
        f.write("line 2\n")
    assert sync_file_up(store, log, "logs/attempt-1.log", state) is True
    assert store.get_bytes("logs/attempt-1.log") == b"line 1\nline 2\n"


def test_sync_file_up_sees_a_rewrite_of_the_same_size(store, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"a": 1}\n')
    state = {}
    sync_file_up(store, metrics, "metrics.jsonl", state)
    metrics.write_text('{"a": 2}\n')
    os.utime(metrics, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert sync_file_up(store, metrics, "metrics.jsonl", state) is True
    assert store.get_bytes("metrics.jsonl") == b'{"a": 2}\n'
