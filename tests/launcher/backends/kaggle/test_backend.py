"""The Kaggle backend's decisions, with a scripted Kaggle client and a real store (file:// or moto
S3). The real SDK against an HTTP fake of the API runs in tests/integration/test_kaggle_*.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher import contract
from launcher.backends import get_backend
from launcher.backends.base import (BackendError, NoCapacityError, ProvisionRequest, RunSpec,
                                    RunState)
from launcher.backends.kaggle.backend import KaggleBackend
from launcher.progress import estimate_left
from launcher.backends.kaggle.client import KaggleAPIError, KernelStatus, PushResult
from launcher.backends.kaggle.config import KaggleSettings
from launcher.errors import InfraError
from launcher.store import open_store

SETTINGS = KaggleSettings(session_limit=600, margin=60, poll_interval=10, start_grace=30, log_interval=5)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class ScriptedClient:
    """Kaggle as scripted: each status call answers the next item (the last one repeats); each
    push takes the next of ``refusals`` (an exception) or succeeds; ``quota`` answers ``quota``
    or, when None, fails as the call does on an API without it."""

    username = "ada"

    def __init__(self, statuses=("running",), quota=None, refusals=()):
        self.statuses = list(statuses)
        self.status_calls = 0
        self.versions_asked: list[int | None] = []
        self.pushes: list[dict] = []
        self.refusals = list(refusals)
        self.quota_view = quota
        self.deleted: list[str] = []
        self.delete_refusals: list[Exception] = []  # raised by the next deletes, in turn

    def check(self):
        return None

    def push(self, folder: Path, timeout=None, accelerator=None):
        if self.refusals:
            raise self.refusals.pop(0)
        self.pushes.append({"meta": json.loads((folder / "kernel-metadata.json").read_text()),
                            "source": (folder / "launch_kernel.py").read_text(), "timeout": timeout})
        return PushResult("/code/ada/x", len(self.pushes), "https://kaggle.example/code/ada/x")

    def status(self, kernel, version=None):
        self.status_calls += 1
        self.versions_asked.append(version)
        item = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(item, Exception):
            raise item
        state, _, message = item.partition(":")
        return KernelStatus(state, message)

    def quota(self):
        if self.quota_view is None:
            raise KaggleAPIError("kaggle quota failed: HTTP 404: Not found")
        return self.quota_view

    def delete(self, kernel):
        if self.delete_refusals:
            raise self.delete_refusals.pop(0)
        self.deleted.append(kernel)


def backend(tmp_path, statuses=("running",), clock=None):
    clock = clock or Clock()
    return KaggleBackend(settings=SETTINGS, client=ScriptedClient(statuses), clock=clock,
                         sleep=clock.sleep, work_dir=tmp_path / "kaggle")


def pushed_handle(tmp_path, attempt=1):
    store_uri = f"file://{tmp_path}/store/runs/toy-1a2b3c4d"
    return {"backend": "kaggle", "kernel": "ada/launch-toy", "attempt": attempt,
            "store_uri": store_uri, "version": attempt, "pushed_at": 1000.0}


def logs(handle):
    return open_store(handle["store_uri"]).child(contract.LOGS_PREFIX)


def test_the_registry_gives_the_kaggle_backend():
    assert isinstance(get_backend("kaggle"), KaggleBackend)


def test_provision_names_the_kernel_and_the_sessions_limits(tmp_path):
    h = backend(tmp_path).provision(ProvisionRequest("toy-1a2b3c4d", 2, "kaggle", {"accelerators": "T4:2"}))
    assert h["slug"] == "launch-toy" and h["host"] == "kaggle:launch-toy" and h["kind"] == "gpu"
    assert h["machine_shape"] == "NvidiaTeslaT4" and h["enable_gpu"] and h["price_per_hour"] == 0.0
    assert h["session"] == {"limit_s": 600, "margin_s": 60, "usable_s": 540}
    assert json.loads(json.dumps(h)) == h


def test_provision_refuses_what_kaggle_cannot_give(tmp_path):
    b = backend(tmp_path)
    with pytest.raises(NoCapacityError):
        b.provision(ProvisionRequest("j-1", 1, "kaggle", {"accelerators": "V100:8"}))
    h = b.provision(ProvisionRequest("j-1", 1, "kaggle", {}, num_nodes=2))
    with pytest.raises(BackendError, match="one machine per session"):
        b.bootstrap(h)  # a setup failure, which ends the job, not a capacity wait


def test_infra_must_be_plain_kaggle():
    with pytest.raises(InfraError):
        KaggleBackend("kaggle/eu", client=ScriptedClient())


def test_a_kaggle_session_cannot_reach_a_local_store(tmp_path):
    b = backend(tmp_path)
    h = b.provision(ProvisionRequest("j-1", 1, "kaggle", {}))
    with pytest.raises(BackendError, match="s3://"):
        b.start_run(h, RunSpec("j-1", 1, "true", store_uri=f"file://{tmp_path}/store"))


def test_start_run_uploads_the_bundles_once_and_pushes_a_kernel_without_secret_values(tmp_path, aws):
    b = backend(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('hi')\n")
    secrets = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE12345", "AWS_SECRET_ACCESS_KEY": "very-secret-value-123"}
    b.attachments.passed("ada/launch-toy", list(secrets), 0.0)  # seen attached by an earlier job
    for attempt in (1, 2):
        h = b.provision(ProvisionRequest("toy-1a2b3c4d", attempt, "kaggle", {}))
        b.bootstrap(h)
        stats = b.sync_workdir(h, str(work))
        assert stats.files_sent > 1  # the workdir and the launcher's own files
        b.start_run(h, RunSpec("toy-1a2b3c4d", attempt, "python train.py", secrets=secrets,
                               store_uri="s3://ckpt-bucket/runs/toy-1a2b3c4d"))
        assert h["version"] == attempt and h["host"] == f"kaggle:ada/launch-toy v{attempt}"
    keys = sorted(o["Key"] for o in aws.list_objects_v2(Bucket="ckpt-bucket")["Contents"])
    assert [k.split("/")[-1].split("-")[0] for k in keys] == ["launcher", "workdir"]
    push = b.client.pushes[-1]
    assert push["meta"]["id"] == "ada/launch-toy" and push["meta"]["is_private"] is True
    assert push["timeout"] == 600
    assert "AWS_SECRET_ACCESS_KEY" in push["source"]
    assert not any(v in p["source"] for p in b.client.pushes for v in secrets.values())
    assert (tmp_path / "kaggle" / "toy-1a2b3c4d" / "attempt-2" / "run" / "launch_kernel.py").exists()


@pytest.mark.parametrize("status, exit_code, started, want, code", [
    ("running", None, True, RunState.RUNNING, None),
    ("queued", None, False, RunState.RUNNING, None),
    ("complete", "0", True, RunState.SUCCEEDED, 0),
    ("complete", "75", True, RunState.PREEMPTED, 75),
    ("error", "1", True, RunState.FAILED, 1),
    ("error:session exceeded its time limit", None, True, RunState.PREEMPTED, None),
    ("cancel_acknowledged", None, True, RunState.PREEMPTED, None),
])
def test_poll_reads_the_ending_from_the_store(tmp_path, status, exit_code, started, want, code):
    b, h = backend(tmp_path, [status]), pushed_handle(tmp_path)
    if exit_code is not None:
        logs(h).put_bytes("attempt-1.exit", exit_code.encode())
    if started:
        logs(h).put_bytes("attempt-1.started", b"{}")
    got = b.poll(h)
    assert (got.state, got.exit_code) == (want, code)
    if want is RunState.PREEMPTED and code is None:
        assert got.reason.startswith("session ended (Kaggle: ")


def test_a_kernel_that_died_before_starting_fails_after_the_start_grace(tmp_path):
    clock = Clock()
    b, h = backend(tmp_path, ["error:the script exited with code 1"], clock), pushed_handle(tmp_path)
    assert b.poll(h).state is RunState.RUNNING  # may still be the previous version's status
    clock.now += 31
    got = b.poll(h)
    assert got.state is RunState.FAILED and got.exit_code is None
    assert "failed before the attempt started" in got.reason and "kaggle kernels output" in got.reason


def test_a_session_that_ended_quietly_before_starting_is_preempted(tmp_path):
    clock = Clock()
    clock.now += 31
    got = backend(tmp_path, ["complete"], clock).poll(pushed_handle(tmp_path))
    assert got.state is RunState.PREEMPTED and "before it started" in got.reason


def test_a_session_cut_at_its_limit_before_the_attempt_started_is_preempted_not_failed(tmp_path):
    """On a slow session the bootstrap may not have reached the attempt when the limit ends it;
    Kaggle then says ``error`` too, but the job did nothing wrong."""
    clock = Clock()
    h = {**pushed_handle(tmp_path), "session": {"limit_s": 600.0}}
    clock.now = h["pushed_at"] + 601
    got = backend(tmp_path, ["error:session exceeded its time limit"], clock).poll(h)
    assert got.state is RunState.PREEMPTED and got.exit_code is None
    assert "before the attempt started" in got.reason and "limit" in got.reason


def test_kaggle_is_asked_at_most_every_poll_interval_and_not_after_the_end(tmp_path):
    clock = Clock()
    b, h = backend(tmp_path, ["running", "complete"], clock), pushed_handle(tmp_path)
    logs(h).put_bytes("attempt-1.exit", b"0")
    assert b.poll(h).state is RunState.RUNNING
    clock.now += 5
    assert b.poll(h).state is RunState.RUNNING and b.client.status_calls == 1
    clock.now += 5
    assert b.poll(h).state is RunState.SUCCEEDED and b.client.status_calls == 2
    clock.now += 60
    assert b.poll(h).state is RunState.SUCCEEDED and b.client.status_calls == 2


def test_an_api_outage_is_running_unless_the_store_has_the_exit_code(tmp_path):
    clock = Clock()
    b, h = backend(tmp_path, [KaggleAPIError("HTTP 503")], clock), pushed_handle(tmp_path)
    assert b.poll(h).state is RunState.RUNNING and "503" in h["api_error"]
    logs(h).put_bytes("attempt-1.exit", b"75")
    clock.now += 10
    assert b.poll(h).state is RunState.PREEMPTED


def test_terminate_asks_the_kernel_to_stop_and_twice_is_quiet(tmp_path):
    b, h = backend(tmp_path, ["running", "complete"]), pushed_handle(tmp_path, attempt=3)
    b.terminate(h)
    b.terminate(h)
    assert logs(h).get_bytes("attempt-3.control") == b"cancel"
    assert b.client.deleted == [] and b.client.versions_asked == [3, 3]


def test_terminate_is_quiet_for_a_session_never_pushed_or_already_over(tmp_path):
    b = backend(tmp_path, ["complete"])
    b.terminate({"backend": "kaggle", "attempt": 1})
    h = pushed_handle(tmp_path)
    logs(h).put_bytes("attempt-1.exit", b"0")
    assert b.poll(h).state is RunState.SUCCEEDED
    b.terminate(h)
    assert not logs(h).exists("attempt-1.control")


def test_fire_drills_go_through_the_control_file(tmp_path):
    b, h = backend(tmp_path), pushed_handle(tmp_path)
    b.signal(h, "kill")
    assert logs(h).get_bytes("attempt-1.control") == b"kill"
    with pytest.raises(ValueError):
        b.signal(h, "boom")


def test_logs_come_from_the_store_and_follow_until_the_end(tmp_path):
    b, h = backend(tmp_path, ["running", "complete"]), pushed_handle(tmp_path)
    logs(h).put_bytes("attempt-1.log", b"one\ntwo\npart")
    assert list(b.stream_logs(h)) == ["one", "two", "part"]
    logs(h).put_bytes("attempt-1.exit", b"0")
    assert list(b.stream_logs(h, follow=True)) == ["one", "two", "part"]
    assert b.client.status_calls == 2


@pytest.mark.parametrize("progress, kw, want", [
    ({"step": 25}, {"total_steps": 100}, {"fraction_done": 0.25, "hours_left": 3.0, "sessions_left": 2}),
    ({"epoch": 1.0, "total_epochs": 4}, {}, {"fraction_done": 0.25, "hours_left": 3.0, "sessions_left": 2}),
    ({"step": 100, "total_steps": 100}, {}, {"fraction_done": 1.0, "hours_left": 0.0, "sessions_left": 0}),
    ({"step": 25}, {}, None),
    ({}, {"total_steps": 100}, None),
])
def test_estimate_of_sessions_and_hours_left(progress, kw, want):
    # One hour of running did a quarter: three hours left, sessions of two usable hours.
    assert estimate_left(progress, run_seconds=3600, usable_s=7200, **kw) == want


def quota_backend(tmp_path, sessions, **settings):
    clock = Clock()
    clock.now = 100 * 86400.0
    s = KaggleSettings(**{"session_limit": 12 * 3600.0, "margin": 900.0, **settings})
    return KaggleBackend(settings=s, client=ScriptedClient(), clock=clock, sleep=clock.sleep,
                         work_dir=tmp_path / "kaggle", sessions=lambda now: [(now - a, now - b) for a, b in sessions])


H = 3600.0


def test_a_gpu_session_gets_what_the_weekly_quota_has_left(tmp_path):
    # Kaggle's quota view does not answer (ScriptedClient's default): launch's own count.
    req = ProvisionRequest("j-1", 3, "kaggle", {"accelerators": "T4:1"})
    h = quota_backend(tmp_path, [(30 * H, 18 * H), (12 * H, 0)]).provision(req)  # 24 of 30 h used
    assert h["session"] == {"limit_s": 6 * H, "margin_s": 900.0, "usable_s": 6 * H - 900.0}
    h = quota_backend(tmp_path, [(100 * H, 90 * H)]).provision(req)  # nothing used in the window
    assert h["session"]["limit_s"] == 12 * H - 60  # below the service's maximum
    off = quota_backend(tmp_path, [(30 * H, 0)], weekly_gpu_hours=0).provision(req)  # check turned off
    assert off["session"]["limit_s"] == 12 * H - 60
    cpu = quota_backend(tmp_path, [(30 * H, 0)], enable_gpu=False).provision(ProvisionRequest("j-1", 3, "kaggle", {}))
    assert not cpu["enable_gpu"] and cpu["session"]["limit_s"] == 12 * H - 60


def test_an_exhausted_quota_is_a_capacity_wait_that_says_when_it_frees(tmp_path):
    # 29.8 h used: 12 h ending 6 days ago (it leaves the window from 12 h from now), then 17.8 h.
    b = quota_backend(tmp_path, [(6 * 24 * H + 12 * H, 6 * 24 * H), (17.8 * H, 0)])
    with pytest.raises(NoCapacityError, match=r"29\.8 of 30 h used.*by Sat") as e:
        b.provision(ProvisionRequest("j-1", 2, "kaggle", {"accelerators": "T4:2"}))
    assert "LAUNCH_KAGGLE_WEEKLY_GPU_HOURS" in str(e.value)


def test_sessions_are_counted_from_the_state_over_the_last_seven_days(tmp_path):
    from launcher import state as st
    from launcher.backends.kaggle.backend import gpu_sessions

    state = st.State()
    now = 100 * 86400.0
    kaggle = state.create_job(name="k", task_path=None, task_yaml="run: x", infra="kaggle", store_uri="", options={})
    other = state.create_job(name="o", task_path=None, task_yaml="run: x", infra="local", store_uri="", options={})
    for job, handle, start, end in [
        (kaggle, {"enable_gpu": True, "version": 1, "pushed_at": now - 8 * 86400}, now - 8 * 86400, now - 6.5 * 86400),
        (kaggle, {"enable_gpu": True, "version": 2, "pushed_at": now - 5 * H}, now - 5 * H, now - 2 * H),
        (kaggle, {"enable_gpu": True}, now - H, now - H),  # never pushed: no session
        (kaggle, {"enable_gpu": False, "version": 3}, now - H, None),  # CPU
        (kaggle, {"enable_gpu": True, "version": 4, "pushed_at": now - H}, now - H, None),  # running
        (other, {"enable_gpu": True, "version": 1}, now - H, now),
    ]:
        a = state.add_attempt(job.id, handle=handle, started=start)
        if end is not None:
            state.set_attempt(job.id, a.n, ended=end)
    assert gpu_sessions(now) == [(now - 7 * 86400, now - 6.5 * 86400), (now - 5 * H, now - 2 * H), (now - H, now)]
