"""The Kaggle backend against Kaggle as it behaves (issue 12), with a scripted client: secrets that
must be attached by hand, the quota view, push refusals, the status of one version, a status that
lags the store, stopping a session, and temporary store credentials instead of secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.backends.base import NoCapacityError, ProvisionRequest, RunSpec, RunState
from launcher.backends.kaggle.backend import KaggleBackend
from launcher.backends.kaggle.client import KaggleCapacityError, Quota
from launcher.backends.kaggle.config import KaggleSettings
from launcher.store.temporary import prefix_policy

from .test_backend import Clock, ScriptedClient, logs, pushed_handle
from .test_kernel import literal_config

H = 3600.0
STORE = "s3://ckpt-bucket/runs/toy-1a2b3c4d"
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE12345", "AWS_SECRET_ACCESS_KEY": "very-secret-value-123",
           "WANDB_API_KEY": "wandb-secret-value-9"}


def make(tmp_path, client=None, **settings):
    clock = Clock()
    s = KaggleSettings(**{"session_limit": 600, "margin": 60, "poll_interval": 10, "start_grace": 30,
                          "secrets_recheck": 300, "end_grace": 120, "stop_wait": 45, **settings})
    return KaggleBackend(settings=s, client=client or ScriptedClient(), clock=clock, sleep=clock.sleep,
                         work_dir=tmp_path / "kaggle"), clock


def start(b, tmp_path, attempt=1, resources=None, secrets=SECRETS, store=STORE):
    h = b.provision(ProvisionRequest("toy-1a2b3c4d", attempt, "kaggle", resources or {"accelerators": "T4:2"}))
    b.bootstrap(h)
    b.sync_workdir(h, None)
    b.start_run(h, RunSpec("toy-1a2b3c4d", attempt, "python train.py", secrets=dict(secrets), store_uri=store))
    return h


# --- 7: secrets need the web UI ------------------------------------------------------------------
def test_unattached_secrets_are_checked_on_a_cpu_session_and_the_user_is_told_once(tmp_path, aws):
    b, clock = make(tmp_path, ScriptedClient(["error:the script exited with code 1"]))
    h = start(b, tmp_path)
    check = b.client.pushes[0]
    assert len(b.client.pushes) == 1 and "version" not in h and h["check"]["version"] == 1
    assert not check["meta"]["enable_gpu"] and "machine_shape" not in check["meta"] and check["timeout"] <= 600
    assert "check_only" in check["source"] and SECRETS["WANDB_API_KEY"] not in check["source"]
    got = b.poll(h)
    assert got.state is RunState.PREEMPTED and got.exit_code is None  # not a failure of the job
    assert "https://kaggle.example/code/ada/x" in got.reason and "Add-ons > Secrets" in got.reason
    assert "AWS_SECRET_ACCESS_KEY" in got.reason and "WANDB_API_KEY" in got.reason
    # The next attempts wait without a session until the re-check is due.
    clock.now += 60
    with pytest.raises(NoCapacityError, match="waiting for Kaggle secrets .* attached") as e:
        start(b, tmp_path, attempt=2)
    assert "Add-ons > Secrets" in str(e.value) and len(b.client.pushes) == 1
    # Re-checked later: still missing, told briefly this time.
    clock.now += 300
    h = start(b, tmp_path, attempt=3)
    clock.now += 10
    assert "waiting for Kaggle secrets" in b.poll(h).reason and len(b.client.pushes) == 2
    assert all(not p["meta"]["enable_gpu"] for p in b.client.pushes)  # no GPU session burnt


def test_once_the_check_passes_the_run_is_pushed_and_later_jobs_skip_the_check(tmp_path, aws):
    b, clock = make(tmp_path, ScriptedClient(["running", "complete", "running"]))
    h = start(b, tmp_path)
    assert b.poll(h).state is RunState.RUNNING  # the check runs
    clock.now += 10
    assert b.poll(h).state is RunState.RUNNING and h["version"] == 2  # passed: the run is pushed
    run = b.client.pushes[1]
    assert run["meta"]["enable_gpu"] and run["meta"]["machine_shape"] == "NvidiaTeslaT4"
    assert b.client.versions_asked == [1, 1]
    h2 = start(b, tmp_path, attempt=2)  # the kernel's secrets were seen: the run goes at once
    assert h2["version"] == 3 and "check" not in h2


# --- 8: push refusals are capacity waits ---------------------------------------------------------
def test_a_refused_push_is_no_capacity_not_a_setup_failure(tmp_path, aws):
    refusal = KaggleCapacityError("Kaggle refused the push: Maximum batch GPU session count of 2 reached.")
    b, _ = make(tmp_path, ScriptedClient(refusals=[refusal]))
    b.attachments.passed("ada/launch-toy", sorted(SECRETS), 0.0)
    with pytest.raises(NoCapacityError, match="session count"):
        start(b, tmp_path)
    assert start(b, tmp_path, attempt=2)["version"] == 1


# --- 9: the weekly quota from Kaggle -------------------------------------------------------------
def test_the_session_gets_what_kaggles_quota_view_has_left(tmp_path):
    q = Quota(gpu_left_s=5 * H, gpu_total_s=30 * H, tpu_left_s=20 * H, tpu_total_s=20 * H, resets_at=1e9)
    b, _ = make(tmp_path, ScriptedClient(quota=q), session_limit=12 * H, margin=900)
    h = b.provision(ProvisionRequest("j-1", 1, "kaggle", {"accelerators": "T4"}))
    assert h["session"]["limit_s"] == 5 * H
    tpu = b.provision(ProvisionRequest("j-1", 1, "kaggle", {"accelerators": "tpu-v5e-8"}))
    assert tpu["kind"] == "tpu" and tpu["session"]["limit_s"] == 9 * H - 60 and not tpu["enable_gpu"]


def test_an_exhausted_kaggle_quota_waits_until_its_reset(tmp_path):
    q = Quota(gpu_left_s=0.2 * H, gpu_total_s=30 * H, tpu_left_s=0, tpu_total_s=20 * H, resets_at=2e9)
    b, _ = make(tmp_path, ScriptedClient(quota=q), session_limit=12 * H, margin=900,
                weekly_gpu_hours=30)
    with pytest.raises(NoCapacityError, match=r"GPU quota: 0\.2 of 30 h left .*resets Wed 03:33 UTC"):
        b.provision(ProvisionRequest("j-1", 1, "kaggle", {"accelerators": "T4"}))


# --- 10: session settings ------------------------------------------------------------------------
def test_a_tpu_session_is_pushed_as_one(tmp_path, aws):
    b, _ = make(tmp_path, session_limit=24 * H)
    b.attachments.passed("ada/launch-toy", sorted(SECRETS), 0.0)
    start(b, tmp_path, resources={"accelerators": "tpu-v5e-8"})
    meta, timeout = b.client.pushes[0]["meta"], b.client.pushes[0]["timeout"]
    assert meta["enable_tpu"] and not meta["enable_gpu"] and meta["machine_shape"] == "TpuV5E8"
    assert timeout < 9 * H


# --- 11: status of the exact version; the store wins; stopping -----------------------------------
def test_status_is_asked_for_the_version_pushed(tmp_path):
    b, _ = make(tmp_path, ScriptedClient(["running"]))
    h = pushed_handle(tmp_path, attempt=4)
    b.poll(h)
    assert b.client.versions_asked == [4]


def test_the_store_is_believed_when_kaggle_still_says_running_after_a_grace(tmp_path):
    b, clock = make(tmp_path, ScriptedClient(["running"]))
    h = pushed_handle(tmp_path)
    logs(h).put_bytes("attempt-1.exit", b"0")
    assert b.poll(h).state is RunState.RUNNING
    clock.now += 100
    assert b.poll(h).state is RunState.RUNNING
    clock.now += 30
    got = b.poll(h)
    assert got.state is RunState.SUCCEEDED and "Kaggle still said running" in got.reason
    b.terminate(h)  # the session may still use quota: stopped (it never ends: the kernel goes)
    assert b.client.deleted == ["ada/launch-toy"]


def test_a_delete_refused_for_a_while_is_tried_again_so_the_session_stops(tmp_path):
    """A 503 or 429 on DeleteKernel would leave the session using quota up to its 12 h."""
    b, clock = make(tmp_path, ScriptedClient(["running"]))
    b.client.delete_refusals = [KaggleCapacityError("HTTP 503: 503 Service Unavailable"),
                                KaggleCapacityError("HTTP 429: Too many requests")]
    b.terminate(pushed_handle(tmp_path))
    assert b.client.deleted == ["ada/launch-toy"]


def test_down_deletes_a_kernel_whose_session_does_not_stop(tmp_path):
    b, clock = make(tmp_path, ScriptedClient(["running"]))
    b.attachments.passed("ada/launch-toy", ["AWS_ACCESS_KEY_ID"], 0.0)
    h = pushed_handle(tmp_path)
    t0 = clock.now
    b.terminate(h)
    assert logs(h).get_bytes("attempt-1.control") == b"cancel"
    assert b.client.deleted == ["ada/launch-toy"] and clock.now - t0 >= 45
    assert not b.attachments.covers("ada/launch-toy", ["AWS_ACCESS_KEY_ID"])  # gone with the kernel
    b.terminate(h)
    assert b.client.deleted == ["ada/launch-toy"]


# --- 7: temporary credentials instead of secrets -------------------------------------------------
def test_temporary_credentials_scoped_to_the_prefix_need_no_attached_secret(tmp_path, aws):
    b, _ = make(tmp_path, credentials="temporary", role_arn="arn:aws:iam::123456789012:role/launch-kaggle")
    secrets = {k: v for k, v in SECRETS.items() if k.startswith("AWS_")}
    h = start(b, tmp_path, secrets=secrets)
    assert h["version"] == 1 and "check" not in h  # nothing to attach: no check, no wait
    source = b.client.pushes[0]["source"]
    cfg = literal_config(source)
    creds = cfg["store_credentials"]
    assert set(creds) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert cfg["secret_names"] == [] and creds["AWS_ACCESS_KEY_ID"] != secrets["AWS_ACCESS_KEY_ID"]
    assert secrets["AWS_SECRET_ACCESS_KEY"] not in source and h["credentials_expire_at"] > 0
    kept = Path(h["run_folder"]) / "launch_kernel.py"  # the copy on this machine: the owner's only
    assert creds["AWS_SESSION_TOKEN"] in kept.read_text() and kept.stat().st_mode & 0o077 == 0


def test_temporary_credentials_without_a_role_are_a_setup_error(tmp_path, aws):
    from launcher.backends.base import BackendError

    b, _ = make(tmp_path, credentials="temporary")
    with pytest.raises(BackendError, match="LAUNCH_KAGGLE_ROLE_ARN") as e:
        start(b, tmp_path, secrets={})
    assert not isinstance(e.value, NoCapacityError)


def test_the_session_policy_allows_the_jobs_prefix_only():
    doc = prefix_policy("ckpt-bucket", "runs/toy-1a2b3c4d/")
    objects, listing = doc["Statement"]
    assert objects["Resource"] == "arn:aws:s3:::ckpt-bucket/runs/toy-1a2b3c4d/*"
    assert "s3:PutObject" in objects["Action"] and "s3:DeleteObject" in objects["Action"]
    assert listing["Resource"] == "arn:aws:s3:::ckpt-bucket"
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["runs/toy-1a2b3c4d/*", "runs/toy-1a2b3c4d"]
    assert json.dumps(doc).count("arn:aws:s3:::") == 2
