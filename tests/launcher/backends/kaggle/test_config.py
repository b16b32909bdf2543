"""Kaggle settings (environment > default), machine shapes, and where the credentials are."""

from __future__ import annotations

import json
import os

import pytest

from launcher.backends.base import NoCapacityError
from launcher.backends.kaggle.config import KaggleCredentials, KaggleSettings, machine_shape


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
    ("T4:2", "NvidiaTeslaT4"), ({"P100": 1}, "NvidiaTeslaP100"), (["V100", "L4"], "NvidiaL4"),
    ("h100", "NvidiaH100"), (None, None),
])
def test_machine_shape_from_the_tasks_accelerators(acc, shape):
    assert machine_shape({"accelerators": acc} if acc else {}, KaggleSettings()) == shape


def test_accelerator_setting_wins_over_the_task(monkeypatch):
    monkeypatch.setenv("LAUNCH_KAGGLE_ACCELERATOR", "NvidiaTeslaT4Highmem")
    assert machine_shape({"accelerators": "P100"}, KaggleSettings.from_env()) == "NvidiaTeslaT4Highmem"


def test_an_accelerator_kaggle_lacks_is_no_capacity_and_names_what_it_has():
    with pytest.raises(NoCapacityError, match="Kaggle offers no V100.*P100, T4"):
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


def test_no_credentials_anywhere():
    assert not KaggleCredentials.find().present
