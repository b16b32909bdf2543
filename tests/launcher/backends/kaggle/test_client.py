"""Our Kaggle client is the real ``kaggle`` SDK pointed at an HTTP fake of the API
(tests/integration/fake_kaggle.py): push a kernel, read its status, fail cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.testing import load_by_path

from launcher.backends.base import BackendError, CredentialsError
from launcher.backends.kaggle.client import KaggleAPIError, KaggleClient
from launcher.backends.kaggle.config import MISSING_CREDENTIALS, KaggleCredentials, KaggleSettings

FAKE = Path(__file__).resolve().parents[3] / "integration" / "fake_kaggle.py"


def _load_fake():
    return load_by_path(FAKE)


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    for var in [k for k in os.environ if k.startswith(("KAGGLE_", "LAUNCH_KAGGLE_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with _load_fake().FakeKaggle(tmp_path / "fake", secrets={"GREETING": "hello"}, limits=10,
                                  attached={"launchuser/launch-client-test": ["GREETING"]}) as fake:
        for k, v in fake.env().items():
            monkeypatch.setenv(k, v)
        yield fake


def kernel_folder(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "kernel-metadata.json").write_text(json.dumps({
        "id": "launchuser/launch-client-test", "title": "launch-client-test", "code_file": "k.py",
        "language": "python", "kernel_type": "script", "is_private": True, "enable_gpu": True,
        "enable_internet": True}))
    (folder / "k.py").write_text(code)
    return folder


def test_push_then_status_through_the_sdk(kaggle, tmp_path):
    client = KaggleClient(KaggleSettings.from_env())
    assert client.username == "launchuser"
    code = "from kaggle_secrets import UserSecretsClient\nprint(UserSecretsClient().get_secret('GREETING'))\n"
    result = client.push(kernel_folder(tmp_path, code), timeout=300)
    assert result.version == 1 and result.ref == "/code/launchuser/launch-client-test"
    body = kaggle.pushes[0]
    assert body["isPrivate"] is True and body["enableGpu"] is True and body["sessionTimeoutSeconds"] == 300
    assert body["text"] == code
    end = time.monotonic() + 30
    while (status := client.status("launchuser/launch-client-test")).state in ("queued", "running"):
        assert time.monotonic() < end
        time.sleep(0.1)
    assert status.terminal and status.state == "complete", kaggle.session_logs()
    assert kaggle.session_logs().strip() == "hello"


def test_a_wrong_key_is_a_credentials_error_that_shows_no_key(kaggle, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    client = KaggleClient(KaggleSettings.from_env())
    with pytest.raises(CredentialsError, match="HTTP 401") as e:
        client.status("launchuser/launch-client-test")
    assert "0" * 32 not in str(e.value) and kaggle.key not in str(e.value)


def test_an_unknown_kernel_is_an_api_error(kaggle):
    with pytest.raises(KaggleAPIError, match="HTTP 404"):
        KaggleClient(KaggleSettings.from_env()).status("launchuser/never-pushed")


def test_without_credentials_the_sdk_is_never_imported(tmp_path):
    code = ("import sys\n"
            "from launcher.backends.base import BackendError\n"
            "from launcher.backends.kaggle.client import KaggleClient\n"
            "from launcher.backends.kaggle.config import KaggleSettings\n"
            "try:\n    KaggleClient(KaggleSettings()).username\n"
            "except BackendError as e:\n    print('error:', e)\n"
            "print('kaggle imported:', 'kaggle' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == [f"error: {MISSING_CREDENTIALS}", "kaggle imported: False"], out.stderr
    assert out.stderr == ""


def test_check_says_where_the_credentials_are(kaggle):
    assert KaggleClient(KaggleSettings.from_env()).check() == KaggleCredentials("launchuser", "KAGGLE_USERNAME/KAGGLE_KEY")
    with pytest.raises(BackendError):
        KaggleClient(KaggleSettings(), KaggleCredentials(None, None)).check()
