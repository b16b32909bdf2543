"""Kaggle settings (environment > default), machine shapes, and where the credentials are."""

from __future__ import annotations

import json
import os

import pytest

from launcher.backends.base import NoCapacityError
from launcher.errors import InfraError
from launcher.backends.kaggle.config import KaggleCredentials, KaggleSettings, machine_shape, session_limit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in [k for k in os.environ if k.startswith("LAUNCH_KAGGLE_")]:
        monkeypatch.delenv(var)


def test_defaults_are_a_kaggle_gpu_session():
    s = KaggleSettings.from_env()
    assert s.session_limit == 12 * 3600 and s.margin == 900 and s.usable == 12 * 3600 - 900
    assert s.enable_gpu and s.enable_internet and s.endpoint is None


def test_environment_wins_over_the_default(monkeypatch):
    monkeypatch.setenv("LAUNCH_KAGGLE_SESSION_LIMIT", "30")
    monkeypatch.setenv("LAUNCH_KAGGLE_MARGIN", "8")
    monkeypatch.setenv("LAUNCH_KAGGLE_GPU", "0")
    monkeypatch.setenv("LAUNCH_KAGGLE_ENDPOINT", "http://127.0.0.1:9/")
    s = KaggleSettings.from_env()
    assert (s.session_limit, s.margin, s.usable, s.enable_gpu) == (30, 8, 22, False)
    assert s.endpoint == "http://127.0.0.1:9"


@pytest.mark.parametrize("acc, shape", [
    ("T4:2", "NvidiaTeslaT4"), (["P100", "T4"], "NvidiaTeslaT4"), (["V100", "L4", "T4"], "NvidiaTeslaT4"),
    ("tpu-v5e-8", "TpuV5E8"), (None, None),
])
def test_machine_shape_from_the_tasks_accelerators(acc, shape):
    assert machine_shape({"accelerators": acc} if acc else {}, KaggleSettings()) == shape


@pytest.mark.parametrize("acc, why", [
    ({"P100": 1}, "P100 is retired"),  # a push asking for it silently runs on a T4
    ("tpu-v3-8", "tpu-v3-8 is retired"),  # ... on a TPU v5e-8
    ("L4:4", "restricted"), ("h100", "restricted"), ("A100", "restricted"),
])
def test_a_shape_an_ordinary_account_cannot_get_is_no_capacity(acc, why):
    with pytest.raises(NoCapacityError, match=why):
        machine_shape({"accelerators": acc}, KaggleSettings())


def test_an_account_with_restricted_shapes_lists_them(monkeypatch):
    monkeypatch.setenv("LAUNCH_KAGGLE_SHAPES", "NvidiaTeslaT4, NvidiaH100")
    assert machine_shape({"accelerators": "H100"}, KaggleSettings.from_env()) == "NvidiaH100"


def test_sessions_ask_for_less_than_the_service_maximum():
    s = KaggleSettings(session_limit=24 * 3600)
    assert session_limit(s, "gpu") < 12 * 3600 and session_limit(s, "tpu") < 9 * 3600
    assert session_limit(KaggleSettings(session_limit=600), "tpu") == 600


def test_accelerator_setting_wins_over_the_task(monkeypatch):
    monkeypatch.setenv("LAUNCH_KAGGLE_ACCELERATOR", "NvidiaTeslaT4Highmem")
    assert machine_shape({"accelerators": "P100"}, KaggleSettings.from_env()) == "NvidiaTeslaT4Highmem"


@pytest.mark.parametrize("shape", ["NvidiaTeslaP100", "TpuV38", "tpu1vmv38"])
def test_a_retired_shape_in_the_setting_is_refused_at_once(monkeypatch, shape):
    monkeypatch.setenv("LAUNCH_KAGGLE_ACCELERATOR", shape)
    with pytest.raises(InfraError, match=f"LAUNCH_KAGGLE_ACCELERATOR={shape}: retired"):
        KaggleSettings.from_env()


@pytest.mark.parametrize("env, said", [
    ({"LAUNCH_KAGGLE_CREDENTIALS": "vault"}, "LAUNCH_KAGGLE_CREDENTIALS='vault': expected 'secrets' or 'temporary'"),
    ({"LAUNCH_KAGGLE_CREDENTIALS": "temporary"}, "LAUNCH_KAGGLE_CREDENTIALS=temporary needs LAUNCH_KAGGLE_ROLE_ARN"),
])
def test_bad_credential_settings_are_refused_at_once_in_one_line(monkeypatch, env, said):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(InfraError) as e:
        KaggleSettings.from_env()
    assert str(e.value).startswith(said) and "\n" not in str(e.value)


def test_an_accelerator_kaggle_lacks_is_no_capacity_and_names_what_it_has():
    with pytest.raises(NoCapacityError, match="Kaggle has no V100.*may use NvidiaTeslaT4"):
        machine_shape({"accelerators": "V100:8"}, KaggleSettings())


def test_credentials_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "ada")
    monkeypatch.setenv("KAGGLE_KEY", "k" * 32)
    creds = KaggleCredentials.find()
    assert creds.present and creds.username == "ada" and "k" * 32 not in repr(creds)


def test_credentials_from_kaggle_json_in_the_config_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "kaggle.json").write_text(json.dumps({"username": "bob", "key": "s3cr3t"}))
    creds = KaggleCredentials.find()
    assert creds.username == "bob" and creds.source.endswith("kaggle.json") and "s3cr3t" not in repr(creds)


def test_credentials_in_the_sdks_order(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "credentials.json").write_text(json.dumps({"refresh_token": "r", "username": "ada"}))
    assert KaggleCredentials.find() == KaggleCredentials("ada", "~/.kaggle/credentials.json (kaggle auth login)")
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "k" * 32)
    assert KaggleCredentials.find().source == "KAGGLE_USERNAME/KAGGLE_KEY"  # the legacy key comes first
    (home / ".kaggle" / "access_token").write_text("KGAT_x\n")
    assert KaggleCredentials.find().source == "~/.kaggle/access_token"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_y")
    assert KaggleCredentials.find().source == "KAGGLE_API_TOKEN"


def test_no_credentials_anywhere():
    assert not KaggleCredentials.find().present
