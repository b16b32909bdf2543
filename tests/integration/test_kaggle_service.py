"""Kaggle as it behaves, end to end through `launch up --infra kaggle` (issue 12): the real kaggle
SDK against ``fake_kaggle.py``, which answers as the service does, and a real S3 server.

- A kernel with no secret attached: launch checks on a CPU session, tells the user once (the
  kernel's URL, the names, Add-ons > Secrets), waits without a GPU session, and runs the job once
  the user attached them in the "web UI". Authenticated with an access token (KAGGLE_API_TOKEN).
- Temporary credentials: nothing attached at all; the kernel carries STS credentials limited to
  the job's prefix (moto's server for STS and S3), and the long-lived key is in no pushed kernel.
- Pushes refused with 503 (an HTML page), 429 and "Maximum batch GPU session count" are waits:
  the job succeeds once a session is free, and no attempt counts as a setup failure.
- An exhausted weekly quota (Kaggle's quota view) is a wait that says when it resets.
- A key Kaggle refuses fails the job at once, saying which credentials; nothing is pushed.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.request
from pathlib import Path

import pytest

from launcher import contract
from launcher.testing import load_by_path

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
fake_kaggle = load_by_path(HERE / "fake_kaggle.py")
sessions_test = load_by_path(HERE / "test_kaggle_sessions.py", "kaggle_sessions_helpers")
Launch, launch_env, toy_task = sessions_test.Launch, sessions_test.launch_env, sessions_test.toy_task
KERNEL = "launchuser/launch-toy"
STORE_KEYS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]


def wait_for(launch: Launch, what: str, until, timeout: float = 120) -> dict:
    job = launch.wait(timeout=timeout, until=lambda d: until(d) or d["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"))
    assert until(job), (what, [(a["number"], a["state"], a["reason"]) for a in job["attempts"]])
    return job


def reasons(job: dict) -> list[str]:
    return [a["reason"] or "" for a in job["attempts"]]


def test_unattached_secrets_are_asked_for_once_then_the_job_runs(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=30) as kaggle:
        env = launch_env(tmp_path, s3_server, kaggle, LAUNCH_KAGGLE_SECRETS_RECHECK="2")
        env = {k: v for k, v in env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
        env.update(kaggle.env(auth="token"))
        with Launch(env) as launch:
            launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
            told = wait_for(launch, "the user is told", lambda d: any("Add-ons > Secrets" in r for r in reasons(d)))
            said = next(r for r in reasons(told) if "Add-ons > Secrets" in r)
            assert f"{kaggle.url}/code/{KERNEL}" in said and all(k in said for k in STORE_KEYS), said
            wait_for(launch, "a wait", lambda d: any("waiting for Kaggle secrets" in r for r in reasons(d)))
            assert kaggle.sessions and all(s.accelerator == "cpu" for s in kaggle.sessions)  # no GPU burnt
            kaggle.attach(KERNEL, STORE_KEYS)  # the user, in the editor
            job = launch.wait(timeout=180)
        summary = [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "SUCCEEDED", (summary, kaggle.session_logs()[-3000:])
        assert not any(a["state"] in ("FAILED", "SETUP_FAILED") for a in job["attempts"]), summary
        assert sum("Edit > Add-ons > Secrets" in r for r in reasons(job)) == 1, summary  # told once in full
        gpu = [s for s in kaggle.sessions if s.accelerator == "gpu"]
        assert len(gpu) == 1 and gpu[0].status == "complete" and {s.kernel for s in kaggle.sessions} == {KERNEL}
        assert "KAGGLE_KEY" not in env and env["KAGGLE_API_TOKEN"] in kaggle.tokens  # token auth only


@pytest.fixture
def sts_s3_server():
    """moto's server for S3 and STS (AssumeRole): SeaweedFS has no role to assume. It takes any
    key; this one is distinctive, so that a leak of it can be seen."""
    for server in load_by_path(HERE / "conftest.py", "kaggle_service_conftest")._moto():
        yield dataclasses.replace(server, access_key="AKIALONGLIVED0001", secret_key="long-lived-secret-7f3e9a")


def test_temporary_credentials_need_nothing_attached(tmp_path, sts_s3_server):
    s3_server = sts_s3_server
    bucket = s3_server.make_bucket()
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets={}, limits=30) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle, LAUNCH_KAGGLE_CREDENTIALS="temporary",
                              LAUNCH_KAGGLE_ROLE_ARN="arn:aws:iam::123456789012:role/launch-kaggle")) as launch:
        launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        job = launch.wait(timeout=180)
        summary = [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "SUCCEEDED", (summary, kaggle.session_logs()[-3000:])
        assert len(kaggle.sessions) == 1 and kaggle.sessions[0].accelerator == "gpu"  # no check needed
        assert kaggle.sessions[0].secrets_read == [] and kaggle.sessions[0].secrets_refused == []
        source = kaggle.pushes[0]["text"]
        assert "AWS_SESSION_TOKEN" in source and s3_server.secret_key not in source
        assert f"runs/{job['run_id']}/{contract.DONE_NAME}" in sessions_test.store_objects(s3_server, bucket)


def occupy_gpu(kaggle, until: Path) -> None:
    """Another kernel of the same account holds a GPU session (pushed from the web, say) until the
    file ``until`` exists."""
    code = f"import os, time\nwhile not os.path.exists({str(until)!r}):\n    time.sleep(0.1)\n"
    body = json.dumps({"slug": "launchuser/other-notebook", "text": code,
                       "language": "python", "kernelType": "script", "enableGpu": True}).encode()
    auth = base64.b64encode(f"{kaggle.username}:{kaggle.key}".encode()).decode()
    req = urllib.request.Request(kaggle.url + fake_kaggle.KERNELS + "SaveKernel", data=body,
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert "versionNumber" in json.loads(resp.read())


def test_refused_pushes_are_waits_and_the_job_runs_when_a_session_frees(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=30, gpu_sessions=1,
                                attached={KERNEL: STORE_KEYS}) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle)) as launch:
        occupy_gpu(kaggle, until=tmp_path / "other-done")
        kaggle.refusals += ["503", "429"]  # the next two pushes, whatever the session count
        launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        wait_for(launch, "the session limit", lambda d: any("session count" in r for r in reasons(d)), timeout=180)
        (tmp_path / "other-done").touch()  # the other session ends
        job = launch.wait(timeout=180)
        summary = [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "SUCCEEDED", (summary, kaggle.refused)
        states = [a["state"] for a in job["attempts"]]
        assert "SETUP_FAILED" not in states and "FAILED" not in states, summary
        said = " | ".join(reasons(job))
        assert "HTTP 503" in said and "HTTP 429" in said and "<html" not in said, summary
        assert "Maximum batch GPU session count of 1" in said, summary
        mine = [s for s in kaggle.sessions if s.kernel == KERNEL]
        assert [s.accelerator for s in mine] == ["cpu", "gpu"] and mine[-1].status == "complete"


def test_an_exhausted_weekly_quota_waits_for_kaggle_to_give_hours_back(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=30, quota_used=29.9,
                                attached={KERNEL: STORE_KEYS}) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle, LAUNCH_KAGGLE_MIN_SESSION="1800")) as launch:
        launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        job = wait_for(launch, "a quota wait", lambda d: any("(kaggle quota)" in r for r in reasons(d)))
        said = next(r for r in reasons(job) if "(kaggle quota)" in r)
        assert "GPU quota: 0.1 of 30 h left" in said and "resets" in said, said
        assert kaggle.sessions == []  # nothing pushed while the quota is out
        kaggle.quota_used = 0.0  # the window reset
        job = launch.wait(timeout=180)
        assert job["state"] == "SUCCEEDED", [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]


def test_a_status_that_lags_the_store_is_overruled_and_the_session_stopped(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    secrets = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets=secrets, limits=30,
                                attached={KERNEL: STORE_KEYS}) as kaggle, \
            Launch(launch_env(tmp_path, s3_server, kaggle, LAUNCH_KAGGLE_END_GRACE="2",
                              LAUNCH_KAGGLE_STOP_WAIT="2")) as launch:
        kaggle.stuck_versions = {2}  # v1 is the secrets check; the run's version keeps saying "running"
        launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        job = launch.wait(timeout=180)
        summary = [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "SUCCEEDED" and len(job["attempts"]) == 1, summary
        assert "Kaggle still said running" in job["attempts"][0]["reason"], summary
        run = kaggle.sessions[-1]
        assert run.version == 2 and run.deleted, "the kernel whose status never ended was deleted"


def test_a_refused_key_fails_the_job_at_once_naming_it(tmp_path, s3_server):
    bucket = s3_server.make_bucket()
    with fake_kaggle.FakeKaggle(tmp_path / "kaggle", secrets={}, limits=30) as kaggle, \
            Launch({**launch_env(tmp_path, s3_server, kaggle), "KAGGLE_KEY": "0" * 32}) as launch:
        launch("up", str(toy_task(tmp_path, steps=5)), "--infra", "kaggle", "--store", f"s3://{bucket}/runs", "-d")
        job = launch.wait(timeout=60)
        summary = [(a["number"], a["state"], a["reason"]) for a in job["attempts"]]
        assert job["state"] == "FAILED" and len(job["attempts"]) == 1, summary  # no retry can help
        assert "Kaggle refused the credentials in KAGGLE_USERNAME/KAGGLE_KEY (HTTP 401" in job["reason"], job
        assert "kaggle auth login" in job["reason"] and "0" * 32 not in json.dumps(job)
        assert kaggle.sessions == [] and kaggle.pushes == []
