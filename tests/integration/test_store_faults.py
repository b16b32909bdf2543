"""The store and the checkpoint protocol through a fault-injecting proxy (s3proxy.py) in front of
the real S3 server: each fault class either heals through the retries, leaving the right final
state, or ends in one clean StoreError; a checkpoint whose upload failed is never listed. And a
local job whose store goes down for a while mid-run: the training goes on, the agent's log and
`launch status` say so, the checkpoints queued on the machine go up once the store is back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import contract, state as st
from launcher.checkpoints import download_latest, list_checkpoints, upload_checkpoint
from launcher.store import StoreError, open_store
from launcher.testing import load_by_path, toy_digest, wait_for

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


def test_a_part_of_a_ranged_download_cut_off_is_fetched_again(bucket, proxy, tmp_path):
    import hashlib

    store = store_at(bucket, multipart_chunksize=5 * MiB, max_concurrency=2)
    data = os.urandom(11 * MiB)
    store.put_bytes("big.bin", data)
    for fault in (proxy.reset_mid_body, proxy.truncate):
        fault(2, method="GET", path=r"/big\.bin")  # the first range and one after it
        assert store.get_file_sha256("big.bin", tmp_path / "back.bin") == hashlib.sha256(data).hexdigest()
        assert (tmp_path / "back.bin").read_bytes() == data
    assert proxy.fired("reset") == 2 and proxy.fired("truncate") == 2


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


# --- a store that stays down for a while under a real local job ---------------------------------

def launch(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"launch {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def steps_in(log: str, kind: str) -> list[int]:
    """Steps of the agent's lines ``checkpoint step N <kind>`` in ``log``, in order."""
    return [int(m) for m in re.findall(rf"checkpoint step (\d+) {kind}", log)]


def test_a_store_down_mid_run_queues_the_checkpoints_and_the_training_goes_on(bucket, proxy, tmp_path, monkeypatch):
    steps = 60
    monkeypatch.setenv("LAUNCH_S3_MAX_ATTEMPTS", "2")  # each refused call fails fast; the agent retries
    monkeypatch.setenv("LAUNCH_S3_CONNECT_TIMEOUT", "2")
    task = tmp_path / "toy.yaml"
    task.write_text(f"name: toy\nrun: python -m launcher.testing toy --steps {steps} --step-time 0.25\n")
    launch("up", str(task), "--store", f"s3://{bucket}/runs", "-d")
    job = st.State().jobs()[-1]
    att = wait_for(lambda: next(iter(st.State().attempts(job.id)), None), 60, "the attempt")
    run_log = Path(att.handle["attempt_dir"]) / "run.log"
    log = lambda: run_log.read_text() if run_log.exists() else ""  # noqa: E731
    last_step = lambda: max([int(s) for s in re.findall(r"^step (\d+) digest", log(), re.M)] or [0])  # noqa: E731

    wait_for(lambda: steps_in(log(), "uploaded"), 120, "a first checkpoint in the store")
    proxy.down()
    down_at = last_step()
    wait_for(lambda: "store unreachable" in log() and len(steps_in(log(), "queued on this machine")) >= 3,
             120, "the agent to queue checkpoints")
    d = json.loads(launch("status", str(job.id), "--json").stdout)[0]
    assert d["state"] == "RUNNING" and "store unreachable" in d["reason"], d["reason"]
    assert "checkpoint(s) queued on the machine" in d["reason"]
    wait_for(lambda: last_step() >= down_at + 15 or "final upload" in log(), 120, "training to go on")
    assert last_step() >= down_at + 15, "the training stopped while the store was down"
    up_from = len(proxy.requests)
    proxy.up()

    wait_for(lambda: st.State().job(job.id).terminal, 180, "the job to end")
    d = json.loads(launch("status", str(job.id), "--json").stdout)[0]
    text = log()
    assert d["state"] == "SUCCEEDED" and [a["state"] for a in d["attempts"]] == ["SUCCEEDED"], d
    assert "store reachable again" in text
    events = [e["message"] for e in st.State().events(job.id) if e["kind"] == "store"]
    assert len(events) == 2 and "store unreachable" in events[0] and "answers again" in events[1], events
    # Every checkpoint held when the store came back went up, each manifest after its files.
    queued, dropped = steps_in(text, "queued on this machine"), steps_in(text, "dropped from the queue")
    held = [s for s in queued if s not in dropped]
    uploaded_after = steps_in(text.split("store unreachable (", 1)[1], "uploaded")
    assert held and set(held) <= set(uploaded_after), (held, uploaded_after)
    puts = [r.target for r in proxy.requests[up_from:] if r.method == "PUT" and r.status == 200]
    for s in held:
        mine = [i for i, t in enumerate(puts) if f"step-{s:08d}/" in t]
        manifest = [i for i in mine if "MANIFEST.json" in puts[i]]
        assert manifest and manifest[-1] == mine[-1], (s, [puts[i] for i in mine])
    # The same final weights as an uninterrupted run, and the store holds them.
    store = open_store(d["store"])
    assert store.exists(contract.DONE_NAME)
    clean = toy_digest(steps, tmp_path / "clean")
    assert text.split("final digest")[-1].split()[0] == clean
    step, path = download_latest(store, tmp_path / "final")
    assert step == steps and json.loads((path / "state.json").read_text())["digest"] == clean
