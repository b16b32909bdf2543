"""The Kaggle client against a fake that behaves as the service does (issue 12): the real SDK's
requests, token and OAuth credentials, push refusals that mean "no capacity", the status of one
version, the quota view, and stopping a kernel's session."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from launcher.backends.base import CredentialsError, NoCapacityError
from launcher.backends.kaggle.client import KaggleAPIError, KaggleCapacityError, KaggleClient
from launcher.backends.kaggle.config import MISSING_CREDENTIALS, KaggleCredentials, KaggleSettings
from launcher.testing import load_by_path

FAKE = Path(__file__).resolve().parents[3] / "integration" / "fake_kaggle.py"
KERNEL = "launchuser/launch-client-test"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    for var in [k for k in os.environ if k.startswith(("KAGGLE_", "LAUNCH_KAGGLE_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with load_by_path(FAKE).FakeKaggle(tmp_path / "fake", secrets={"GREETING": "hello"}, limits=20) as f:
        yield f


def use(monkeypatch, env: dict[str, str]) -> KaggleClient:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return KaggleClient(KaggleSettings.from_env())


def no_key(env: dict[str, str]) -> dict[str, str]:
    """The fake's environment without the legacy key (the SDK must find another way)."""
    return {k: v for k, v in env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}


def kernel_folder(tmp_path: Path, code: str = "print('hi')\n", name: str = "kernel", **meta) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "kernel-metadata.json").write_text(json.dumps({
        "id": KERNEL, "title": "launch-client-test", "code_file": "k.py", "language": "python",
        "kernel_type": "script", "is_private": True, "enable_gpu": True, "enable_internet": True, **meta}))
    (folder / "k.py").write_text(code)
    return folder


def wait_done(client: KaggleClient, kernel: str, version: int | None = None, timeout: float = 60):
    end = time.monotonic() + timeout
    while not (status := client.status(kernel, version)).terminal:
        assert time.monotonic() < end, status
        time.sleep(0.1)
    return status


# --- 12: credentials as the SDK finds them -------------------------------------------------------
def test_an_access_token_in_kaggle_api_token_pushes_with_bearer_auth(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, {**fake.env(auth="token")})
    assert client.check() == KaggleCredentials(None, "KAGGLE_API_TOKEN")
    assert client.username == "launchuser"  # the SDK asked IntrospectToken whose token it is
    assert client.push(kernel_folder(tmp_path)).version == 1
    assert wait_done(client, KERNEL).state == "complete"


def test_an_access_token_file_is_found_where_the_sdk_looks(fake, tmp_path, monkeypatch):
    home = tmp_path / "home" / ".kaggle"
    home.mkdir(parents=True)
    (home / "access_token.txt").write_text(fake.new_token() + "\n")
    client = use(monkeypatch, no_key(fake.env()))
    assert client.check().source == "~/.kaggle/access_token.txt"
    assert client.push(kernel_folder(tmp_path)).version == 1


def test_oauth_credentials_from_kaggle_auth_login_are_used(fake, tmp_path, monkeypatch):
    fake.oauth_login(tmp_path / "home")
    client = use(monkeypatch, no_key(fake.env()))
    assert client.check() == KaggleCredentials("launchuser", "~/.kaggle/credentials.json (kaggle auth login)")
    assert client.username == "launchuser"
    assert client.push(kernel_folder(tmp_path)).version == 1


def test_an_oauth_access_token_that_expires_while_the_job_runs_is_refreshed(fake, tmp_path, monkeypatch):
    """An OAuth access token lasts 12 h and a job's supervisor runs for days; the SDK takes a token
    for valid until 30 min after it expired, so the client refreshes it itself on a 401."""
    fake.oauth_login(tmp_path / "home")
    client = use(monkeypatch, no_key(fake.env()))
    assert client.push(kernel_folder(tmp_path)).version == 1
    creds = tmp_path / "home" / ".kaggle" / "credentials.json"
    old = json.loads(creds.read_text())["access_token"]
    fake.expire(old)  # 12 h later
    assert wait_done(client, KERNEL, 1).state == "complete"
    new = json.loads(creds.read_text())["access_token"]
    assert new != old and new in fake.tokens  # refreshed with the refresh token, saved where the SDK keeps it


def test_a_revoked_login_fails_at_once_naming_kaggle_auth_login(fake, tmp_path, monkeypatch):
    refresh = fake.oauth_login(tmp_path / "home")
    client = use(monkeypatch, no_key(fake.env()))
    client.push(kernel_folder(tmp_path))
    fake.refresh_tokens.pop(refresh)
    fake.expire(json.loads((tmp_path / "home" / ".kaggle" / "credentials.json").read_text())["access_token"])
    with pytest.raises(CredentialsError, match="refused .*credentials.json.*kaggle auth login"):
        client.status(KERNEL, 1)


def test_a_wrong_legacy_key_is_a_credentials_error_not_a_failed_push(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, {**fake.env(), "KAGGLE_KEY": "0" * 32})
    with pytest.raises(CredentialsError, match="refused the credentials in KAGGLE_USERNAME/KAGGLE_KEY.*HTTP 401"):
        client.push(kernel_folder(tmp_path))
    with pytest.raises(CredentialsError):
        client.quota()


def test_an_outage_of_the_token_check_is_no_capacity_not_a_crash(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env(auth="token"))
    fake.outages["IntrospectToken"] = 1
    with pytest.raises(NoCapacityError, match="HTTP 503: 503 Service Unavailable"):
        client.push(kernel_folder(tmp_path))
    assert client.push(kernel_folder(tmp_path, name="again")).version == 1  # the next one goes through


def test_the_missing_credentials_message_names_the_current_ways():
    assert "kaggle auth login" in MISSING_CREDENTIALS and "KAGGLE_API_TOKEN" in MISSING_CREDENTIALS
    with pytest.raises(CredentialsError, match="kaggle auth login"):
        KaggleClient(KaggleSettings(), KaggleCredentials(None, None)).check()


# --- 8 and 10: refusals of a push are capacity waits ---------------------------------------------
@pytest.mark.parametrize("refusal, said", [("busy", "Maximum batch GPU session count"), ("429", "HTTP 429"),
                                           ("503", "HTTP 503")])
def test_a_refused_push_is_no_capacity(fake, tmp_path, monkeypatch, refusal, said):
    client = use(monkeypatch, fake.env())
    fake.refusals.append(refusal)
    with pytest.raises(NoCapacityError, match=said) as e:
        client.push(kernel_folder(tmp_path))
    assert "<html" not in str(e.value) and len(str(e.value)) < 400
    assert client.push(kernel_folder(tmp_path, name="again")).version == 1  # the next one goes through


def test_the_gpu_session_limit_is_no_capacity_until_a_session_ends(fake, tmp_path, monkeypatch):
    fake.gpu_sessions = 1
    client = use(monkeypatch, fake.env())
    client.push(kernel_folder(tmp_path, "import time\ntime.sleep(1)\n"))
    with pytest.raises(NoCapacityError, match="session count of 1"):
        client.push(kernel_folder(tmp_path, name="second"))
    wait_done(client, KERNEL, 1)
    assert client.push(kernel_folder(tmp_path, name="third")).version == 2


def test_a_machine_shape_the_account_cannot_have_is_no_capacity(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env())
    with pytest.raises(NoCapacityError, match="NvidiaH100"):
        client.push(kernel_folder(tmp_path), accelerator="NvidiaH100")


def test_a_timeout_above_the_service_maximum_is_refused(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env())
    with pytest.raises(KaggleAPIError, match="maximum"):
        client.push(kernel_folder(tmp_path), timeout=24 * 3600)


# --- 9: the quota view ---------------------------------------------------------------------------
def test_the_quota_view_says_hours_left_and_when_the_window_resets(fake, monkeypatch):
    fake.quota_used = 26.5
    q = use(monkeypatch, fake.env()).quota()
    assert q.gpu_total_s == 30 * 3600 and abs(q.gpu_left_s - 3.5 * 3600) < 5
    assert abs(q.resets_at - fake.quota_reset) < 1
    fake.quota_api = False
    with pytest.raises(KaggleAPIError, match="404"):
        use(monkeypatch, fake.env()).quota()


# --- 11: the status of one version; stopping a session -----------------------------------------
def test_status_is_asked_for_the_version_pushed_not_the_latest(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env())
    v1 = client.push(kernel_folder(tmp_path, "import time\ntime.sleep(60)\n")).version
    v2 = client.push(kernel_folder(tmp_path, name="quick", enable_gpu=False)).version
    assert wait_done(client, KERNEL, v2).state == "complete"
    assert client.status(KERNEL).state == "complete"  # the latest version
    assert client.status(KERNEL, v1).state == "running"  # ours
    assert json.loads(fake.requests[-1][1])["versionLabel"] == f"v{v1}"


def test_delete_stops_the_kernels_running_session(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env())
    client.push(kernel_folder(tmp_path, "import time\ntime.sleep(60)\n"))
    client.delete(KERNEL)
    end = time.monotonic() + 30
    while fake.running():
        assert time.monotonic() < end
        time.sleep(0.1)
    assert fake.sessions[0].status == "cancelAcknowledged"
    client.delete(KERNEL)  # gone already: quiet


def test_a_delete_kaggle_does_not_answer_is_a_transient_refusal(fake, tmp_path, monkeypatch):
    client = use(monkeypatch, fake.env())
    client.push(kernel_folder(tmp_path, "import time\ntime.sleep(60)\n"))
    fake.outages["DeleteKernel"] = 1
    with pytest.raises(KaggleCapacityError, match="HTTP 503"):
        client.delete(KERNEL)
    client.delete(KERNEL)
    assert fake.sessions[0].deleted


def test_a_refused_access_token_is_named_not_called_missing(fake, monkeypatch, capsys):
    client = use(monkeypatch, {**fake.env(auth="token"), "KAGGLE_API_TOKEN": "KGAT_revoked"})
    with pytest.raises(CredentialsError, match="refused the access token in KAGGLE_API_TOKEN.*kaggle auth login"):
        client.push(Path("/nonexistent"))
